"""Hermite-table activations in the layer API: the matrix path equals the elementwise formula.

Activation layers evaluate Hermite-table kernels (tanh, SiLU, ELU...) with
:func:`dualact.runtime.hermite_series.nngp_matrix` (per-input coefficients, an (R, C) Horner accumulator);
the reference is the same DualKernel behind a plain adapter, which the layer evaluates entry by entry.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dualact
from dualact import layers as L
from dualact.layers.activation import _hermite_maps
from dualact.runtime import hermite_series as hs

EXPRESSIONS = {
    "tanh": "tanh(x)",
    "silu": "x/(1 + exp(-x))",
    "softplus": "log(1 + exp(x))",
}


@functools.cache
def _dual(name):
    """The catalog entry if there is one, else the same activation derived in memory."""
    try:
        from dualact import catalog

        found = catalog.get(name)
        if found is not None and found.method == "hermite":
            return found
    except Exception:
        pass
    return dualact.derive(EXPRESSIONS[name])


class _Elementwise:
    """The DualKernel interface without ``method``/``module``: the layer evaluates it entry by entry."""

    def __init__(self, dual):
        self._d = dual
        self.name = "elementwise"

    def nngp(self, q11, q12, q22):
        return self._d.nngp(q11, q12, q22)

    def ntk_factor(self, q11, q12, q22):
        return self._d.ntk_factor(q11, q12, q22)

    def diag(self, q):
        return self._d.diag(q)

    def ntk_diag(self, q):
        return self._d.ntk_diag(q)

    def activation(self, x):
        return self._d.activation(x)


def _net(act, depth=2):
    layers = []
    for _ in range(depth):
        layers += [L.Dense(64, W_std=1.5, b_std=0.05), L.Activation(act)]
    return L.serial(*layers, L.Dense(1, W_std=1.5, b_std=0.05))


def _inputs(seed=0, n1=9, n2=6, d=5):
    """Rows with norms from 0.1 to 10 × √d (off the sphere); x2 holds a copy of an x1 row (ρ = 1 across
    inputs), a negated scaled row (ρ = −1), a zero row and fresh rows."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n1, d)) * np.geomspace(0.1, 10, n1)[:, None]
    x2 = rng.normal(size=(n2, d)) * rng.uniform(0.3, 3, size=(n2, 1))
    x2[0] = x1[3]
    x2[1] = -2 * x1[1]
    x2[2] = 0.0
    return jnp.asarray(x1), jnp.asarray(x2)


def _close(a, b, tol):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    assert np.isfinite(a).all()
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= tol * scale, np.abs(a - b).max() / scale


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_hermite_entries_take_the_matrix_path(name):
    d = _dual(name)
    assert d.method == "hermite"
    assert _hermite_maps(d, {}) is not None
    assert _hermite_maps(_Elementwise(d), {}) is None


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_fc_matrix_path_equals_elementwise(name):
    d = _dual(name)
    x1, x2 = _inputs()
    fast, ref = _net(d), _net(_Elementwise(d))
    for other in (None, x2):
        kf = fast.kernel_fn(x1, other, ("nngp", "ntk"))
        kr = ref.kernel_fn(x1, other, ("nngp", "ntk"))
        _close(kf.nngp, kr.nngp, 1e-12)
        _close(kf.ntk, kr.ntk, 1e-12)


def test_matrix_functions_equal_elementwise_incl_endpoints_and_zero_variance():
    d = _dual("tanh")
    table, mod = d.module._table(), d.module
    rng = np.random.default_rng(3)
    X = rng.normal(size=(7, 4)) * np.geomspace(0.01, 30, 7)[:, None]
    Y = rng.normal(size=(5, 4))
    Y[0], Y[1], Y[2] = X[2], -0.5 * X[4], 0.0
    q1, q2, q12 = (X * X).mean(1), (Y * Y).mean(1), X @ Y.T / 4
    for fn, mat, elem in (
        (mod.activation, hs.nngp_matrix, hs.nngp),
        (mod.derivative, hs.ntk_factor_matrix, hs.ntk_factor),
    ):
        M = mat(table, fn, mod.KINKS, q1, q12, q2)
        E = elem(table, fn, mod.KINKS, q1[:, None], q12, q2[None, :])
        _close(M, E, 1e-13)
        # exact at ρ = ±1 (as the elementwise formula) and at zero variance (column 2)
        assert abs(float(M[2, 0] - E[2, 0])) <= 1e-14 and abs(float(M[4, 1] - E[4, 1])) <= 1e-14
        np.testing.assert_allclose(M[:, 2], E[:, 2], rtol=1e-14, atol=1e-16)
        # batched (leading axes): one matrix per batch entry
        B = mat(table, fn, mod.KINKS, jnp.stack([q1, 2 * q1]), jnp.stack([q12, 2 * q12]), jnp.stack([q2, 2 * q2]))
        _close(B[0], M, 1e-15)
        _close(B[1], mat(table, fn, mod.KINKS, 2 * q1, 2 * q12, 2 * q2), 1e-15)


def test_truncation_tolerance_bounds_the_difference():
    d = _dual("silu")
    table, mod = d.module._table(), d.module
    rng = np.random.default_rng(4)
    X = rng.normal(size=(6, 3)) * np.geomspace(0.1, 3, 6)[:, None]
    q1, q12 = (X * X).mean(1), X @ X.T / 3
    full = hs.nngp_matrix(table, mod.activation, mod.KINKS, q1, q12, q1, rtol=0.0)
    E = hs.nngp(table, mod.activation, mod.KINKS, q1[:, None], q12, q1[None, :])
    _close(full, E, 1e-14)
    N = np.sqrt(np.outer(d.diag(q1), d.diag(q1)))
    for rtol in (1e-4, 1e-8):
        loose = hs.nngp_matrix(table, mod.activation, mod.KINKS, q1, q12, q1, rtol=rtol)
        assert np.all(np.abs(np.asarray(loose - full)) <= 2 * rtol * N)
        # the diagonal (ρ = 1) stays exact whatever the truncation
        np.testing.assert_allclose(np.diag(loose), d.diag(q1), rtol=1e-14)


@pytest.mark.slow
def test_conv_matrix_path_equals_elementwise():
    d = _dual("tanh")
    rng = np.random.default_rng(5)
    x1 = jnp.asarray(rng.normal(size=(2, 4, 4, 2)) * np.array([0.5, 2.0])[:, None, None, None])
    x2 = jnp.asarray(rng.normal(size=(1, 4, 4, 2)))

    def net(act):
        return L.serial(
            L.Conv(8, (2, 2), padding="SAME"), L.Activation(act), L.Conv(8, (2, 2)), L.Flatten(), L.Dense(1)
        )

    fast, ref = net(d), net(_Elementwise(d))
    for other in (None, x2):
        kf = fast.kernel_fn(x1, other, ("nngp", "ntk"))
        kr = ref.kernel_fn(x1, other, ("nngp", "ntk"))
        _close(kf.nngp, kr.nngp, 1e-12)
        _close(kf.ntk, kr.ntk, 1e-12)


@pytest.mark.slow
def test_jit_and_grad_through_the_matrix_path():
    d = _dual("tanh")
    x1, x2 = _inputs(seed=1, n1=4, n2=3)
    net = _net(d, depth=1)

    def total(x, w=1.5):
        k = L.serial(L.Dense(1, w, 0.05), L.Activation(d), L.Dense(1, w, 0.05)).kernel_fn(x, x2, "ntk")
        return jnp.sum(k) + jnp.sum(net.kernel_fn(x, None, "nngp"))

    v = total(x1)
    assert float(jax.jit(total)(x1, 1.5)) == pytest.approx(float(v), rel=1e-13)
    gx, gw = jax.jit(jax.grad(total, argnums=(0, 1)))(x1, 1.5)
    eps = 1e-6
    direction = jnp.asarray(np.random.default_rng(0).normal(size=x1.shape))
    fd_x = (total(x1 + eps * direction) - total(x1 - eps * direction)) / (2 * eps)
    fd_w = (total(x1, 1.5 + eps) - total(x1, 1.5 - eps)) / (2 * eps)
    assert float(jnp.vdot(gx, direction)) == pytest.approx(float(fd_x), rel=1e-6)
    assert float(gw) == pytest.approx(float(fd_w), rel=1e-6)


def test_zero_variance_rows_are_finite_with_finite_gradients():
    d = _dual("softplus")
    table, mod = d.module._table(), d.module
    q1 = jnp.array([0.0, 0.7, 2.0])
    q2 = jnp.array([1.5, 0.0])
    q12 = jnp.array([[0.0, 0.0], [0.4, 0.0], [-1.0, 0.0]])

    def f(q1, q12, q2):
        return jnp.sum(hs.nngp_matrix(table, mod.activation, mod.KINKS, q1, q12, q2))

    M = hs.nngp_matrix(table, mod.activation, mod.KINKS, q1, q12, q2)
    E = hs.nngp(table, mod.activation, mod.KINKS, q1[:, None], q12, q2[None, :])
    _close(M, E, 1e-14)
    for g in jax.grad(f, argnums=(0, 1, 2))(q1, q12, q2):
        assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("name", ["tanh", "silu"])
def test_float32(name):
    d = _dual(name)
    x1, x2 = _inputs(seed=2)
    net = _net(d, depth=3)
    k64 = net.kernel_fn(x1, x2, ("nngp", "ntk"))
    k32 = net.kernel_fn(x1.astype(jnp.float32), x2.astype(jnp.float32), ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        a, b = np.asarray(getattr(k64, g)), np.asarray(getattr(k32, g))
        assert b.dtype == np.float32
        _close(b, a, 1e-4)


def test_float32_without_x64_after_float64_in_the_same_process():
    """Kernels computed with x64 enabled, then without it in the same process: the float64 table beside
    float32 variances failed to lower ('operand type mismatch' from XLA) before the table was cast."""
    x = np.random.default_rng(3).normal(size=(4, 5))
    net = L.serial(L.Dense(16), L.Activation("tanh"), L.Dense(1))
    k64 = np.asarray(net.kernel_fn(jnp.asarray(x, jnp.float64), None, "ntk"))
    with jax.enable_x64(False):
        k32 = net.kernel_fn(jnp.asarray(x, jnp.float32), None, "ntk")
    assert k32.dtype == jnp.float32
    _close(np.asarray(k32, np.float64), k64, 1e-5)


# ---- large pre-activation variance: no overflow in σ, σ' (softplus/mish at q ≳ 6e3 gave inf/NaN) ----------
@functools.cache
def _graded_rule():
    """Composite Gauss–Legendre nodes and weights·φ(z) on [−14, 14], graded geometrically towards z = 0, where
    σ(√q z) varies on the scale 1/√q (plain Gauss–Hermite misses its O(1/√q) contribution there)."""
    xi, wi = np.polynomial.legendre.leggauss(32)
    g = np.geomspace(1e-7, 14, 300)
    e = np.unique(np.concatenate([np.linspace(-14, 14, 281), g, -g, [0.0]]))
    lo, hi = e[:-1, None], e[1:, None]
    z = (0.5 * (lo + hi) + 0.5 * (hi - lo) * xi).ravel()
    return z, ((0.5 * (hi - lo)) * wi).ravel() * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def _ref_product(f, sa, sb):
    """E[f(sa z) f(sb z)], z ~ N(0, 1) (ρ = 1 between variances sa², sb²)."""
    z, w = _graded_rule()
    return float((w * f(sa * z) * f(sb * z)).sum())


def _np_softplus(v):
    return np.logaddexp(0.0, v)


def _np_dsoftplus(v):
    return np.exp(-np.logaddexp(0.0, -v))


def _np_mish(v):
    return v * np.tanh(_np_softplus(v))


def _np_dmish(v):
    t = np.tanh(_np_softplus(v))
    return t + v * (1 - t * t) * _np_dsoftplus(v)


@pytest.mark.parametrize("name,f,df", [("softplus", _np_softplus, _np_dsoftplus), ("mish", _np_mish, _np_dmish)])
def test_hermite_kernels_finite_at_large_variance(name, f, df):
    from dualact import catalog

    mod = getattr(catalog, name)
    assert float(mod.activation(800.0)) == pytest.approx(800.0, rel=1e-12)
    assert float(mod.derivative(800.0)) == pytest.approx(1.0, rel=1e-12)
    assert float(mod.activation(-800.0)) == pytest.approx(0.0, abs=1e-300)
    for q in (6e3, 1e4, 1e5):
        s = np.sqrt(q)
        ref, dref = _ref_product(f, s, s), _ref_product(df, s, s)
        ref4, dref4 = _ref_product(f, s / 2, s / 2), _ref_product(df, s / 2, s / 2)
        values = {
            "diag": (mod.diag(q), ref),
            "ntk_diag": (mod.ntk_diag(q), dref),
            "nngp": (mod.nngp(q, q, q), ref),
            "ntk_factor": (mod.ntk_factor(q, q, q), dref),
            "nngp_rho1": (mod.nngp(q, q / 2, q / 4), _ref_product(f, s, s / 2)),
            "ntk_rho1": (mod.ntk_factor(q, q / 2, q / 4), _ref_product(df, s, s / 2)),
            "nngp_rho-1": (mod.nngp(q, -q / 2, q / 4), _ref_product(f, s, -s / 2)),
            "ntk_rho-1": (mod.ntk_factor(q, -q / 2, q / 4), _ref_product(df, s, -s / 2)),
        }
        for key, (got, want) in values.items():
            got = float(got)
            assert np.isfinite(got), (name, q, key)
            assert got == pytest.approx(want, rel=1e-3), (name, q, key)
        # |ρ| < 1 above the certified range (the table's uncertified extension): finite, within Cauchy–Schwarz
        # (accuracy against 2-D quadrature: tests/test_extreme_scales.py)
        for rho in (0.5, -0.3):
            t = float(mod.nngp(q, rho * np.sqrt(q * q / 4), q / 4))
            td = float(mod.ntk_factor(q, rho * np.sqrt(q * q / 4), q / 4))
            assert np.isfinite(t) and abs(t) <= np.sqrt(ref * ref4) * (1 + 1e-12), (name, q, rho)
            assert np.isfinite(td) and abs(td) <= np.sqrt(dref * dref4) * (1 + 1e-12), (name, q, rho)


def test_hermite_layer_large_inputs_finite():
    x = np.array([[np.sqrt(6e3)], [0.5 * np.sqrt(6e3)]])
    for act in ("softplus", "mish"):
        for mode in ("nngp", "ntk"):
            k = np.asarray(L.serial(L.Dense(1), L.Activation(act))(x, None, mode))
            assert np.all(np.isfinite(k)), (act, mode)
    net = L.fully_connected(2, act="x*tanh(softplus(x))", W_std=1.4)
    k = np.asarray(net(np.array([[1.0, -2.0], [0.5, 3.0]]) * 1e3, None, "ntk"))
    assert np.all(np.isfinite(k))
