"""Property tests of the engine's dual kernels (``dualact.derive``), float64.

For a set of activations (closed forms of every tier, affine compositions, sums with cross terms, a
parametric family evaluated by keyword, and a Hermite-table kernel) the derived NNGP map T and NTK factor Ṫ
must satisfy, at hundreds of random (q11, q12, q22) each:

* symmetry T(q11, q12, q22) = T(q22, q12, q11);
* consistency with the diagonal formulas, T(q, q, q) = diag(q) and Ṫ(q, q, q) = ntk_diag(q);
* Cauchy–Schwarz, |T| ≤ √(diag(q11)·diag(q22));
* Price's theorem for continuous σ, Ṫ = ∂T/∂q12 (jax.grad) for |ρ| ≤ 0.99;
* positive semi-definite Gram matrices K_ij = T(|x_i|², x_i·x_j, |x_j|²);
* finite values at ρ = ±1 exactly, at zero variance (where T(0, 0, q) = σ(0)·E[σ(v)]) and at q = 1e-8;
* gradients never NaN at the edges: ±inf exactly where the true derivative is infinite.

Kernels are derived once per process (``tests/_engine.py``); each hypothesis example is a batch of points, so
the JAX functions are called vectorised.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from _engine import SPECS, fast, kernel, numeric_activation
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dualact.symbolic import quadrature as quad

ALL = list(SPECS)
CONTINUOUS = [n for n in ALL if SPECS[n].continuous]
TINY = 1e-300
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


pytestmark = pytest.mark.usefixtures("private_derivation_cache")


def _tol(name: str) -> float:
    return 1e-12 if SPECS[name].method == "closed_form" else 1e-10


# --------------------------------------------------------------------------------------------- strategies
# log2 of the variances, ρ: a batch of points per example (ρ = ±1, 0 and |ρ| = 1 − 1e-9 are drawn often)
_log2q = st.floats(-8.0, 8.0, allow_nan=False)
_rho = st.one_of(
    st.floats(-1.0, 1.0, allow_nan=False),
    st.sampled_from([-1.0, 1.0, 0.0, 1 - 1e-9, -1 + 1e-9, 0.99, -0.99]),
)
_points = st.lists(st.tuples(_log2q, _log2q, _rho), min_size=1, max_size=24)


def _arrays(points, max_abs_rho: float = 1.0):
    a = np.array([2.0**p[0] for p in points])
    b = np.array([2.0**p[1] for p in points])
    r = np.clip(np.array([p[2] for p in points]), -max_abs_rho, max_abs_rho)
    return a, r * np.sqrt(a * b), b


def _np(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


# --------------------------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("name", ALL)
@PROPS
@given(points=_points)
def test_symmetry(name, points):
    f = fast(name)
    a, c, b = _arrays(points)
    v, w = f.values(a, c, b), f.values(b, c, a)
    scale = np.sqrt(v["diag_a"] * v["diag_b"])
    np.testing.assert_array_less(np.abs(v["nngp"] - w["nngp"]), _tol(name) * scale + TINY)
    nscale = np.sqrt(v["ntk_diag_a"] * v["ntk_diag_b"])
    np.testing.assert_array_less(np.abs(v["ntk"] - w["ntk"]), _tol(name) * nscale + TINY)


# --------------------------------------------------------------------------------------------- diagonal
@pytest.mark.parametrize("name", ALL)
@PROPS
@given(log2q=st.lists(st.floats(-10.0, 10.0, allow_nan=False), min_size=1, max_size=24))
@example(log2q=[1.5])
def test_diagonal_formula(name, log2q):
    """Jitted (what the layers run): T(q, q, q) = diag(q), Ṫ(q, q, q) = ntk_diag(q)."""
    q = 2.0 ** np.array(log2q)
    v = fast(name).values(q, q, q)
    d, nd = v["diag_a"], v["ntk_diag_a"]
    np.testing.assert_array_less(np.abs(v["nngp"] - d), _tol(name) * np.abs(d) + TINY)
    np.testing.assert_array_less(np.abs(v["ntk"] - nd), _tol(name) * np.abs(nd) + TINY)
    assert np.all(d >= 0) and np.all(nd >= 0)


# --------------------------------------------------------------------------------------------- Cauchy–Schwarz
@pytest.mark.parametrize("name", ALL)
@PROPS
@given(points=_points)
def test_cauchy_schwarz(name, points):
    v = fast(name).values(*_arrays(points))
    bound = np.sqrt(v["diag_a"] * v["diag_b"])
    np.testing.assert_array_less(np.abs(v["nngp"]), bound * (1 + 1e-12) + TINY)
    nbound = np.sqrt(v["ntk_diag_a"] * v["ntk_diag_b"])
    np.testing.assert_array_less(np.abs(v["ntk"]), nbound * (1 + 1e-12) + TINY)


# --------------------------------------------------------------------------------------------- Price's theorem
@pytest.mark.parametrize("name", CONTINUOUS)
@PROPS
@given(points=_points)
def test_ntk_factor_is_dT_dq12(name, points):
    f = fast(name)
    hermite = SPECS[name].method == "hermite"
    # Hermite tables: the accuracy targets are stated for variances in [1/16, 16]
    a, c, b = _arrays([(p[0] / 2, p[1] / 2, p[2]) for p in points] if hermite else points, max_abs_rho=0.99)
    v = f.values(a, c, b)
    nscale = np.sqrt(v["ntk_diag_a"] * v["ntk_diag_b"])
    tol = 1e-7 if hermite else 1e-10
    np.testing.assert_array_less(np.abs(v["dT"] - v["ntk"]), tol * nscale + TINY)


# --------------------------------------------------------------------------------------------- PSD
def _gram(X):
    """X Xᵀ with identical rows giving bitwise identical entries (so copies have ρ = 1 exactly)."""
    return np.einsum("id,jd->ij", X, X)


@st.composite
def _inputs(draw):
    n = draw(st.integers(2, 12))
    d = draw(st.integers(2, 5))  # d = 1: every pair has |ρ| = 1 up to input rounding (√ε-sensitive)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 2.0 ** rng.uniform(-3, 3, size=(n, 1))
    if draw(st.booleans()):  # exact duplicates and antipodes (ρ = ±1 off the diagonal)
        X[1] = X[0] if draw(st.booleans()) else -X[0]
    return X


@pytest.mark.parametrize("name", ALL)
@PROPS
@given(X=_inputs())
@example(X=np.array([[-0.85470836, 0.3], [-0.54340605, 0.1]]))
def test_gram_psd(name, X):
    """Jitted: K_ij = T(|x_i|², x_i·x_j, |x_j|²) (and Ṫ) is PSD."""
    f = fast(name)
    G = _gram(X)
    sq = np.diag(G).copy()  # ρ = ±1 exactly for a point with itself (and with its copy or antipode)
    v = f.values(sq[:, None], G, sq[None, :])
    for what in ("nngp", "ntk"):
        K = v[what]
        assert np.all(np.isfinite(K))
        np.testing.assert_allclose(K, K.T, rtol=1e-12, atol=1e-300)
        ev = np.linalg.eigvalsh((K + K.T) / 2)
        assert ev.min() >= -1e-10 * max(abs(ev).max(), TINY), (what, ev)


@pytest.mark.parametrize("name", ALL)
def test_diagonal_formula_eager(name):
    """Eager evaluation: T(q, q, q) = diag(q) to 1e-12 on a grid of 161 variances."""
    k = kernel(name)
    q = 2.0 ** (np.arange(-80, 81) / 8)
    d, nd = _np(k.diag(q)), _np(k.ntk_diag(q))
    np.testing.assert_array_less(np.abs(_np(k.nngp(q, q, q)) - d), _tol(name) * np.abs(d) + TINY)
    np.testing.assert_array_less(np.abs(_np(k.ntk_factor(q, q, q)) - nd), _tol(name) * np.abs(nd) + TINY)


def test_jit_exact_at_rho_one():
    """Regression: under jax.jit XLA contracts q11*q22 - q12**2 into a fused multiply-add that is not 0 at
    ρ = 1; the generated code uses sqrt_gram_det (built on gram_det), so ReLU's Ṫ(q, q, q) is exactly 1/2
    and T(q, q, q) = q/2."""
    k = kernel("relu")
    q = np.array([2.0**1.5, 0.1, 0.3, 1.7, 3.3, 1e-5])
    np.testing.assert_array_equal(_np(jax.jit(k.ntk_factor)(q, q, q)), 0.5)
    np.testing.assert_allclose(_np(jax.jit(k.nngp)(q, q, q)), q / 2, rtol=4e-16, atol=0)


# --------------------------------------------------------------------------------------------- edges
def _edge_points():
    """(q11, q12, q22) with ρ = ±1 exactly, zero variances, and tiny variances."""
    pts = []
    for a, b in [(1.0, 1.0), (2.0, 8.0), (1e-8, 1e-8), (1e-8, 4e-8), (16.0, 1 / 16)]:
        r = math.sqrt(a * b)
        pts += [(a, r, b), (a, -r, b), (a, 0.5 * r, b)]
    for q in (0.0, 1e-8, 1.0, 7.0):
        pts += [(0.0, 0.0, q), (q, 0.0, 0.0)]
    pts.append((1e-8, 0.0, 3.0))
    return np.array(pts).T


@pytest.mark.parametrize("name", ALL)
def test_finite_at_edges(name):
    f = fast(name)
    v = f.values(*_edge_points())
    for what in ("nngp", "ntk"):
        assert np.all(np.isfinite(v[what])), what
    q = np.array([0.0, 1e-300, 1e-8, 1.0, 1e8])
    v = f.values(q, 0 * q, q)
    assert np.all(np.isfinite(v["diag_a"])) and np.all(np.isfinite(v["ntk_diag_a"]))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("q22", [1e-8, 0.3, 1.0, 5.0])
def test_zero_variance_is_exact(name, q22):
    """T(0, 0, q22) = σ(0)·E[σ(v)], T(0, 0, 0) = σ(0)² (and the same with σ' for Ṫ)."""
    k = kernel(name)
    act = numeric_activation(k, SPECS[name].call)
    for fn, dg, expr in ((k.nngp, k.diag, act), (k.ntk_factor, k.ntk_diag, quad.ae_derivative(act))):
        f = quad.lambdify_numpy(expr)
        s0 = float(f(np.zeros(1))[0])
        mean = quad.expectation_1d(f, q22, quad.find_kinks(expr))
        scale = abs(s0) * math.sqrt(float(dg(q22))) + TINY
        for val in (fn(0.0, 0.0, q22), fn(q22, 0.0, 0.0)):
            assert abs(float(val) - s0 * mean) <= 1e-12 * scale, (fn.__name__, float(val), s0 * mean)
        assert float(fn(0.0, 0.0, 0.0)) == pytest.approx(s0 * s0, rel=1e-14, abs=1e-300)
        assert float(dg(0.0)) == pytest.approx(s0 * s0, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("name", ALL)
def test_gradients_never_nan(name):
    """Gradients w.r.t. q11, q12, q22 at ρ = ±1, zero and tiny variances: finite or ±inf, never NaN."""
    f = fast(name)
    g = f.grads(*_edge_points())
    for what in ("gT", "gTd"):
        for i in range(3):
            assert not np.any(np.isnan(g[what][i])), (what, i, g[what][i])
    q = np.array([0.0, 1e-8, 1.0])
    g = f.grads(q, 0 * q, q)
    assert not np.any(np.isnan(g["gdiag_a"])) and not np.any(np.isnan(g["gntk_diag_a"]))


_EDGE = [(1.0, 1.0, 1.0), (1.0, -1.0, 1.0), (2.0, 4.0, 8.0), (2.0, -4.0, 8.0)]


@pytest.mark.parametrize("name", CONTINUOUS)
def test_dT_dq12_at_rho_pm1_continuous(name):
    """For continuous σ, ∂T/∂q12 = Ṫ stays finite and correct at ρ = ±1 exactly."""
    v = fast(name).values(*np.array(_EDGE).T)
    g, t = v["dT"], v["ntk"]
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-12 * np.abs(t).max())


@pytest.mark.parametrize("name", [n for n in ALL if not SPECS[n].continuous])
def test_dT_dq12_at_rho_pm1_jump(name):
    """Step/sign: ∂T/∂q12 = c/√(q11 q22 − q12²) is +inf at ρ = ±1 (never NaN); Ṫ uses σ' = 0 a.e."""
    v = fast(name).values(*np.array(_EDGE).T)
    assert np.all(v["dT"] == np.inf)
    assert np.all(v["ntk"] == 0.0)


@pytest.mark.parametrize("name", ALL)
def test_dntk_dq12_at_rho_pm1(name):
    """∂Ṫ/∂q12 at ρ = ±1: +inf where σ' jumps (ReLU-like), finite for smooth σ', 0 where σ' = 0."""
    g = fast(name).grads(*np.array(_EDGE).T)["dTd"]
    edge = SPECS[name].ntk_edge
    if edge == "inf":
        assert np.all(g == np.inf), g
    elif edge == "zero":
        assert np.all(g == 0.0), g
    else:
        assert np.all(np.isfinite(g)), g


def test_relu_edge_values():
    """ReLU at ρ = ±1: T = √P/2 or 0, ∂T/∂q12 = 1/2 or 0 (finite), ∂Ṫ/∂q12 = +inf."""
    v = fast("relu").values(*np.array(_EDGE).T)
    np.testing.assert_allclose(v["nngp"], [0.5, 0.0, 2.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(v["dT"], [0.5, 0.0, 0.5, 0.0], atol=1e-15)
