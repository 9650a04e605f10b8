"""``dualact demo`` (quick mode): derivation, deep kernel on digits, kernel regression and the three plots."""

from __future__ import annotations

import pytest

from dualact import cli

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_quick_through_the_cli(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "x + sin(x)**2" in text
    assert "test accuracy" in text
    for name in ("activation_hermite.png", "dual_kernel.png", "hermite_vs_monte_carlo.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name


def test_run_demo_result(tmp_path):
    from dualact.demo import run_demo

    lines: list[str] = []
    res = run_demo(tmp_path, n_train=200, quick=True, print_fn=lines.append)
    assert res.n_train == 200 and res.n_test == 200
    assert res.accuracy["nngp"] > 0.9 and res.accuracy["ntk"] > 0.9
    assert len(res.plots) == 3 and all(p.exists() for p in res.plots)
    assert res.error_bound is None or res.error_bound < 1e-6
    assert any("Hermite error" in line for line in lines)


def test_demo_rejects_bad_n_train(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--n-train", "5", "--out", str(tmp_path)]) == 2
    assert "n_train" in capsys.readouterr().err
