"""Generated code in float32 and without jax_enable_x64, real-valued kernels, and products of exponentials.

Three defects found together: decimal coefficients became 16-digit rationals whose integer literals JAX
rejects without x64 and whose cleared denominators (1.25e+31·q12, 4.5e+62·q11) are ``inf`` in float32;
Gaussian × trigonometric activations (Gabor, RBF, e^{−x²/2}·sin 3x) had complex-valued NTK factors and
means (``atan2(0, ·)`` phases from SymPy's expand_complex); and E[sin(bu + c) sin(bv + c)] was written as
(e^{2b²q12} − cos 2c)·e^{−b²(q11 + 2q12 + q22)/2}, ``inf·0 = NaN`` from q ≈ 100 (b = 3.3).
"""

from __future__ import annotations

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import dualact
from dualact.codegen.balance import balance_constants
from dualact.codegen.exponentials import merge_exponentials
from dualact.codegen.printer import jax_code
from dualact.symbolic.quadrature import dual_reference
from dualact.symbolic.symbols import q, q11, q12, q22

CATALOG = pathlib.Path(dualact.catalog.__file__).parent
POINTS = [(1.0, 0.5, 2.0), (0.3, -0.2, 0.5), (2.5, 2.4, 2.5)]  # (q11, q12, q22)


def _literals(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            yield node.value


def test_generated_literals_fit_int32_and_float32():
    """No integer literal JAX would parse as an overflowing int32, no constant that is inf in float32."""
    modules = sorted(CATALOG.glob("*.py"))
    assert len(modules) > 40
    for path in modules:
        for v in _literals(path):
            if isinstance(v, int):
                assert abs(v) <= 2**31 - 1, (path.name, v)
            else:
                assert v == 0 or 1e-30 < abs(v) < 1e30, (path.name, v)


def test_printer_writes_integers_beyond_int32_as_floats():
    assert jax_code(sp.Integer(2**31) * q) == "2147483648.0*q"
    assert jax_code(sp.Integer(2**31 - 1) * q) == "2147483647*q"
    assert jax_code(sp.Rational(2500000000000000, 6005140882929949) * q) == "(0.4163099665332469)*q"


def test_balance_constants_keeps_values_and_brings_scales_near_one():
    from dualact.codegen.stabilize import safe_atan2, safe_sqrt

    big = sp.Integer(125) * 10**29  # sigmoid_like's formula before: 1.25e+31·q12 and 4.5e+62·q11 ...
    e = safe_atan2(big * q12, safe_sqrt(45 * 10**61 * (q11 + q22) + big**2 * (q11 * q22 - q12**2) + 13 * 10**62))
    out = balance_constants(e)
    numeric = [{"safe_atan2": np.arctan2, "safe_sqrt": lambda y: np.sqrt(np.maximum(y, 0.0))}, "numpy"]
    f_in, f_out = (sp.lambdify((q11, q12, q22), f, modules=numeric) for f in (e, out))
    for p in POINTS:
        assert f_out(*p) == pytest.approx(f_in(*p), rel=1e-15)
    assert max(abs(float(n)) for n in sp.preorder_traversal(out) if n.is_Number) < 1e5


def test_merge_exponentials_keeps_values():
    b = sp.Rational(33, 10)
    e = (sp.exp(2 * b**2 * q12) - sp.cos(sp.Rational(1, 5))) * sp.exp(-(b**2) * (q11 + 2 * q12 + q22) / 2) / 2
    out = merge_exponentials(e)
    assert all(not (a.is_Mul and sum(isinstance(f, sp.exp) for f in a.args) > 1) for a in sp.preorder_traversal(out))
    f_in, f_out = sp.lambdify((q11, q12, q22), e), sp.lambdify((q11, q12, q22), out)
    for p in POINTS:
        assert f_out(*p) == pytest.approx(f_in(*p), rel=1e-13)
    with np.errstate(all="ignore"):
        assert np.isnan(f_in(100.0, 90.0, 100.0))  # inf·0 before
    assert f_out(100.0, 90.0, 100.0) == pytest.approx(0.5 * np.exp(-10.89 * 20 / 2), rel=1e-12)


def _values(k, qs, dtype):
    a, c, b = (jnp.asarray(v, dtype) for v in qs)
    return np.array([k.nngp(a, c, b), k.ntk_factor(a, c, b), k.diag(a), k.diag(b), k.ntk_diag(a), k.ntk_diag(b)],
                    dtype=np.float64)


@pytest.mark.parametrize("name_or_expr", ["sigmoid_like", "erf(0.4163*x)", "0.7*x*erf(x/2.4)/2 + 0.35*x"])
def test_decimal_coefficients_work_in_float32_without_x64(name_or_expr):
    k = dualact.catalog.get(name_or_expr) if name_or_expr.isidentifier() else dualact.derive(name_or_expr)
    for qs in [(1e-3, 5e-4, 2e-3), (1.0, 0.5, 2.0), (1e4, -3e3, 2e4), (1e6, 9.9e5, 1e6)]:
        with jax.enable_x64(False):
            v32 = _values(k, qs, jnp.float32)
        v64 = _values(k, qs, jnp.float64)
        scale = np.sqrt([v64[2] * v64[3], v64[4] * v64[5]])  # normalised errors, as everywhere
        np.testing.assert_allclose(v32[:2] / scale, v64[:2] / scale, rtol=0, atol=1e-5)
        np.testing.assert_allclose(v32[2:], v64[2:], rtol=1e-5)


@pytest.mark.parametrize("name_or_expr", ["gabor", "rbf", "exp(-x**2/2)*sin(3*x)", "sin(2*x + 1)*exp(-x**2/4)"])
def test_gaussian_times_trigonometric_kernels_are_real(name_or_expr):
    if name_or_expr.isidentifier():
        k = dualact.catalog.get(name_or_expr)
        sigma = k.derivation.activation.subs({sp.Symbol(n, real=True): v for n, v in k.defaults.items()})
    else:
        k = dualact.derive(name_or_expr)
        sigma = sp.sympify(name_or_expr, locals={"x": dualact.symbolic.symbols.x})
    for a, c, b in POINTS[:2]:
        out = [k.nngp(a, c, b), k.ntk_factor(a, c, b), k.diag(a)]
        assert all(o.dtype == jnp.float64 for o in out), [o.dtype for o in out]
        ref = [dual_reference(sigma, a, b, c), dual_reference(sigma, a, b, c, derivative=True)]
        scale = np.sqrt(dual_reference(sigma, a, a, a) * dual_reference(sigma, b, b, b))
        np.testing.assert_allclose(np.array(out[:2]) / scale, np.array(ref) / scale, rtol=0, atol=1e-12)
    if hasattr(k, "mean"):
        assert k.mean(1.5).dtype == jnp.float64


def test_sine_kernel_has_no_overflowing_exponential_products():
    b, c = 3.3, 0.1
    k = dualact.derive(f"sin({b}*x + {c})")

    def exact(q11_, q12_, q22_):  # ½(e^{−b²(q11 − 2q12 + q22)/2} − cos 2c·e^{−b²(q11 + 2q12 + q22)/2})
        return 0.5 * (np.exp(-(b**2) * (q11_ - 2 * q12_ + q22_) / 2)
                      - np.cos(2 * c) * np.exp(-(b**2) * (q11_ + 2 * q12_ + q22_) / 2))

    for qv in [1.0, 30.0, 100.0, 1e4, 1e8]:
        qs = (qv, 0.9999 * qv, qv)
        got = float(k.nngp(*qs))
        assert got == pytest.approx(exact(*qs), rel=1e-12, abs=1e-300)
        with jax.enable_x64(False):
            v32 = _values(k, qs, jnp.float32)
        assert np.all(np.isfinite(v32))
        np.testing.assert_allclose(v32[0], exact(*qs), rtol=1e-4, atol=1e-6)


def _mp_reference(expr, point, wrt=None):
    """The engine's SymPy formula evaluated in mpmath (independent of the generated code) with 100 digits, or
    more where q⁴ would cancel at ρ = 1 (GeLU's formula has degree 4)."""
    import mpmath

    e = expr if wrt is None else sp.diff(expr, wrt)
    digits = max(100, 50 + 4 * int(np.log10(max(abs(v) for v in point) + 1.0)))
    with mpmath.workdps(digits):
        return float(mpmath.re(sp.lambdify((q11, q12, q22), e, "mpmath")(*(mpmath.mpf(v) for v in point))))


@pytest.mark.parametrize(
    "name", ["gelu", "gabor", "hermite_3", "rectified_monomial_3", "erf", "sigmoid_like", "gaussian"]
)
def test_rescaled_formulas_match_the_symbolic_ones_at_any_magnitude(name):
    """Formulas with polynomials of degree > 1 are evaluated in variances scaled by a power of four
    (codegen/scaling.py): GeLU was NaN from q ≈ 1e77 (float64) and q ≈ 1e10 (float32); erf's degree-2
    (1 + 2q11)(1 + 2q22) overflowed from q ≈ 1e154 (float64), and the kernel fell to 0."""
    k = dualact.catalog.get(name)
    d = k.derivation
    top = {"gelu": 150, "gabor": 6, "hermite_3": 100, "rectified_monomial_3": 100}.get(name, 300)
    for e in range(-3, top + 1, 7):
        qv = 10.0**e
        point = (qv, 0.6 * np.sqrt(2.0) * qv, 2.0 * qv)
        for fn, expr in ((k.nngp, d.nngp), (k.ntk_factor, d.ntk_factor)):
            ref = _mp_reference(expr, point)
            scale = np.sqrt(abs(_mp_reference(expr, (qv,) * 3) * _mp_reference(expr, (2 * qv,) * 3)))
            assert abs(float(fn(*point)) - ref) <= 1e-12 * max(abs(ref), 1e-3 * scale), (e, fn)
        grad = jax.grad(k.nngp, argnums=(0, 1, 2))(*point)
        scale = np.sqrt(abs(_mp_reference(d.nngp, (qv,) * 3) * _mp_reference(d.nngp, (2 * qv,) * 3)))
        for g, v in zip(grad, (q11, q12, q22), strict=True):
            ref = _mp_reference(d.nngp, point, v)
            assert abs(float(g) - ref) <= 1e-10 * max(abs(ref), 1e-3 * scale / qv), (e, v)


def test_gelu_in_float32_at_large_variances():
    k = dualact.catalog.get("gelu")
    for qv in [1e8, 1e12, 1e20, 1e30]:
        qs = (qv, 0.6 * np.sqrt(2.0) * qv, 2.0 * qv)
        with jax.enable_x64(False):
            v32 = _values(k, qs, jnp.float32)
        v64 = _values(k, qs, jnp.float64)
        np.testing.assert_allclose(v32, v64, rtol=2e-6)


@pytest.mark.parametrize("name", ["erf", "erf_family", "sigmoid_like", "gaussian", "gelu"])
def test_degree_two_formulas_in_float32_at_huge_variances(name):
    """erf's (1 + 2q11)(1 + 2q22) overflowed float32 from q ≈ 1e19 and the kernel fell to 0 (erf, its
    family, sigmoid_like); degree-2 formulas are rescaled too now. Normalised by the diagonals."""
    k = dualact.catalog.get(name)
    k = k.bind(**{p: 0.7 for p in k.params if p not in k.defaults})
    for qv in [1e20, 1e28, 1e36]:
        for rho in (0.5, -0.3, 0.99):
            qs = (qv, rho * np.sqrt(3.7) * qv, 3.7 * qv)
            with jax.enable_x64(False):
                v32 = _values(k, qs, jnp.float32)
            v64 = _values(k, qs, jnp.float64)
            norm = np.sqrt(np.abs(_values(k, (qv, qv, qv), jnp.float64) * _values(k, (3.7 * qv,) * 3, jnp.float64)))
            assert np.all(np.abs(v32 - v64) <= 1e-5 * norm + 1e-37), (qv, rho, v32, v64)


def test_scale_factor_is_applied_after_the_rescaled_formula():
    """The Gaussian NTK factor at ρ = ±1 is f̃·s^{-2} with f̃ ~ s^{3/2} (its radicand loses the gram_det term):
    s^{-2} formed first overflowed, and the value was 0 from q ≈ 1e20 (float32) and 1e156 (float64)."""
    k = dualact.catalog.get("gaussian")
    for qv, dtype, tol in [(1e22, jnp.float32, 1e-5), (1e25, jnp.float32, 1e-5), (1e180, jnp.float64, 1e-13)]:
        q = jnp.asarray(qv, dtype)
        ref = qv**-0.5 / (2 + 1 / qv) ** 1.5  # E[u² e^{-u²}] = q/(1 + 2q)^{3/2}, u ~ N(0, q)
        for rho in (1.0, -1.0):
            assert abs(float(k.ntk_factor(q, rho * q, q)) - rho * ref) <= tol * ref, (qv, rho)


@pytest.mark.parametrize("name", ["gelu", "gabor", "erf", "gaussian"])
def test_kernels_at_rho_one_and_large_variances_match_the_symbolic_formulas(name):
    """Polynomials in which q11·q22 − q12² cancels leading terms are reduced modulo q12² = q11·q22 − gram_det
    (exactly 0 at ρ = ±1): Gabor's NTK factor has 4(q11·q22 − q12²)² + … and was 100% off on the diagonal
    at q = 1e8 (17.5 instead of 3.5e-7 at q = 1e12)."""
    k = dualact.catalog.get(name)
    d = k.derivation
    for expr, fn in ((d.nngp, k.nngp), (d.ntk_factor, k.ntk_factor)):
        for qv in [1e-3, 1.0, 1e4, 1e8, 1e12, 1e16, 1e30]:
            for ratio, rho in [(1.0, 1.0), (4.0, 1.0), (1.0, 0.999999), (2.0, -0.3)]:
                a, b = qv, ratio * qv
                point = (a, rho * np.sqrt(a) * np.sqrt(b), b)
                scale = np.sqrt(abs(_mp_reference(expr, (a,) * 3) * _mp_reference(expr, (b,) * 3)))
                assert abs(float(fn(*point)) - _mp_reference(expr, point)) <= 1e-12 * scale, (qv, ratio, rho)


@pytest.mark.parametrize(("name", "scale"), [("elu", 1.0), ("selu", 1.0507009873554805 * 1.6732632423543772)])
def test_pointwise_exp_minus_one_keeps_relative_accuracy(name, scale):
    """σ(x) = c(e^x − 1) for x < 0 is emitted with jnp.expm1: in float32 at x = −1e-9 the naive e^x − 1 is 0
    (all digits lost). Reference: mpmath."""
    import importlib

    import mpmath
    from sympy.codegen.cfunctions import expm1

    from dualact.codegen.stabilize import stabilize_pointwise
    from dualact.symbolic.symbols import x

    assert stabilize_pointwise(sp.Min(sp.exp(x) - 1, 0)) == sp.Min(0, expm1(x))
    act = importlib.import_module(f"dualact.catalog.{name}").activation
    for v in (-1e-9, -1e-20, -3e-4, -2.0):
        got = act(np.float32(v))
        assert got.dtype == jnp.float32
        assert float(got) == pytest.approx(scale * float(mpmath.expm1(float(np.float32(v)))), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "top32", "top64"),
    [("gaussian", 52, 430), ("gelu", 48, 420), ("gabor", 36, 300), ("erf", 62, 500), ("sigmoid_like", 62, 500)],
)
def test_rho_one_between_parallel_inputs_at_huge_variances(name, top32, top64):
    """Parallel inputs (ρ = ±1 exactly, variances q and 4q) up to 4q = 4^(top + 1) (float32: 8e31 for the
    Gaussian, float64: 1e259). The rescaled formulas lose their q11·q22 − q12² term there, and what is left is
    of lower degree in the scaled variances p = q/s and r = 1/s: with p ≤ 1, r^{3/2} fell below the smallest
    float32 and the NTK factors of the Gaussian, GeLU and Gabor were inf from q ≈ 1e25 (Gabor's NTK factor: 1e20). The
    scale now leaves p as large as the formula's degree allows (numerics.variance_scale). Reference: the
    symbolic formula in mpmath; normalised by the diagonals."""
    k = dualact.catalog.get(name)
    d = k.derivation
    cases = [(jnp.float64, 4.0**k_, 1e-12) for k_ in (60, 150, 300, top64)]
    cases += [(jnp.float32, 4.0**k_, 2e-6) for k_ in (20, 30, top32)]
    for expr, fn in ((d.nngp, k.nngp), (d.ntk_factor, k.ntk_factor)):
        for dtype, a, tol in cases:
            for rho in (1.0, -1.0):
                point = (a, rho * 2.0 * a, 4.0 * a)  # exactly representable: ρ = ±1 in either dtype
                scale = np.sqrt(abs(_mp_reference(expr, (a,) * 3) * _mp_reference(expr, (4.0 * a,) * 3)))
                with jax.enable_x64(dtype == jnp.float64):
                    got = float(fn(*(jnp.asarray(v, dtype) for v in point)))
                assert abs(got - _mp_reference(expr, point)) <= tol * scale, (dtype, a, rho, got)


@pytest.mark.parametrize("source, x0, value, slope", [
    ("elu(x)", 1000.0, 1000.0, 1.0),  # the catalog's σ'(x) = e^x·H(−x) + H(x) was 0·inf = NaN beyond x = 709
    ("selu(x)", 1000.0, 1.0507009873554805 * 1000.0, 1.0507009873554805),
    ("elu(2*x)", 400.0, 800.0, 2.0),  # a derived entry: (e^{2x} − 1)·H(−x) at 2x > 709
    ("x*elu(x)", 1000.0, 1e6, 2000.0),  # x·(e^x − 1)·H(−x) at x = 1000
    ("elu((x + 0.5)*cosh(3*x))", -3.0, -1.0, 0.0),  # σ' held e^{x cosh 3x}·e^{cosh(3x)/2} = 0·inf at x = −3
    # e^{3x} − e^{3x}·H(x) in the Heaviside normal form swallowed 3x in floating point from x ≈ 12 (σ(30) was 2)
    ("Max(elu(3*x), (1 + x/3)*(2 - 0.3*x))", 30.0, 90.0, 3.0),
])
def test_pointwise_heaviside_products_do_not_overflow_to_nan(source, x0, value, slope):
    """σ and σ' written as H(g)·F are emitted as selections (``_num.gate``): 0 where g < 0 even where F
    overflows there, and the same values as the products everywhere else."""
    from dualact.symbolic.normalize import to_heaviside
    from dualact.symbolic.parse import parse_activation
    from dualact.symbolic.quadrature import lambdify_mpmath, lambdify_numpy

    k = dualact.derive(source)
    act, der = k.module.activation, k.module.derivative
    assert float(act(jnp.asarray(x0))) == pytest.approx(value, rel=1e-12)
    if slope is not None:
        assert float(der(jnp.asarray(x0))) == pytest.approx(slope, rel=1e-12)
    sigma = to_heaviside(parse_activation(source).expr)
    assert float(lambdify_numpy(sigma)(np.array([x0]))[0]) == pytest.approx(value, rel=1e-12)  # the engine's
    ref_fn = lambdify_mpmath(sigma)
    xs = np.linspace(-3.0, 3.0, 61)
    ref = np.array([float(ref_fn(v)) for v in xs])
    assert np.allclose(np.asarray(act(jnp.asarray(xs))), ref, rtol=1e-13, atol=1e-15)
    assert np.all(np.isfinite(np.asarray(der(jnp.asarray(xs)))))
