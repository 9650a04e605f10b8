"""Hermite fallback: mpmath coefficients, Chebyshev tables and the JAX series evaluation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import sympy as sp

from dualact.runtime import hermite_series as hs
from dualact.symbolic.hermite import HermiteTable, build_table, hermite_coefficients
from dualact.symbolic.quadrature import ae_derivative, expectation_1d, expectation_2d, lambdify_numpy
from dualact.symbolic.symbols import x

HALF = sp.Rational(1, 2)


# ---- analytic Hermite coefficients (engine-study Q3) ---------------------------------------------
def _He0(n):
    if n % 2:
        return 0
    return (-1) ** (n // 2) * mp.fac2(n - 1) if n > 0 else 1


def _relu_c(j):
    if j == 0:
        return 1 / mp.sqrt(2 * mp.pi)
    if j == 1:
        return mp.mpf(1) / 2
    return _He0(j - 2) / (mp.sqrt(2 * mp.pi) * mp.sqrt(mp.factorial(j)))


def _step_c(j):
    return mp.mpf(1) / 2 if j == 0 else _He0(j - 1) / (mp.sqrt(2 * mp.pi) * mp.sqrt(mp.factorial(j)))


def _abs_c(j):
    return 0 if j == 1 else 2 * _relu_c(j)


def _gelu_c(j):
    def ephi(n):  # E[φ^(n)(z)]
        return (
            0
            if n % 2
            else mp.factorial(n) * (-mp.mpf(1) / 4) ** (n // 2) / (mp.factorial(n // 2) * 2 * mp.sqrt(mp.pi))
        )

    if j == 0:
        return 1 / (2 * mp.sqrt(mp.pi))
    if j == 1:
        return mp.mpf(1) / 2
    return (ephi(j - 2) - ephi(j)) / mp.sqrt(mp.factorial(j))


@pytest.mark.parametrize(
    "name,expr,ref",
    [
        ("relu", sp.Max(x, 0), _relu_c),
        ("step", sp.Heaviside(x), _step_c),
        ("abs", sp.Abs(x), _abs_c),
        ("gelu", x * (1 + sp.erf(x / sp.sqrt(2))) / 2, _gelu_c),
    ],
)
def test_coefficients_analytic(name, expr, ref):
    J = 30
    c = hermite_coefficients(expr, 1, J, dps=30)
    with mp.workdps(40):
        err = max(abs(c[j] - ref(j)) for j in range(J))
    assert err < mp.mpf(10) ** -25, (name, err)


def test_coefficients_scale_and_bias():
    # relu is homogeneous: c_j(s) = s c_j(1); relu(x − 1/2) needs its kink at 1/(2s) (vs a 2-D-free check)
    c = hermite_coefficients(sp.Max(x, 0), mp.mpf(3) / 2, 12, dps=30)
    with mp.workdps(40):
        assert max(abs(c[j] - mp.mpf(3) / 2 * _relu_c(j)) for j in range(12)) < mp.mpf(10) ** -25
    c = hermite_coefficients(sp.Max(x - HALF, 0), 2, 6, dps=25)
    f = lambdify_numpy(sp.Max(x - HALF, 0))
    # c_0 = E[σ(2z)], c_1 = E[σ(2z) z] = 2 P(2z > 1/2) by Stein
    assert float(c[0]) == pytest.approx(expectation_1d(f, 4.0, (0.5,)), rel=1e-14)
    assert float(c[1]) == pytest.approx(math.erfc(0.25 / math.sqrt(2)), rel=1e-14)


# ---- tables -------------------------------------------------------------------------------------
def _elu(t):
    return jnp.where(t > 0, t, jnp.expm1(jnp.minimum(t, 0.0)))


ACTS = {
    # name: (σ, jax σ, jax σ', build kwargs, tolerance of the normalised kernel error at |ρ| ≤ 0.99)
    "tanh": (sp.tanh(x), jnp.tanh, lambda t: 1 - jnp.tanh(t) ** 2, {}, 1e-8),
    "silu": (
        x / (1 + sp.exp(-x)),
        jax.nn.silu,
        lambda t: jax.nn.sigmoid(t) * (1 + t * (1 - jax.nn.sigmoid(t))),
        {},
        1e-8,
    ),
    "elu": (
        sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True)),
        _elu,
        lambda t: jnp.where(t > 0, 1.0, jnp.exp(jnp.minimum(t, 0.0))),
        {},
        1e-6,
    ),
    "relu_half": (
        sp.Max(x - HALF, 0),
        lambda t: jnp.maximum(t - 0.5, 0.0),
        lambda t: jnp.where(t > 0.5, 1.0, 0.0),
        {"s_range": (0.25, 4.0)},
        1e-3,
    ),
}


@pytest.fixture(scope="module")
def tables():
    return {name: build_table(spec[0], **spec[3]) for name, spec in ACTS.items()}


def _points(rng, n=6):
    pts = []
    for _ in range(n):
        a, b = np.exp(rng.uniform(math.log(1 / 16), math.log(16), 2))
        pts.append((a, b, rng.uniform(-0.99, 0.99) * math.sqrt(a * b)))
    return np.array(pts)


def test_table_metadata(tables):
    T = tables["tanh"]
    meta = T.to_json_dict()
    assert meta["J"] == T.J and meta["pieces"] == T.pieces
    assert meta["nngp"]["interp_error_l2_q16"] < 1e-10
    assert meta["nngp"]["tail_rho099_q16"] < 1e-9
    assert T.build_seconds is not None and T.build_seconds < 30


def test_table_against_mpmath(tables):
    T = tables["tanh"]
    rng = np.random.default_rng(5)
    for s in [*np.exp(rng.uniform(math.log(T.s_range[0]), math.log(T.s_range[1]), 2)), 0.01]:
        J = 40
        direct = hermite_coefficients(sp.tanh(x), float(s), J, dps=20)
        nrm = math.sqrt(expectation_1d(lambda t: np.tanh(t) ** 2, float(s) ** 2))
        got = T.coefficients(np.array([s]))[0, :J]
        assert np.max(np.abs(got - np.array([float(v) for v in direct]) / nrm)) < 1e-9, s


def _check_kernels(name, T, which):
    expr, fj, dfj, _, tol = ACTS[name]
    kinks = T.meta["kinks"]
    g_expr = expr if which == "nngp" else ae_derivative(expr)
    g = lambdify_numpy(g_expr)
    fn = fj if which == "nngp" else dfj
    ev = jax.jit(
        jax.vmap(lambda a, c, b: (hs.nngp if which == "nngp" else hs.ntk_factor)(T, fn, kinks, a, c, b))
    )
    pts = _points(np.random.default_rng(sum(map(ord, name))))
    got = np.asarray(ev(pts[:, 0], pts[:, 2], pts[:, 1]))
    worst = 0.0
    for (a, b, c), v in zip(pts, got, strict=True):
        ref = expectation_2d(g, g, a, b, c, kinks, kinks)
        nrm = math.sqrt(
            expectation_1d(lambda t: g(t) ** 2, a, kinks) * expectation_1d(lambda t: g(t) ** 2, b, kinks)
        )
        worst = max(worst, abs(v - ref) / nrm)
    return worst, tol


@pytest.mark.parametrize("name", sorted(ACTS))
def test_nngp_against_quadrature(tables, name):
    worst, tol = _check_kernels(name, tables[name], "nngp")
    assert worst <= tol, worst


@pytest.mark.parametrize("name", ["tanh", "silu", "elu"])
def test_ntk_against_quadrature(tables, name):
    worst, tol = _check_kernels(name, tables[name], "ntk")
    assert worst <= (tol if name != "elu" else 1e-4), worst


def test_diagonal_and_unit_correlation_exact(tables):
    T = tables["tanh"]
    f = np.tanh
    for a, b in [(0.3, 2.5), (7.0, 0.07), (1.0, 1.0)]:
        for sgn in (1.0, -1.0):
            c = sgn * math.sqrt(a * b)
            ref = expectation_2d(f, f, a, b, c)
            assert float(hs.nngp(T, jnp.tanh, (), a, c, b)) == pytest.approx(
                ref, abs=1e-12 * math.sqrt(a * b) + 1e-14
            )
        assert float(hs.diag(jnp.tanh, (), a)) == pytest.approx(
            expectation_1d(lambda t: f(t) ** 2, a), rel=1e-12
        )
    # kinked: relu(x − 1/2) at ρ = ±1, outside the table's s-range too
    Tr = tables["relu_half"]
    r = lambda t: np.maximum(t - 0.5, 0.0)
    for a, b in [(0.5, 2.0), (30.0, 0.01)]:
        for sgn in (1.0, -1.0):
            c = sgn * math.sqrt(a * b)
            ref = expectation_2d(r, r, a, b, c, (0.5,), (0.5,))
            got = float(hs.nngp(Tr, ACTS["relu_half"][1], (0.5,), a, c, b))
            assert got == pytest.approx(ref, abs=1e-12 * max(1.0, math.sqrt(a * b)))


def test_zero_variance_and_transforms(tables):
    T = tables["silu"]
    f, df = ACTS["silu"][1], ACTS["silu"][2]
    kin = ()
    # zero variance: σ(0) E[σ(√b z)] = 0 for silu; use a shifted activation through the runtime too
    assert float(hs.nngp(T, f, kin, 0.0, 0.0, 2.0)) == 0.0
    assert float(hs.ntk_factor(T, df, kin, 0.0, 0.0, 2.0)) == pytest.approx(
        0.5 * expectation_1d(lambda t: np.asarray(df(jnp.asarray(t))), 2.0), rel=1e-12
    )
    fn = lambda a, c, b: hs.nngp(T, f, kin, a, c, b)
    grads = jax.jit(jax.vmap(jax.grad(fn, argnums=(0, 1, 2))))
    qa = jnp.array([0.0, 1.0, 0.8, 2.0, 0.0, 1e-4, 50.0])
    qb = jnp.array([1.0, 0.0, 1.7, 2.0, 0.0, 3.0, 0.5])
    qc = jnp.array([0.0, 0.0, math.sqrt(0.8 * 1.7), -2.0, 0.0, 0.01, 1.0])
    vals = jax.jit(jax.vmap(fn))(qa, qc, qb)
    assert bool(jnp.all(jnp.isfinite(vals)))
    for gvec in grads(qa, qc, qb):
        assert bool(jnp.all(jnp.isfinite(gvec)))
    # dT/dq12 = Ṫ (Price) at an interior point
    g12 = jax.grad(fn, argnums=1)(0.9, 0.4, 1.6)
    assert float(g12) == pytest.approx(float(hs.ntk_factor(T, df, kin, 0.9, 0.4, 1.6)), rel=1e-7)


def test_float32_path(tables):
    T = tables["tanh"]
    pts = _points(np.random.default_rng(11), 5)
    ev = jax.vmap(lambda a, c, b: hs.nngp(T, jnp.tanh, (), a, c, b))
    v64 = np.asarray(ev(*(jnp.asarray(pts[:, i]) for i in (0, 2, 1))))
    v32 = ev(*(jnp.asarray(pts[:, i], jnp.float32) for i in (0, 2, 1)))
    assert v32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(v32), v64, atol=1e-5)


def test_save_load_roundtrip_and_deterministic(tmp_path):
    kw = {"s_range": (0.5, 2.0), "max_terms": 64}
    T1 = build_table(sp.tanh(x), **kw)
    T2 = build_table(sp.tanh(x), **kw)
    p1, p2 = tmp_path / "a.npz", tmp_path / "b.npz"
    T1.save(p1)
    T2.save(p2)
    assert p1.read_bytes() == p2.read_bytes()
    L = HermiteTable.load(p1)
    assert L.to_json_dict() == T1.to_json_dict()
    for k in ("c_cheb", "d_cheb", "c_small", "d_small"):
        np.testing.assert_array_equal(getattr(L, k), getattr(T1, k))
    L.save(tmp_path / "c.npz")
    assert (tmp_path / "c.npz").read_bytes() == p1.read_bytes()


def test_finite_scale_limit_coarse_then_fine_matches_dense_scan():
    """The probes of E[σ(sz)²] < ∞ run every tenth scale, then the ones just below the first failure; the
    answer is that of the dense scan (exp(0.7x) + tanh(x): E[σ(sz)²] ~ e^{(1.4 s)²/2} overflows)."""
    from dualact.symbolic.hermite import _FINITE_LIMIT, _finite_scale_limit, hermite_coefficients_f64

    f = lambdify_numpy(sp.exp(sp.Rational(7, 10) * x) + sp.tanh(x))
    t0, t1 = math.log(0.03), math.log(1e4)
    t = np.linspace(t0, t1, 241)
    with np.errstate(all="ignore"):
        E = hermite_coefficients_f64(f, np.exp(t), 1, ())[1]
    first_bad = int(np.argmin(np.isfinite(E) & (E < _FINITE_LIMIT)))
    assert 0 < first_bad < 240
    assert _finite_scale_limit((f,), (), t0, t1) == t[first_bad - 1]
    assert _finite_scale_limit((lambdify_numpy(sp.tanh(x)),), (), t0, t1) == t1


def test_table_extension_dropped_when_it_would_exceed_the_budget():
    """Above s_max the table continues to s_extend only if that fits the time budget: softplus overflows float64
    beyond x = 709 and is re-evaluated in mpmath there (a composite such as silu(Max(softplus(1), softplus(x)))
    took minutes). The table then stops at s_max, and the metadata says why."""
    sp_expr = sp.log(1 + sp.exp(x))
    fast = build_table(sp_expr, s_range=(0.5, 2.0), max_terms=64, time_budget=0.05)
    assert "extension_dropped" in fast.meta
    assert fast.t_range[1] == pytest.approx(math.log(2.0))
    full = build_table(sp_expr, s_range=(0.5, 2.0), max_terms=64)
    assert "extension_dropped" not in full.meta
    assert full.t_range[1] == pytest.approx(math.log(1e4))


def test_kinks_of_a_composite_are_found_once():
    """Max(softplus(1), softplus(x)) in Heaviside form repeats the nonlinear argument log(1 + e) − log(eˣ + 1)
    dozens of times; each distinct argument is solved once."""
    from dualact.symbolic.normalize import ae_derivative as ae
    from dualact.symbolic.normalize import to_heaviside
    from dualact.symbolic.parse import parse_activation
    from dualact.symbolic.quadrature import find_kinks

    sigma = to_heaviside(parse_activation("silu(Max(softplus(1), softplus(x)))").expr)
    assert find_kinks(sigma) == pytest.approx((1.0,))
    assert find_kinks(ae(sigma)) == pytest.approx((1.0,))
