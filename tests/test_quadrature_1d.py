"""The one-dimensional tier (method ``quadrature_1d``): shifted ReLU, ELU, SELU and hard-tanh.

T = E_z[σ(√q11 z)·g(cz, s)] with g(μ, s) = E[σ(μ + s z)] in closed form (:mod:`dualact.symbolic.conditional`),
evaluated by :mod:`dualact.runtime.quadrature_1d`; checked against the independent 2-D quadrature
(:func:`dualact.symbolic.quadrature.dual_reference`), 1-D mpmath quadrature at ρ = ±1 and Monte Carlo.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import dualact.catalog
from dualact.codegen.emit import emit
from dualact.runtime.quadrature_1d import Kernel1D
from dualact.symbolic import conditional as cm
from dualact.symbolic.derivation import Derivation, _from_srepr
from dualact.symbolic.derive import _pair_1d
from dualact.symbolic.normalize import ae_derivative, to_heaviside
from dualact.symbolic.parse import parse_activation
from dualact.symbolic.quadrature import dual_reference, expectation_2d, find_kinks, lambdify_numpy, monte_carlo_2d
from dualact.symbolic.symbols import x

CATALOG = ("relu_shifted", "elu", "selu")
HARDTANH = "Min(Max(x, -1), 1)"
TOL = 1e-11


@functools.cache
def _from_source(src: str, continuous: bool):
    """(Kernel1D built straight from the pieces of σ and σ' on σ's kinks, σ as a SymPy expression)."""
    sig = to_heaviside(parse_activation(src).expr)
    kinks = find_kinks(sig)
    pa, pd = cm.pieces_of(sig, kinks), cm.pieces_of(ae_derivative(sig), kinks)
    assert len(pa) == len(pd) == len(kinks) + 1
    return Kernel1D(cm.kernel_pieces(pa, pd), kinks, continuous), sig


def _hardtanh():
    """Hard-tanh (two kinks; no closed form, so otherwise Hermite)."""
    return _from_source(HARDTANH, True)


class _Jitted:
    def __init__(self, k):
        self.nngp, self.ntk_factor = jax.jit(k.nngp), jax.jit(k.ntk_factor)
        self.diag, self.ntk_diag = jax.jit(k.diag), jax.jit(k.ntk_diag)


@functools.cache
def _kernel(name):
    """(jitted nngp/ntk_factor/diag/ntk_diag, σ as a numeric SymPy expression)."""
    if name == "hardtanh":
        k, sig = _hardtanh()
        return _Jitted(k), sig
    k = dualact.catalog.get(name)
    return _Jitted(k), to_heaviside(k.derivation.activation)


def _points(include_edges=True):
    pts = []
    rhos = [-0.999, -0.99, 0.3, 0.99, 0.999] + ([-1.0, 1.0] if include_edges else [])
    for (a, b) in ((1 / 16, 16.0), (0.7, 2.3)):
        pts += [(a, r * math.sqrt(a * b), b) for r in rhos]
    rng = np.random.default_rng(7)
    for _ in range(2):
        a, b = 2.0 ** rng.uniform(-4, 4, 2)
        pts.append((a, rng.uniform(-1, 1) * math.sqrt(a * b), b))
    return pts


@functools.cache
def _numeric(sig, derivative):
    e = ae_derivative(sig) if derivative else sig
    return lambdify_numpy(e), find_kinks(e)


def _ref2d(sig, a, c, b, derivative=False):
    """quadrature.dual_reference with σ lambdified once (the same 2-D rule)."""
    f, kinks = _numeric(sig, derivative)
    return expectation_2d(f, f, a, b, c, kinks, kinks)


def _reference(sig, a, c, b, derivative):
    if abs(c) >= math.sqrt(a * b):
        return _pair_1d(sig, a, b, c, derivative)
    return _ref2d(sig, a, c, b, derivative)


def test_catalog_entries_use_the_one_dimensional_tier():
    for name in CATALOG:
        k = dualact.catalog.get(name)
        assert k.method == "quadrature_1d" and k.tier == "conditional_1d", name
        assert k.error_bound is not None and k.error_bound <= TOL, (name, k.accuracy)
        assert k.derivation.conditional["continuous"] is True
    assert dualact.catalog.get("tanh").method == "hermite"  # not piecewise poly × exp
    assert cm.pieces_of(sp.tanh(x)) is None


@pytest.mark.parametrize("name", [*CATALOG, "hardtanh"])
def test_agrees_with_independent_quadrature(name):
    k, sig = _kernel(name)
    pts = _points() if name != "hardtanh" else _points()[::2]  # 2-D references of hard-tanh are slow
    q = np.array(pts)
    T = np.asarray(k.nngp(q[:, 0], q[:, 1], q[:, 2]))
    Td = np.asarray(k.ntk_factor(q[:, 0], q[:, 1], q[:, 2]))
    for i, (a, c, b) in enumerate(pts):
        for val, der in ((T[i], False), (Td[i], True)):
            norm = math.sqrt(_ref2d(sig, a, a, a, der) * _ref2d(sig, b, b, b, der))
            err = abs(float(val) - _reference(sig, a, c, b, der)) / norm
            assert err <= TOL, (name, (a, c, b), der, err)


def test_monte_carlo():
    k, _ = _kernel("elu")
    elu = lambda t: np.where(t > 0, t, np.expm1(np.minimum(t, 0.0)))  # noqa: E731
    a, c, b = 1.7, -0.6, 0.9
    mean, se = monte_carlo_2d(elu, elu, a, b, c, n_samples=10**6, seed=3)
    assert abs(float(k.nngp(a, c, b)) - mean) <= 5 * se


@pytest.mark.parametrize("name", [*CATALOG, "hardtanh"])
def test_symmetry_diagonal_and_closed_form_diag(name):
    k, sig = _kernel(name)
    a, c, b = np.array(_points()).T
    for fn in (k.nngp, k.ntk_factor):
        np.testing.assert_allclose(fn(a, c, b), fn(b, c, a), rtol=1e-13, atol=1e-15)
    qq = np.geomspace(1 / 16, 16.0, a.size)  # the shape of the points above: no recompilation
    np.testing.assert_allclose(k.diag(qq), k.nngp(qq, qq, qq), rtol=1e-13)
    np.testing.assert_allclose(k.ntk_diag(qq), k.ntk_factor(qq, qq, qq), rtol=1e-13)
    some = [0, a.size // 2, -1]  # 1/16, about 1 and 16 against 2-D quadrature
    np.testing.assert_allclose(np.asarray(k.diag(qq))[some], [_ref2d(sig, v, v, v) for v in qq[some]], rtol=1e-13)


@pytest.mark.parametrize("name", ["elu", pytest.param("hardtanh", marks=pytest.mark.slow)])
def test_price_autodiff_and_edges(name):
    """∂T/∂q12 = Ṫ (Price); ∂T/∂q11, ∂T/∂q22 against central differences; values and gradients finite at
    zero variance, q = 1e-8 and ρ = ±1 under jit and vmap."""
    k, sig = _kernel(name)
    s0 = float(sig.subs(x, 0))
    q11 = np.array([0.7, 2.0, 1.0, 0.0, 0.0, 2.0, 1e-8, 1.0, 3.0, 3.0, 0.5])
    q22 = np.array([2.3, 3.0, 1.0, 0.0, 1.5, 0.0, 1.0, 1e-8, 3.0, 3.0, 2.0])
    q12 = np.array([0.4, -1.9, 0.999, 0.0, 0.0, 0.0, 0.5e-4, -0.5e-4, 3.0, -3.0, 1.0])
    for fn in (k.nngp, k.ntk_factor) if name == "elu" else (k.nngp,):  # (compile time)
        assert np.isfinite(np.asarray(fn(q11, q12, q22))).all()
        grads = jax.jit(jax.vmap(jax.grad(fn, argnums=(0, 1, 2))))(q11, q12, q22)
        assert all(np.isfinite(np.asarray(gr)).all() for gr in grads), (name, grads)
        if fn is k.nngp:
            g11, g12, g22 = (np.asarray(gr)[:3] for gr in grads)
    np.testing.assert_allclose(g12, np.asarray(k.ntk_factor(q11, q12, q22))[:3], rtol=1e-12)
    h = 1e-5
    fd11 = (np.asarray(k.nngp(q11 + h, q12, q22)) - np.asarray(k.nngp(q11 - h, q12, q22)))[:3] / (2 * h)
    fd22 = (np.asarray(k.nngp(q11, q12, q22 + h)) - np.asarray(k.nngp(q11, q12, q22 - h)))[:3] / (2 * h)
    np.testing.assert_allclose(g11, fd11, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g22, fd22, rtol=1e-6, atol=1e-8)
    # zero variance: T = E[σ(u)]·E[σ(v)] with E[σ(0)] = σ(0)
    T = np.asarray(k.nngp(q11, q12, q22))
    assert T[3] == pytest.approx(s0 * s0, abs=1e-15)
    assert T[4] == pytest.approx(dual_reference(sig, 0.0, 1.5, 0.0), abs=1e-14)
    assert T[5] == pytest.approx(dual_reference(sig, 2.0, 0.0, 0.0), abs=1e-14)


def test_price_and_edge_gradients_of_hardtanh_eagerly():
    """Hard-tanh (two kinks, bounded pieces), outside jit (one branch per call): ∂T/∂q12 = Ṫ at an interior
    point and finite gradients at zero variance and ρ = ±1 (the jit+vmap variant is marked slow)."""
    k, _ = _hardtanh()
    g = jax.grad(k.nngp, argnums=(0, 1, 2))(0.7, 0.4, 2.3)
    assert float(g[1]) == pytest.approx(float(k.ntk_factor(0.7, 0.4, 2.3)), rel=1e-12)
    for args in ((0.0, 0.0, 1.5), (3.0, 3.0, 3.0), (3.0, -3.0, 3.0)):
        grads = jax.grad(k.nngp, argnums=(0, 1, 2))(*args)
        assert all(np.isfinite(float(gr)) for gr in grads), (args, grads)


def test_float32():
    """The float32 path (eager calls: one branch of the closed-form/rule choice per call)."""
    k = dualact.catalog.get("elu")
    args = [jnp.asarray(v, jnp.float32) for v in (1.3, 0.9, 0.8)]
    for fn in (k.nngp, k.ntk_factor):
        v = fn(*args)
        assert v.dtype == jnp.float32
        assert float(v) == pytest.approx(float(fn(1.3, 0.9, 0.8)), rel=1e-5)
    assert k.diag(jnp.float32(2.0)).dtype == jnp.float32
    g = jax.grad(lambda c: k.nngp(args[0], c, args[2]))(args[1])
    assert np.isfinite(float(g))


@pytest.mark.parametrize(
    ("name", "q_range"), [("elu", (1.5, 4.0)), ("selu", (1.5, 4.0)), ("relu_shifted", (-2.5, -1.3))]
)
def test_float32_rule_with_fewer_nodes_matches_float64(name, q_range):
    """Outside the closed form's reach (ELU/SELU β²q > 20, relu(x − ½) with its kink beyond 2 standard
    deviations) the batch takes the rule, which in float32 has 8 nodes per panel instead of 14: within 1e-4 of
    float64 (normalised; here ~1e-5) at the same float32-rounded arguments, every ρ including ±(1 − 1e-6)."""
    k = dualact.catalog.get(name)
    rng = np.random.default_rng(11)
    m = 400
    q11 = 10.0 ** rng.uniform(*q_range, m)
    q22 = q11 * 10.0 ** rng.uniform(-0.3, 0.3, m)
    rho = rng.uniform(-1.0, 1.0, m)
    rho[:80] = np.sign(rng.uniform(-1, 1, 80)) * (1.0 - 10.0 ** rng.uniform(-6, -1, 80))
    args32 = [jnp.asarray(v, jnp.float32) for v in (q11, rho * np.sqrt(q11 * q22), q22)]
    args64 = [jnp.asarray(v, jnp.float64) for v in args32]
    for fn, diag in ((k.nngp, k.diag), (k.ntk_factor, k.ntk_diag)):
        got = fn(*args32)
        assert got.dtype == jnp.float32
        ref = np.asarray(fn(*args64))
        norm = np.sqrt(np.asarray(diag(args64[0])) * np.asarray(diag(args64[2])))
        normal = norm > 1e-30  # values float32 holds as normal numbers (a kink 9 standard deviations out: 1e-18)
        assert np.mean(normal) > 0.9
        assert np.max(np.abs(np.asarray(got, np.float64) - ref)[normal] / norm[normal]) <= 1e-4


def test_record_round_trip_and_deterministic_module():
    d = dualact.catalog.get("selu").derivation
    assert Derivation.from_json(d.to_json()) == d
    assert Derivation.from_json(d.to_json()).content_hash() == d.content_hash()
    assert emit(d, "selu").source == emit(Derivation.from_json(d.to_json()), "selu").source
    g = _from_srepr(d.conditional["g"])
    assert g.has(cm.mu) and g.has(cm.s)
    old = dualact.catalog.get("relu").derivation
    assert "conditional" not in old.to_json_dict()  # older records (and their hashes) unchanged


def test_conditional_mean_closed_form():
    sig = to_heaviside(parse_activation("Max(x, 0)**2*exp(-x/3) + Min(x + 1, 0)").expr)
    pcs = cm.pieces_of(sig)
    assert pcs is not None and len(pcs) == 3
    assert cm.check_conditional_mean(sig, cm.conditional_mean(pcs)) <= 1e-25


def test_layer_uses_the_elementwise_path():
    from dualact import layers as L
    from dualact.layers.activation import _hermite_maps

    k = dualact.catalog.get("elu")
    assert _hermite_maps(k, {}) is None
    _, _, kernel_fn = L.serial(L.Dense(8), L.Activation("elu"), L.Dense(1))
    X = np.random.default_rng(0).normal(size=(5, 3))
    out = kernel_fn(X, None, ("nngp", "ntk"))
    assert np.isfinite(np.asarray(out.nngp)).all() and np.isfinite(np.asarray(out.ntk)).all()
    d = np.diag(np.asarray(out.nngp))
    assert np.all(d > 0)


def test_discontinuous_activation():
    """A jump away from 0 (no closed form): same partition for σ and σ' = 0, no Price custom_jvp."""
    k, sig = _from_source("Heaviside(x - 1/2)", False)
    assert len(k.pieces["activation"]) == len(k.pieces["derivative"]) == 2
    a, c, b = np.array([(0.7, 0.3, 2.3), (2.0, -1.99, 2.0)]).T
    T = np.asarray(jax.jit(k.nngp)(a, c, b))
    for i in range(2):
        assert T[i] == pytest.approx(_ref2d(sig, a[i], c[i], b[i]), abs=1e-12)
    assert np.all(np.asarray(k.ntk_factor(a, c, b)) == 0)
    g = jax.jit(jax.vmap(jax.grad(k.nngp, argnums=(0, 1, 2))))(a, c, b)
    assert all(np.isfinite(np.asarray(v)).all() for v in g)


@pytest.mark.parametrize("case", ["relu_shifted ntk", "step nngp", "step ntk"])
def test_gradient_includes_the_moving_jump(case):
    """A jump of σ (or σ') at k ≠ 0 sits at z = k/√q11 and moves with q11: ∂/∂q11 has a boundary term.
    All three partials against central differences of the values (which are accurate to ~1e-15)."""
    name, which = case.split()
    # step: a σ with a jump away from 0 (Heaviside(x − ½) + relu(x)/3), tier d without Price's shortcut
    k = (dualact.catalog.get("relu_shifted") if name == "relu_shifted"
         else _from_source("Heaviside(x - 1/2) + Max(x, 0)/3", False)[0])
    fn = k.nngp if which == "nngp" else k.ntk_factor
    h = 1e-5
    for a, c, b in ((0.7, 0.4, 2.3), (2.0, -1.1, 3.0), (1.3, 1.2, 1.3)):
        grads = jax.grad(fn, argnums=(0, 1, 2))(a, c, b)
        for i, g in enumerate(grads):
            up, dn = [a, c, b], [a, c, b]
            up[i] += h
            dn[i] -= h
            fd = (float(fn(*up)) - float(fn(*dn))) / (2 * h)
            assert float(g) == pytest.approx(fd, rel=1e-7, abs=1e-9), (case, (a, c, b), i)


def test_log_ndtr_against_mpmath_with_finite_gradients():
    """The tier's own log Φ: jax.scipy's log_ndtr is off by 4e-9 (in log) near t = −20."""
    import mpmath

    from dualact.runtime.normal_tails import log_ndtr

    t = np.concatenate([np.linspace(-60.0, 9.0, 277), [-30.0, -20.01, 0.0]])
    with mpmath.workdps(40):
        ref = np.array([float(mpmath.log(mpmath.ncdf(v))) for v in t])
        dref = np.array([float(mpmath.npdf(v) / mpmath.ncdf(v)) for v in t])
    got = np.asarray(log_ndtr(jnp.asarray(t)))
    assert np.all(np.abs(got - ref) <= 1e-15 * np.maximum(1.0, np.abs(ref)) + 1e-14)
    grad = np.asarray(jax.vmap(jax.grad(log_ndtr))(jnp.asarray(t)))
    np.testing.assert_allclose(grad, dref, rtol=1e-12)


@pytest.mark.parametrize("src, continuous, act0, der0", [
    ("exp(x/3)*Heaviside(-x)", False, 0.5, 1 / 6),   # σ jumps at 0: σ(0) = ½ (H(0) = ½, as the closed forms)
    ("x*Heaviside(x)*exp(-x)", True, 0.0, 0.5),      # σ' jumps at 0: σ'(0) = ½ (as ReLU's closed form)
])
def test_zero_variance_uses_the_midpoint_at_a_kink(src, continuous, act0, der0):
    k, _ = _from_source(src, continuous)
    zero, one = jnp.zeros(()), jnp.ones(())
    assert float(k.nngp(zero, zero, zero)) == pytest.approx(act0**2, abs=1e-15)
    assert float(k.diag(zero)) == pytest.approx(act0**2, abs=1e-15)
    assert float(k.ntk_factor(zero, zero, zero)) == pytest.approx(der0**2, abs=1e-15)
    assert float(k.ntk_diag(zero)) == pytest.approx(der0**2, abs=1e-15)
    assert float(k.nngp(zero, zero, one)) == pytest.approx(act0 * float(k.mean(one)), abs=1e-15)


@pytest.mark.parametrize("src, a, c, b", [
    ("Max(x - 5, 0)", 4.0, 1.094349669895322, 0.3),   # v's kink 9σ out: the mass sits beyond z = L = 10
    ("Max(x - 5, 0)", 0.25, 0.24, 0.25),               # σ(u) starts at z = 10
    ("Max(x - 1/2, 0)", 1e-3, 0.9e-3, 2e-3),           # kink at z = 15.8 (values ~e^-125)
    ("Heaviside(x - 1)*x**2", 0.01, 0.00999, 0.01),    # kink at z = 10
])
def test_far_tail_support_keeps_relative_accuracy(src, a, c, b):
    """Where σ's support (or g's) starts in the far Gaussian tail the rule moves its window there, so tiny
    kernels stay accurate relative to their diagonals (relu(x − 5) used to fail the gate and fall to a Hermite
    series with error bound 0.33)."""
    k, sig = _from_source(src, "Heaviside" not in src)
    ref = dual_reference(sig, a, b, c)
    norm = math.sqrt(dual_reference(sig, a, a, a) * dual_reference(sig, b, b, b))
    assert norm > 0
    assert abs(float(k.nngp(a, c, b)) - ref) <= 1e-12 * norm
    # the closed-form diagonal (truncated-moment recurrence) keeps ~1e-10 relative this far out in the tail
    assert float(k.diag(a)) == pytest.approx(dual_reference(sig, a, a, a), rel=1e-9)
    # the window's ends move with the kink: ∂T/∂q11 still matches central differences
    h = 1e-6 * a
    fd = (float(k.nngp(a + h, c, b)) - float(k.nngp(a - h, c, b))) / (2 * h)
    grad = float(jax.grad(k.nngp, argnums=0)(a, c, b))
    assert grad == pytest.approx(fd, rel=1e-5, abs=1e-12 * norm / a)


def test_erfcx_against_mpmath_with_finite_gradients():
    """The tier's own scaled erfc: jax.scipy's erfcx returns 0 for u in (26.55, 26.64) (jax 0.10)."""
    import mpmath

    from dualact.runtime.normal_tails import erfcx as _erfcx

    u = np.concatenate([np.linspace(0.0, 40.0, 401), np.linspace(26.5, 26.7, 41), [19.999, 20.0, 20.001],
                        np.logspace(2, 6, 30)])
    with mpmath.workdps(40):
        ref = np.array([float(mpmath.exp(mpmath.mpf(v) ** 2) * mpmath.erfc(v)) for v in u])
        dref = np.array([float(2 * mpmath.mpf(v) * mpmath.exp(mpmath.mpf(v) ** 2) * mpmath.erfc(v)
                               - 2 / mpmath.sqrt(mpmath.pi)) for v in u])
    got = np.asarray(_erfcx(jnp.asarray(u)))
    # e^{u²} amplifies the rounding of u² below the switch: eps·u² relative, at most ~1e-13 at u = 20
    rel = np.abs(got / ref - 1.0)
    assert np.all(rel <= 2e-16 * np.minimum(u**2, 400.0) + 4e-15), (u[rel.argmax()], rel.max())
    grad = np.asarray(jax.vmap(jax.grad(_erfcx))(jnp.asarray(u)))
    assert np.all(np.isfinite(grad))
    mask = u < 1e5  # beyond, the derivative (~ −1/(√π u²)) is below the rounding of its two terms
    np.testing.assert_allclose(grad[mask], dref[mask], rtol=1e-9, atol=1e-13)
    huge = np.logspace(8, 300, 50)  # erfcx(u) = (1 − 1/(2u²) + …)/(u√π): 1/(u√π) to rounding
    np.testing.assert_allclose(np.asarray(_erfcx(jnp.asarray(huge))), 1.0 / (huge * math.sqrt(math.pi)),
                               rtol=1e-15)


HARDSWISH = "x*Min(Max(x + 3, 0), 6)/6"


@pytest.mark.parametrize("src, q", [
    (HARDTANH, 1e20), (HARDSWISH, 1e10),
    pytest.param(HARDTANH, 1e10, marks=pytest.mark.slow), pytest.param(HARDSWISH, 1e20, marks=pytest.mark.slow),
])
def test_bounded_pieces_stay_accurate_at_huge_variance(src, q):
    """A bounded piece much narrower than s (hard-tanh's [−1, 1] at q = 1e20) is integrated by Gauss–Legendre:
    the truncated-moment recurrence cancelled there (hard-tanh's diagonal came out −244 at q = 1e20)."""
    k, sig = _from_source(src, True)
    for a, b, r in ((q, q, 0.3), (q, 2.0 * q, -0.9), (q, q / 3, 0.999)):
        c = r * math.sqrt(a * b)
        for derivative, fn, diag in ((False, k.nngp, k.diag), (True, k.ntk_factor, k.ntk_diag)):
            norm = math.sqrt(dual_reference(sig, a, a, a, derivative=derivative)
                             * dual_reference(sig, b, b, b, derivative=derivative))
            ref = dual_reference(sig, a, b, c, derivative=derivative)
            assert abs(float(fn(a, c, b)) - ref) <= 1e-12 * norm, (src, a, c, b, derivative)
            assert float(diag(a)) == pytest.approx(dual_reference(sig, a, a, a, derivative=derivative),
                                                   rel=1e-12)


def test_erfcx_float32_is_finite_and_accurate():
    from dualact.runtime.normal_tails import erfcx as _erfcx

    u = np.linspace(0.0, 60.0, 601)
    got = np.asarray(_erfcx(jnp.asarray(u, jnp.float32)), np.float64)
    ref = np.asarray(_erfcx(jnp.asarray(u, jnp.float64)))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
