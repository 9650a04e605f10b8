"""The dualact command line (in-process through ``main`` and end to end in fresh processes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import _fixtures as F
import pytest

from dualact import cli
from dualact.codegen import writer
from dualact.errors import ActivationSyntaxError

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = writer.builtin_catalog_dir()


def _engine_available() -> bool:
    try:
        import dualact.symbolic.derive  # noqa: F401
    except ImportError:
        return False
    return True


needs_engine = pytest.mark.skipif(not _engine_available(), reason="dualact.symbolic.derive not available yet")


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user_catalog"
    monkeypatch.setenv("DUALACT_CATALOG", str(d))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return d


@pytest.fixture
def fake_engine(monkeypatch):
    """Stand-in for the engine: known sources give fixture derivations, anything else is rejected."""
    known = {"relu(x)": F.relu, "x*erf(x/sqrt(2))/2 + x/2": F.gelu, "max(x, alpha*x)": F.leaky_relu}

    def derive(source, params, name, use_cache=True):
        if source not in known:
            raise ActivationSyntaxError("unknown function 'evil'", position=0, text=source)
        return known[source]()

    monkeypatch.setattr(writer, "_derive", derive)
    fake = sys.modules.get("dualact.symbolic.derive") or types.ModuleType("dualact.symbolic.derive")
    monkeypatch.setitem(sys.modules, "dualact.symbolic.derive", fake)


def _snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def _run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------------------
# help, errors, exit codes


def test_help_lists_commands(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0 and "add" in out and "show" in out and "catalog" in out
    code, out, _ = _run(["catalog", "--help"], capsys)
    assert code == 0 and "regenerate" in out and "check" in out
    code, out, _ = _run(["add", "--help"], capsys)
    assert code == 0 and "--param" in out and "--force" in out


def test_usage_errors_are_one_line_with_exit_2(capsys, user_dir):
    for argv in (["frobnicate"], ["catalog", "nope"], ["add"], ["catalog", "regenerate", "--jobs", "x"]):
        code, out, err = _run(argv, capsys)
        assert code == 2, argv
        assert err.count("\n") == 1 and err.startswith("dualact: error:") and "Traceback" not in err
    code, _, err = _run(["show", "no_such_entry"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no_such_entry" in err
    code, _, err = _run(["add", "x1", "x", "--param", "b=notanumber"], capsys)
    assert code == 2 and "not a number" in err
    code, _, err = _run(["catalog", "regenerate", "--jobs", "0", "--catalog-dir", str(user_dir)], capsys)
    assert code == 2


def test_command_registry_accepts_new_subcommands(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_COMMANDS", dict(cli._COMMANDS))

    @cli.command("demo", help="a demonstration", arguments=[cli.arg("--n", type=int, default=3)])
    def _demo(args, out):
        out.print("demo " * args.n)
        return 0

    code, out, _ = _run(["demo", "--n", "2"], capsys)
    assert code == 0 and out.strip() == "demo demo"


# ---------------------------------------------------------------------------------------------------------
# list, show, check, regenerate


def test_catalog_list_is_a_plain_table_without_colour(capsys, user_dir):
    code, out, _ = _run(["catalog", "list"], capsys)
    assert code == 0 and "\033[" not in out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "expression", "method", "error", "bound"]
    assert any(line.startswith("relu ") for line in lines) and any("closed_form" in line for line in lines)
    code, out, _ = _run(["catalog", "list", "--names-only"], capsys)
    assert "relu" in out.split()


def test_show_prints_formulas_method_provenance_and_path(capsys, user_dir):
    code, out, _ = _run(["show", "relu"], capsys)
    assert code == 0
    assert "asin" in out and "closed_form" in out and str(BUILTIN / "relu.py") in out
    assert "dualact.codegen" in out and "sympy" in out


@pytest.mark.slow
def test_show_plot(capsys, user_dir, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "relu.png"
    code, out, err = _run(["show", "relu", "--plot", str(target)], capsys)
    assert code == 0, err
    assert target.is_file() and target.stat().st_size > 1000


def test_check_and_regenerate(capsys, user_dir, tmp_path):
    code, out, _ = _run(["catalog", "check"], capsys)
    assert code == 0 and "OK" in out
    cat = tmp_path / "copy"
    shutil.copytree(BUILTIN, cat, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    before = _snapshot(cat)
    path = cat / "gelu.py"
    path.write_text(path.read_text() + "\n# hand edit\n")
    code, out, _ = _run(["catalog", "check", "--catalog-dir", str(cat)], capsys)
    assert code == 1 and "edited" in out and "gelu" in out
    code, out, err = _run(["catalog", "regenerate", "--catalog-dir", str(cat)], capsys)
    assert code == 0 and "regenerated" in out and err == ""  # no progress bar when not a terminal
    assert _snapshot(cat) == before
    code, out, _ = _run(["catalog", "check", "--catalog-dir", str(cat)], capsys)
    assert code == 0
    code, out, err = _run(["catalog", "check", "--catalog-dir", str(tmp_path / "typo")], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["xsq\n", "sys", "importlib", "annotations", "get"])
def test_add_rejects_names_the_catalog_package_cannot_hold(capsys, user_dir, fake_engine, name):
    """A trailing newline (``$`` in a regex matches before it) and names already bound in dualact.catalog's
    namespace (``from dualact.catalog import sys`` would give the module, not the entry)."""
    code, _, err = _run(["add", name, "relu(x)"], capsys)
    assert code == 2 and "invalid catalog name" in err
    assert not user_dir.exists() or not any(user_dir.iterdir())


# ---------------------------------------------------------------------------------------------------------
# add


def test_add_bad_expression_exits_2_and_writes_nothing(capsys, user_dir, fake_engine):
    builtin_before = _snapshot(BUILTIN)
    code, _, err = _run(["add", "evil", "__import__('os').system('echo hi')"], capsys)
    assert code == 2 and err.startswith("dualact: error: invalid activation expression")
    assert "Traceback" not in err and err.count("\n") == 1
    code, _, err = _run(["add", "Bad-Name", "relu(x)"], capsys)
    assert code == 2
    assert not user_dir.exists() or _snapshot(user_dir) == {}
    assert _snapshot(BUILTIN) == builtin_before


def test_add_force_and_clash(capsys, user_dir, fake_engine):
    code, out, err = _run(["add", "myrelu", "relu(x)"], capsys)
    assert code == 0, err
    assert "added" in out and "closed_form" in out and str(user_dir / "myrelu.py") in out
    before = _snapshot(user_dir)
    code, _, err = _run(["add", "myrelu", "x*erf(x/sqrt(2))/2 + x/2"], capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    assert _snapshot(user_dir) == before
    code, _, err = _run(["add", "gelu", "x*erf(x/sqrt(2))/2 + x/2"], capsys)  # built-in name
    assert code == 2 and "already exists" in err
    code, _, _ = _run(["add", "myrelu", "x*erf(x/sqrt(2))/2 + x/2", "--force"], capsys)
    assert code == 0 and _snapshot(user_dir) != before


def _fresh_python(code: str, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
    return subprocess.run([sys.executable, "-c", code], cwd="/", env=env, capture_output=True, text=True)


def test_added_entry_imports_in_a_fresh_process(capsys, user_dir, fake_engine):
    code, _, err = _run(["add", "myleaky", "max(x, alpha*x)", "--param", "alpha=0.2"], capsys)
    assert code == 0, err
    prog = (
        "import jax; jax.config.update('jax_enable_x64', True)\n"
        "from dualact.catalog import myleaky, relu\n"
        "import dualact.catalog\n"
        "k = dualact.catalog.get('myleaky')\n"
        "print(float(myleaky.nngp(1.0, 1.0, 1.0, alpha=0.5)), float(relu.diag(2.0)), k.params)\n"
    )
    res = _fresh_python(prog, {"DUALACT_CATALOG": str(user_dir)})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == ["0.625", "1.0"]
    # the built-in (checkout) catalog also imports in a fresh process without DUALACT_CATALOG
    res = _fresh_python("from dualact.catalog import relu; print(float(relu.nngp(1.0, 1.0, 1.0)))", {})
    assert res.returncode == 0 and res.stdout.strip() == "0.5", res.stderr


@needs_engine
def test_console_script_end_to_end(tmp_path):
    exe = Path(sys.executable).with_name("dualact")
    env = dict(os.environ, JAX_PLATFORMS="cpu", DUALACT_CATALOG=str(tmp_path / "cat"))
    run = lambda *a: subprocess.run([str(exe), *a], env=env, capture_output=True, text=True)  # noqa: E731
    res = run("add", "mygelu", "x*erf(x/sqrt(2))/2 + x/2")
    assert res.returncode == 0, res.stderr
    res = run("add", "bad", "__import__('os')")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "cat").iterdir()) == ["_registry.json", "mygelu.py"]
    res = _fresh_python(
        "from dualact.catalog import mygelu; print(float(mygelu.nngp(1.0, 0.5, 1.0)))",
        {"DUALACT_CATALOG": str(tmp_path / "cat")},
    )
    assert res.returncode == 0, res.stderr
    res = run("catalog", "check")
    assert res.returncode == 0, res.stdout
    res = subprocess.run([sys.executable, "-m", "dualact", "catalog", "check"], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "catalog OK" in res.stdout, res.stderr
