"""Catalog kernels and layers at extreme variances: exact scaling of homogeneous kernels, no overflow in
intermediate products, no NaN where the true value is representable (issue: "any input norm")."""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from dualact import layers as L
from dualact.codegen.printer import jax_code
from dualact.symbolic.parse import parse_activation
from dualact.symbolic.quadrature import dual_reference

# positively homogeneous entries: (name, params, degree)
HOMOGENEOUS = [
    ("relu", {}, 1),
    ("leaky_relu", {}, 1),
    ("abrelu", {"a": -0.3, "b": 1.2}, 1),
    ("abs", {}, 1),
    ("rectified_monomial_1", {}, 1),
    ("step", {}, 0),
    ("sign", {}, 0),
    ("rectified_monomial_0", {}, 0),
]
POINTS = [(2.0, 0.7, 3.0), (2.0, -2.4, 3.0), (1.5, 1.5, 1.5), (0.5, -0.5, 0.5), (8.0, 4.0, 2.0), (0.01, 0.0, 7.0)]


def _module(name):
    return importlib.import_module(f"dualact.catalog.{name}")


@pytest.mark.parametrize("name, params, degree", HOMOGENEOUS)
@pytest.mark.parametrize("scale", [1e-300, 1e-160, 1e-80, 1e80, 1e160, 1e300])
def test_homogeneous_kernels_scale_exactly_at_any_magnitude(name, params, degree, scale):
    """T(c·q) = c^k T(q) and Ṫ(c·q) = c^(k−1)·Ṫ(q): q11·q22 over- or underflows for c beyond 1e±154, yet the
    kernel is representable (and exact at ρ = ±1: the 3rd, 4th and 5th points)."""
    m = _module(name)
    a, c, b = (np.array(v) for v in zip(*POINTS, strict=True))
    t, dt = np.asarray(m.nngp(a, c, b, **params)), np.asarray(m.ntk_factor(a, c, b, **params))
    ts = np.asarray(m.nngp(a * scale, c * scale, b * scale, **params))
    dts = np.asarray(m.ntk_factor(a * scale, c * scale, b * scale, **params))
    norm = np.sqrt(np.abs(np.asarray(m.diag(a, **params)) * np.asarray(m.diag(b, **params))))
    nd = np.sqrt(np.abs(np.asarray(m.ntk_diag(a, **params)) * np.asarray(m.ntk_diag(b, **params))))
    np.testing.assert_array_less(np.abs(ts / scale**degree - t), 4e-15 * norm + 1e-300)
    np.testing.assert_array_less(np.abs(dts * scale ** (1 - degree) - dt), 4e-15 * nd + 1e-300)
    # on the diagonal the exact one-dimensional value
    q = a * scale
    np.testing.assert_allclose(
        np.asarray(m.nngp(q, q, q, **params)), np.asarray(m.diag(q, **params)), rtol=4e-16, atol=0
    )


def test_relu_ntk_factor_is_exactly_one_half_at_rho_one_for_any_magnitude():
    q = 10.0 ** np.arange(-300, 301, 10)
    relu = _module("relu")
    np.testing.assert_array_equal(np.asarray(jax.jit(relu.ntk_factor)(q, q, q)), 0.5)
    np.testing.assert_allclose(np.asarray(jax.jit(relu.nngp)(q, q, q)), q / 2, rtol=4e-16, atol=0)


def test_large_integer_literals_are_printed_as_floats():
    """sigmoid_like's formula carries rationals with 30-digit numerators; as Python ints beyond int64 JAX
    rejected them (OverflowError on every call)."""
    import sympy as sp

    assert jax_code(sp.Integer(12500000000000000000000000000000) * sp.Symbol("q")) == "1.25e+31*q"
    assert jax_code(sp.Integer(3) * sp.Symbol("q")) == "3*q"
    sl, ef = _module("sigmoid_like"), _module("erf_family")
    p = {"a": 0.5, "b": 1 / 2.4020563531719796, "c": 0.5}
    a, c, b = (np.array(v) for v in zip(*POINTS, strict=True))
    np.testing.assert_allclose(np.asarray(sl.nngp(a, c, b)), np.asarray(ef.nngp(a, c, b, **p)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(sl.ntk_factor(a, c, b)), np.asarray(ef.ntk_factor(a, c, b, **p)), rtol=1e-14)


@pytest.mark.parametrize("q", [1e10, 1e20, 1e40, 1e100])
def test_radicands_group_the_determinant_near_rho_one(q):
    """(1 + q11)(1 + q22) − q12² written out loses everything to the rounding of q11·q22 once q ≳ 1e16
    (the Gaussian kernel was inf at ρ = 1); grouped as 1 + q11 + q22 + gram_det it is exact. Checked against
    the closed forms in 260-digit arithmetic, at ρ = 1 and ρ = 1 − 1e-9."""
    mpmath.mp.dps = 260  # (1 + q)² − q² at q = 1e100 needs 200 digits
    gauss, erf = _module("gaussian"), _module("erf")
    for rho in (1.0, 1 - 1e-9, -0.3):
        c = rho * q
        Q, C = mpmath.mpf(q), mpmath.mpf(c)
        g_ref = 1 / mpmath.sqrt((1 + Q) ** 2 - C**2)
        e_ref = 2 / mpmath.pi * mpmath.asin(2 * C / (1 + 2 * Q))
        assert abs(float(gauss.nngp(q, c, q)) / float(g_ref) - 1) < 1e-14
        assert abs(float(erf.nngp(q, c, q)) - float(e_ref)) < 1e-15
        assert (
            abs(float(erf.ntk_factor(q, c, q)) / float(4 / mpmath.pi / mpmath.sqrt((1 + 2 * Q) ** 2 - 4 * C**2)) - 1)
            < 1e-14
        )
    assert float(gauss.nngp(q, q, q)) == pytest.approx(float(gauss.diag(q)), rel=1e-15)


def _check_against_reference(name, q, cases, tol):
    """Normalised error of T and Ṫ against 2-D quadrature at (q, ρ·q·√f, q·f) for (ρ, f) in ``cases``."""
    m = _module(name)
    expr = parse_activation(m.SOURCE).expr
    norms = {}
    for rho, f in cases:
        a, b = q, q * f
        c = rho * q * math.sqrt(f)  # exactly q at ρ = 1, f = 1
        for deriv, fn in ((False, m.nngp), (True, m.ntk_factor)):
            for v in (a, b):
                if (v, deriv) not in norms:
                    norms[v, deriv] = dual_reference(expr, v, v, v, derivative=deriv)
            ref = dual_reference(expr, a, b, c, derivative=deriv)
            got = float(fn(a, c, b))
            assert abs(got - ref) <= tol * math.sqrt(norms[a, deriv] * norms[b, deriv]), (q, rho, deriv, got, ref)


def _check_one_dimensional(name, q, cases):
    _check_against_reference(name, q, cases, 1e-13)


def test_one_dimensional_tier_at_huge_variances():
    """E + log Φ(t) cancelled in floating point (both ~q/2): garbage from q ≈ 1e17 and NaN from 1e20."""
    _check_one_dimensional("elu", 1e40, [(0.3, 1.0)])


def test_one_dimensional_tier_resolves_exponential_pieces_at_large_variance():
    """e^x on x < 0 has width 1/√q in the integration variable; without edges at its own scale the NTK factor
    of ELU was 1e-4 off at q = 1e7."""
    _check_one_dimensional("elu", 1e7, [(0.99, 1 / 3)])


def test_one_dimensional_tier_grades_exponential_panels_near_rho_minus_one():
    """With edges at 2/|β| and 16/|β| only, the e^{−16} of the exponential left at the outer edge sat in a panel
    200 times its scale: ELU's NTK factor was 1.6e-10 off (normalised) here."""
    q = 9.302e6
    _check_one_dimensional("elu", q, [(-0.999998461, 6.523e5 / q)])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["elu", "selu"])
@pytest.mark.parametrize("q", [1e5, 1e10, 1e20, 1e60, 1e150])
def test_one_dimensional_tier_at_huge_variances_slow(name, q):
    _check_one_dimensional(name, q, [(0.3, 1.0), (-0.7, 0.25), (1.0, 1.0)])


def test_hermite_tables_extend_beyond_the_certified_range():
    """Above variance 1e3 the tables continue (same J) to 1e8: at |ρ| ≤ 0.9 as accurate as inside; before,
    the coefficients were clamped at q = 1e3 and tanh was 1e-2 off (NTK factor 5e-2) at q ≥ 1e4."""
    _check_against_reference("tanh", 1e5, [(0.3, 1.0), (-0.9, 1 / 7)], 1e-13)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "softplus", "silu", "mish", "sigmoid", "gelu_tanh"])
@pytest.mark.parametrize("q", [1e4, 1e6, 1e8])
def test_hermite_tables_extend_beyond_the_certified_range_slow(name, q):
    _check_against_reference(name, q, [(0.3, 1.0), (-0.6, 1.0), (0.9, 1.0), (0.5, 1 / 7)], 1e-12)


@pytest.mark.parametrize("name", ["tanh", "softplus", "gelu_tanh"])
def test_hermite_kernels_stay_finite_and_bounded_at_huge_variances(name):
    m = _module(name)
    for q in (1e100, 1e200, 1e300):
        for rho in (0.3, -0.8, 1.0):
            t = float(m.nngp(q, rho * q, q))
            assert math.isfinite(t) and abs(t) <= float(m.diag(q)) * (1 + 1e-12)


@pytest.mark.parametrize("scale", [1e-100, 1e100])
def test_relu_network_kernels_scale_exactly_through_the_layers(scale):
    """A bias-free ReLU network is positively homogeneous of degree 2 in x: through Dense, Activation and
    LayerNorm the kernels at input scale 1e±100 (variances 1e±200) are the unit-scale ones times scale²."""
    x = np.random.default_rng(0).normal(size=(6, 5))
    x[3] = x[4]  # ρ = 1 off the diagonal
    net = L.serial(
        L.Dense(64, W_std=1.4, b_std=0.0),
        L.Activation("relu"),
        L.Dense(64, W_std=1.4, b_std=0.0),
        L.Activation("leaky_relu"),
        L.Dense(1, W_std=1.4, b_std=0.0),
    )
    k1 = net.kernel_fn(jnp.asarray(x), None, ("nngp", "ntk"))
    ks = net.kernel_fn(jnp.asarray(x * scale), None, ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(np.asarray(getattr(ks, g)) / scale**2, np.asarray(getattr(k1, g)), rtol=1e-13)
    ln = L.serial(L.Dense(64, W_std=1.4, b_std=0.0), L.LayerNorm(eps=0.0), L.Activation("relu"), L.Dense(1))
    k1, ks = ln.kernel_fn(jnp.asarray(x), None, "nngp"), ln.kernel_fn(jnp.asarray(x * scale), None, "nngp")
    np.testing.assert_allclose(np.asarray(ks), np.asarray(k1), rtol=1e-12)


def test_deep_elu_network_with_growing_variance_is_finite():
    """W_std = 2 doubles the variance per layer: after 100 layers q ≈ 2^100 ≈ 1e30 (NaN before)."""
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 5)))
    k = L.fully_connected(100, 16, "elu", W_std=2.0, b_std=0.0).kernel_fn(x, None, ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        v = np.asarray(getattr(k, g))
        assert np.isfinite(v).all() and np.abs(v).max() > 1e25


def _mean_square_reference(f, q):
    """E[f(√q z)²] = ∫ f(x)² φ(x/s)/s dx (s = √q) by mpmath, with breakpoints at σ's own scales (±2^k in x)
    and at the Gaussian's (multiples of s): a z-grid alone misses the x-features once s is large."""
    with mpmath.workdps(30):
        s = mpmath.sqrt(mpmath.mpf(q))
        cuts = {mpmath.mpf(0)} | {mpmath.mpf(2) ** k for k in range(-6, 9)} | {s * j / 2 for j in range(1, 25)}
        cuts = sorted(cuts | {-c for c in cuts})
        g = lambda x: f(x) ** 2 * mpmath.npdf(x / s) / s  # noqa: E731
        return float(mpmath.quad(g, [-mpmath.inf, *cuts, mpmath.inf]))


_HERMITE_FUNCTIONS = {  # σ and σ' in mpmath
    "tanh": (mpmath.tanh, lambda x: mpmath.sech(x) ** 2),
    "softplus": (lambda x: mpmath.log1p(mpmath.exp(x)), lambda x: 1 / (1 + mpmath.exp(-x))),
}


@pytest.mark.parametrize("name", sorted(_HERMITE_FUNCTIONS))
def test_hermite_diagonals_are_exact_at_huge_variances(name):
    """The one-dimensional expectations behind the diagonal and ρ = ±1 resolve σ(√q z) at any q: the static
    z-grid stopped at q ~ 1e8, and tanh's E[σ'(√q z)²] was 14% off at q = 1e12, 8e-28 instead of 1.7e-8 at
    1e15. Elementwise, and through a layer (kernel matrices, a block mixing small and huge variances)."""
    m = _module(name)
    f, df = _HERMITE_FUNCTIONS[name]
    qs = [1e10, 1e16, 1e30]
    ref = np.array([_mean_square_reference(f, q) for q in qs])
    dref = np.array([_mean_square_reference(df, q) for q in qs])
    q = np.array(qs)
    np.testing.assert_allclose(np.asarray(m.diag(q)), ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(m.ntk_diag(q)), dref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(m.nngp(q, q, q)), ref, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(m.ntk_factor(q, q, q)), dref, rtol=1e-12)
    # layer: Dense(W_std = 1, no bias) on x with |x|²/d = q, then σ; ntk = q·E[σ'²] on the diagonal
    d = 4
    x = np.zeros((len(qs) + 1, d))
    x[:-1, 0] = np.sqrt(q * d)
    x[-1] = [0.3, -0.2, 0.5, 0.1]  # a small variance in the same block
    k = L.serial(L.Dense(8, W_std=1.0, b_std=0.0), L.Activation(name)).kernel_fn(jnp.asarray(x), None, ("nngp", "ntk"))
    np.testing.assert_allclose(np.diag(np.asarray(k.nngp))[:-1], ref, rtol=1e-12)
    np.testing.assert_allclose(np.diag(np.asarray(k.ntk))[:-1], q * dref, rtol=1e-12)
    small = float(np.sum(x[-1] ** 2) / d)
    np.testing.assert_allclose(np.asarray(k.nngp)[-1, -1], float(m.diag(small)), rtol=1e-13)
    # float32: the same through the elementwise diagonal, to float32 rounding
    np.testing.assert_allclose(np.asarray(m.ntk_diag(jnp.asarray(q[:2], jnp.float32))), dref[:2], rtol=1e-5)


def _gabor_nngp_reference(a, c, b):
    """E[e^{−u²−v²} sin u sin v], (u, v) ~ N(0, [[a, c], [c, b]]), from
    E[e^{−z'z} cos(w'z)] = det(I + 2Σ)^{−1/2}·exp(−w'Σ(I + 2Σ)^{−1}w/2) with w = (1, ∓1), in 350 digits (the
    two terms agree to about −log10(q) digits)."""
    with mpmath.workdps(350):
        sigma = mpmath.matrix([[a, c], [c, b]])
        m = mpmath.eye(2) + 2 * sigma
        scale = 1 / mpmath.sqrt(mpmath.det(m))

        def f(w):
            w = mpmath.matrix(w)
            return scale * mpmath.exp(-(w.T * sigma * mpmath.inverse(m) * w)[0] / 2)

        return float((f([1, -1]) - f([1, 1])) / 2)


@pytest.mark.parametrize("dtype, q", [(np.float64, 1e-300), (np.float64, 1e-100), (np.float64, 1e-12),
                                      (np.float64, 1e-6), (np.float32, 1e-30), (np.float32, 1e-8)])
def test_exponential_differences_keep_relative_accuracy_at_small_variances(dtype, q):
    """sin's T and cos's Ṫ are e^{−(q11+q22)/2}·sinh(q12), their diagonals (1 − e^{−2q})/2: differences of
    exponentials that cancel as q → 0 (once 1e-8 relative error at q = 1e-8 in float64, none left in
    float32); emitted as exp_diff they keep relative accuracy, as does Gabor's T."""
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    cos, sin, gabor = _module("cos"), _module("sin"), _module("gabor")
    for rho, r2 in ((-1.0, 1.0), (-0.3, 2.0), (0.5, 0.5), (1.0, 1.0)):
        a, b = dtype(q), dtype(q * r2)
        c = dtype(rho * math.sqrt(q * q * r2))
        with mpmath.workdps(40):
            ref = float(mpmath.exp(-(mpmath.mpf(float(a)) + float(b)) / 2) * mpmath.sinh(float(c)))
        for value in (sin.nngp(a, c, b), cos.ntk_factor(a, c, b)):
            assert np.asarray(value).dtype == dtype
            assert float(value) == pytest.approx(ref, rel=rtol, abs=0)
        if dtype == np.float64:
            assert float(gabor.nngp(a, c, b)) == pytest.approx(_gabor_nngp_reference(a, c, b), rel=rtol, abs=0)
    ref_diag = float(-mpmath.expm1(-2 * mpmath.mpf(float(q))) / 2)
    for value in (sin.diag(dtype(q)), cos.ntk_diag(dtype(q))):
        assert float(value) == pytest.approx(ref_diag, rel=rtol, abs=0)


@pytest.mark.parametrize("c", [0.0, math.pi / 2, 0.3])
def test_parametrised_exponential_differences_keep_relative_accuracy(c):
    """a·sin(bx + c): T = a²/2·e^{−b²(q11+q22)/2}(e^{b²q12} − cos 2c·e^{−b²q12}) cancels at small variances
    when c = 0, Ṫ (the same with + cos 2c) when c = π/2, and both diagonals likewise; the code generator
    writes them with exp_diff and 2 sin² c, 2 cos² c. Against mpmath at 40 digits, variances 1e-12."""
    m = _module("sin_family")
    a, b = 1.3, 0.7
    for q, rho in ((1e-12, 0.5), (1e-12, -1.0), (1e-6, 0.9)):
        q11, q22 = q, 2.0 * q
        q12 = rho * math.sqrt(q11 * q22)
        with mpmath.workdps(40):
            cc = mpmath.mpf(c)
            t = mpmath.exp(-b * b * (mpmath.mpf(q11) + q22) / 2)
            e_p, e_m = mpmath.exp(b * b * mpmath.mpf(q12)), mpmath.exp(-b * b * mpmath.mpf(q12))
            nngp = float(a * a / 2 * t * (e_p - mpmath.cos(2 * cc) * e_m))
            ntk = float(a * a * b * b / 2 * t * (e_p + mpmath.cos(2 * cc) * e_m))
            diag = float(a * a / 2 * (1 - mpmath.exp(-2 * b * b * mpmath.mpf(q11)) * mpmath.cos(2 * cc)))
            ntk_diag = float(a * a * b * b / 2 * (1 + mpmath.exp(-2 * b * b * mpmath.mpf(q11)) * mpmath.cos(2 * cc)))
        kw = {"a": a, "b": b, "c": c}
        assert float(m.nngp(q11, q12, q22, **kw)) == pytest.approx(nngp, rel=1e-13, abs=0)
        assert float(m.ntk_factor(q11, q12, q22, **kw)) == pytest.approx(ntk, rel=1e-13, abs=0)
        assert float(m.diag(q11, **kw)) == pytest.approx(diag, rel=1e-13, abs=0)
        assert float(m.ntk_diag(q11, **kw)) == pytest.approx(ntk_diag, rel=1e-13, abs=0)
