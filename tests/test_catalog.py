"""Catalog: registry, atomic writes, check/regenerate, the dualact.catalog loader and DualKernel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import _fixtures as F
import jax
import numpy as np
import pytest
import sympy as sp

import dualact.catalog
from dualact.codegen import entries, writer
from dualact.codegen.emit import GENERATOR_VERSION, emit, load_module
from dualact.errors import CatalogError, DualactError, MissingParameterError
from dualact.runtime.dual_kernel import DualKernel, NotHomogeneousError
from dualact.symbolic.derivation import Derivation

BUILTIN = writer.builtin_catalog_dir()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user_catalog"
    monkeypatch.setenv("DUALACT_CATALOG", str(d))
    return d


def _snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# the built-in catalog


def test_builtin_catalog_loads_and_is_up_to_date():
    names = dualact.catalog.names()
    assert "relu" in names and "gelu" in names
    assert writer.check_directory(BUILTIN) == []
    from dualact.catalog import gelu, relu

    assert float(relu.nngp(2.0, 2.0, 2.0)) == pytest.approx(1.0)
    assert np.isfinite(float(gelu.ntk_factor(1.0, 0.3, 2.0)))


def test_builtin_modules_are_reproduced_byte_for_byte_from_the_registry():
    reg = writer.read_registry(BUILTIN)
    for name, rec in reg["entries"].items():
        d = Derivation.from_json_dict(rec["derivation"])
        npz = (BUILTIN / rec["npz"]).read_bytes() if rec.get("npz") else None
        out = emit(d, name, npz=npz)
        assert out.source.encode() == (BUILTIN / rec["file"]).read_bytes(), name
        assert rec["sha256"] == writer.sha256_bytes(out.source.encode())


def test_regenerate_is_byte_identical_and_check_detects_edits(tmp_path):
    cat = tmp_path / "catalog"
    shutil.copytree(BUILTIN, cat, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    before = _snapshot(cat)
    written, errors = writer.regenerate(cat)
    assert not errors and set(written) == set(writer.read_registry(cat)["entries"])
    assert _snapshot(cat) == before
    assert writer.check_directory(cat) == []
    # a hand edit is detected, and regenerate repairs it
    path = cat / "relu.py"
    path.write_text(path.read_text().replace("jnp.pi", "3.14159"))
    problems = writer.check_directory(cat)
    assert [(p.name, p.status) for p in problems] == [("relu", "edited")]
    writer.regenerate(cat, names=["relu"])
    assert writer.check_directory(cat) == [] and _snapshot(cat) == before
    # missing, stale and unregistered modules
    (cat / "step.py").unlink()
    reg = json.loads((cat / "_registry.json").read_text())
    reg["entries"]["gelu"]["generator_version"] = "0"
    (cat / "_registry.json").write_text(json.dumps(reg))
    (cat / "stray.py").write_text("x = 1\n")
    status = {p.name: p.status for p in writer.check_directory(cat)}
    assert status == {"step": "missing", "gelu": "stale", "stray": "unregistered"}


@pytest.mark.slow
def test_regenerate_with_a_process_pool(tmp_path):
    cat = tmp_path / "catalog"
    shutil.copytree(BUILTIN, cat, ignore=shutil.ignore_patterns("__pycache__", "__init__.py"))
    before = _snapshot(cat)
    seen = []
    written, errors = writer.regenerate(cat, jobs=2, progress=seen.append)
    assert not errors and sorted(seen) == sorted(written)
    assert _snapshot(cat) == before


# ---------------------------------------------------------------------------------------------------------
# user catalog and atomic writes


def test_target_directory_rules(user_dir, monkeypatch):
    assert writer.is_source_checkout(BUILTIN)  # tests run from a checkout
    assert writer.default_target_dir() == user_dir  # DUALACT_CATALOG wins
    monkeypatch.delenv("DUALACT_CATALOG")
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_dir.parent / "cache"))
    assert writer.default_target_dir() == BUILTIN
    assert writer.user_catalog_dir() == user_dir.parent / "cache" / "dualact" / "catalog"
    assert not writer.is_source_checkout(user_dir.parent)


def test_add_to_user_catalog_then_get_and_import(user_dir):
    d = F.leaky_relu()
    directory, rec = writer.add_entry("myleaky", d.source, derivation=d)
    assert directory == user_dir and (user_dir / "myleaky.py").is_file()
    assert rec["params"] == {"alpha": 0.01} and rec["method"] == "closed_form"
    assert "myleaky" in dualact.catalog.names()
    k = dualact.catalog.get("myleaky")
    assert isinstance(k, DualKernel) and k.path == user_dir / "myleaky.py"
    assert float(k.nngp(1.0, 1.0, 1.0, alpha=0.5)) == pytest.approx(0.625)
    from dualact.catalog import myleaky

    assert myleaky is k.module
    assert writer.check_directory(user_dir) == []
    # the user catalog shadows the built-in one
    writer.add_entry("relu", "relu", derivation=F.step(), force=True)
    assert dualact.catalog.get("relu").path == user_dir / "relu.py"
    assert float(dualact.catalog.get("relu").nngp(1.0, 1.0, 1.0)) == pytest.approx(0.5)


def test_name_clash_and_failed_derivation_leave_files_untouched(user_dir, monkeypatch):
    writer.add_entry("mine", "x", derivation=F.relu())
    before = _snapshot(user_dir)
    builtin_before = _snapshot(BUILTIN)
    with pytest.raises(CatalogError, match="already exists"):
        writer.add_entry("mine", "x", derivation=F.step())
    with pytest.raises(CatalogError, match="already exists"):
        writer.add_entry("relu", "x", derivation=F.step())  # clashes with the built-in entry

    def failing(*args, **kwargs):
        raise DualactError("no tier could derive it")

    monkeypatch.setattr(writer, "_derive", failing)
    with pytest.raises(DualactError):
        writer.add_entry("other", "weird(x)")
    with pytest.raises(CatalogError):
        writer.add_entry("Bad Name", "x", derivation=F.relu())
    with pytest.raises(CatalogError):
        writer.add_entry(
            "nointegral",
            "x",
            derivation=F.relu().replace(nngp=sp.Integral(sp.Symbol("t"), (sp.Symbol("t"), 0, 1))),
        )
    assert _snapshot(user_dir) == before
    assert _snapshot(BUILTIN) == builtin_before
    assert not list(user_dir.glob(".*.tmp"))


def test_remove_entry(user_dir):
    writer.add_entry("gone", "x", derivation=F.relu())
    writer.remove_entry(user_dir, "gone")
    assert not (user_dir / "gone.py").exists() and "gone" not in writer.read_registry(user_dir)["entries"]


# ---------------------------------------------------------------------------------------------------------
# DualKernel


def test_dual_kernel_attributes_and_repr():
    k = dualact.catalog.get("relu")
    assert repr(k) == "DualKernel('relu', method='closed_form', params=())"
    assert k.method == "closed_form" and k.homogeneity == 1 and k.kind == "activation"
    assert (
        k.expression
        == Derivation.from_json_dict(writer.read_registry(BUILTIN)["entries"]["relu"]["derivation"]).nngp
    )
    assert (
        k.activation_expression is not None and k.ntk_expression is not None and k.diag_expression is not None
    )
    assert float(k.activation(-1.0)) == 0.0 and float(k.derivative(2.0)) == 1.0
    assert float(jax.jit(k.ntk_factor)(1.0, 1.0, 1.0)) == pytest.approx(0.5)
    e = dualact.catalog.get("erf_family")
    assert e.params == ("a", "b", "c") and e.error_bound is not None and e.error_bound <= 1e-12
    with pytest.raises(MissingParameterError):
        e.nngp(1.0, 0.5, 1.0, a=1.0, b=2.0)
    with pytest.raises(DualactError, match="unknown parameter"):
        e.nngp(1.0, 0.5, 1.0, z=1.0)
    b = e.bind(a=1.0, b=2.0, c=0.0)
    assert float(b.nngp(1.0, 0.5, 1.0)) == pytest.approx(float(e.nngp(1.0, 0.5, 1.0, a=1.0, b=2.0, c=0.0)))
    assert "a=1.0" in repr(b)
    with pytest.raises(CatalogError):
        dualact.catalog.get("no_such_kernel")
    with pytest.raises(AttributeError):
        dualact.catalog.no_such_kernel  # noqa: B018


def test_dual_kernel_from_in_memory_module_and_error_bound():
    d = F.gelu()
    k = DualKernel(load_module(d, "g"), d)
    assert k.name == "gelu" or k.name == "g"
    assert k.error_bound == pytest.approx(5e-15)
    with pytest.raises(NotHomogeneousError):
        k.taylor_coefficients(4)


def test_hermite_and_taylor_coefficients():
    relu = dualact.catalog.get("relu")
    c = relu.hermite_coefficients(1.0, 5)
    ref = [1 / np.sqrt(2 * np.pi), 0.5, 1 / np.sqrt(4 * np.pi), 0, -1 / np.sqrt(48 * np.pi)]
    np.testing.assert_allclose(c, ref, rtol=1e-14, atol=1e-15)
    kappa, kprime = relu.taylor_coefficients(5)
    np.testing.assert_allclose(kappa[:3], [1 / (2 * np.pi), 0.25, 1 / (4 * np.pi)], rtol=1e-13)
    np.testing.assert_allclose(kprime[:2], [0.25, 2 / (4 * np.pi)], rtol=1e-13)
    # the Mehler series reproduces κ(ρ) = T(1, ρ, 1)
    rho = 0.3
    kappa, _ = relu.taylor_coefficients(40)
    assert float(np.polyval(kappa[::-1], rho)) == pytest.approx(float(relu.nngp(1.0, rho, 1.0)), rel=1e-10)
    ng = dualact.catalog.get("normalized_gaussian")
    kappa, kprime = ng.taylor_coefficients(4, gamma=2.0)
    np.testing.assert_allclose(kappa, np.exp(-2.0) * np.array([1, 2, 2, 4 / 3]), rtol=1e-13)
    with pytest.raises(DualactError):
        ng.activation(1.0)
    with pytest.raises(DualactError):
        ng.hermite_coefficients(1.0, 3)


def test_entries_list_covers_the_catalog():
    names = entries.names()
    assert len(names) == len(set(names))
    for required in (
        "relu",
        "leaky_relu",
        "abrelu",
        "abs",
        "step",
        "sign",
        "erf",
        "erf_family",
        "sigmoid_like",
        "gelu",
        "sin",
        "sin_family",
        "cos",
        "exp_family",
        "gaussian",
        "gaussian_family",
        "rbf",
        "gabor",
        "polynomial",
        "normalized_gaussian",
        "tanh",
        "sigmoid",
        "softplus",
        "silu",
        "swish",
        "mish",
        "elu",
        "selu",
        "gelu_tanh",
        *(f"monomial_{k}" for k in range(6)),
        *(f"rectified_monomial_{k}" for k in range(4)),
        *(f"hermite_{k}" for k in range(6)),
    ):
        assert required in names
    assert entries.by_name("leaky_relu").params == {"alpha": 0.01}
    ng = entries.by_name("normalized_gaussian")
    assert ng.kind == "kernel" and ng.derive().method == "kernel_only"
    x = sp.Symbol("x")
    assert sp.simplify(sp.sympify(entries.by_name("hermite_3").expression) - (x**3 - 3 * x) / sp.sqrt(6)) == 0


# ---------------------------------------------------------------------------------------------------------
# Hermite-table entries


@pytest.fixture(scope="module")
def tanh_table():
    hermite = pytest.importorskip("dualact.symbolic.hermite")
    pytest.importorskip("dualact.runtime.hermite_series")
    x = sp.Symbol("x", real=True)
    table = hermite.build_table(sp.tanh(x), 1 - sp.tanh(x) ** 2, tol=1e-8, max_terms=64, time_budget=20)
    d = Derivation(
        source="tanh(x)",
        method="hermite",
        tier="hermite",
        activation=sp.tanh(x),
        derivative=1 - sp.tanh(x) ** 2,
        hermite=table.to_json_dict(),
        accuracy={"tail_rho099": table.meta["tail_rho099"]},
    )
    return d, table


def test_hermite_entry_writes_npz_and_regenerates_identically(user_dir, tanh_table):
    d, table = tanh_table
    mem = load_module(d, "mytanh", table=table)
    emitted = emit(d, "mytanh", table=table)
    assert emitted.npz is not None and "hermite_series.nngp" in emitted.source
    writer.write_entries(user_dir, [("mytanh", d, emitted)])
    assert (user_dir / "mytanh.npz").is_file()
    k = dualact.catalog.get("mytanh")
    assert k.method == "hermite"
    np.testing.assert_allclose(k.nngp(1.0, 0.4, 2.0), mem.nngp(1.0, 0.4, 2.0), rtol=1e-14)
    assert float(k.diag(1.5)) == pytest.approx(float(k.nngp(1.5, 1.5, 1.5)), rel=1e-10)
    before = _snapshot(user_dir)
    writer.regenerate(user_dir)
    assert _snapshot(user_dir) == before and writer.check_directory(user_dir) == []
    (user_dir / "mytanh.npz").write_bytes(b"garbage")
    assert [p.status for p in writer.check_directory(user_dir)] == ["edited"]


def test_generator_version_is_recorded():
    reg = writer.read_registry(BUILTIN)
    assert all(rec["generator_version"] == GENERATOR_VERSION for rec in reg["entries"].values())
