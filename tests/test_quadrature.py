"""Reference quadrature (dualact.symbolic.quadrature) against closed forms, Monte Carlo and mpmath."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import scipy.special as ss
import sympy as sp

from dualact.symbolic.quadrature import (
    ae_derivative,
    dual_reference,
    expectation_1d,
    expectation_1d_mp,
    expectation_2d,
    find_kinks,
    lambdify_mpmath,
    lambdify_numpy,
    monte_carlo_2d,
)
from dualact.symbolic.symbols import x

# ---- closed forms (papers.md §1.3), evaluated at 40 digits from the exact float inputs -----------


def _prep(a, b, c):
    a, b, c = mp.mpf(a), mp.mpf(b), mp.mpf(c)
    P = a * b
    r = c / mp.sqrt(P) if P > 0 else mp.mpf(0)
    r = max(mp.mpf(-1), min(mp.mpf(1), r))
    return a, b, r * mp.sqrt(P), P, r


def _relu(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return (mp.sqrt(max(P - c * c, 0)) + (mp.pi - mp.acos(r)) * c) / (2 * mp.pi)


def _abs(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return 2 / mp.pi * mp.sqrt(max(P - c * c, 0)) + (1 - 2 * mp.acos(r) / mp.pi) * c


def _step(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return (mp.pi - mp.acos(r)) / (2 * mp.pi) if P > 0 else mp.mpf(1) / 4


def _erf(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return 2 / mp.pi * mp.asin(2 * c / mp.sqrt((1 + 2 * a) * (1 + 2 * b)))


def _gelu(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    Q = (1 + a) * (1 + b)
    return (
        c / 4
        + c * mp.asin(c / mp.sqrt(Q)) / (2 * mp.pi)
        + (a * b * (Q - c * c) + c * c) / (2 * mp.pi * Q * mp.sqrt(Q - c * c))
    )


def _sin(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return mp.exp(-(a + b) / 2) * mp.sinh(c)


def _cos(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return mp.exp(-(a + b) / 2) * mp.cosh(c)


def _gauss(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return 1 / mp.sqrt((1 + a) * (1 + b) - c * c)


def _exp(a, b, c):
    a, b, c, P, r = _prep(a, b, c)
    return mp.exp((a + b) / 2 + c)


def _at40(fn):
    def wrapped(a, b, c):
        with mp.workdps(40):
            return +fn(a, b, c)

    return wrapped


CLOSED = {
    "relu": (lambda t: np.maximum(t, 0.0), (0.0,), _at40(_relu)),
    "abs": (np.abs, (0.0,), _at40(_abs)),
    "step": (lambda t: np.heaviside(t, 0.5), (0.0,), _at40(_step)),
    "erf": (ss.erf, (), _at40(_erf)),
    "gelu": (lambda t: 0.5 * t * (1 + ss.erf(t / math.sqrt(2))), (), _at40(_gelu)),
    "sin": (np.sin, (), _at40(_sin)),
    "cos": (np.cos, (), _at40(_cos)),
    "gauss": (lambda t: np.exp(-0.5 * t * t), (), _at40(_gauss)),
    "exp": (np.exp, (), _at40(_exp)),
}


def _points():
    pts = [
        (1, 1, 0.5),
        (0.7, 1.8, -0.6),
        (2, 0.5, 0.9),
        (1.3, 1.3, 1.25),
        (0.5, 1.5, 0.0),
        (16, 1 / 16, 0.3),
        (9, 4, -5.5),
        (1 / 16, 1 / 16, 0.06),
    ]
    a, b = 0.8, 1.7
    for r in (1 - 1e-9, -(1 - 1e-9), 1 - 1e-14, 1.0, -1.0):
        pts.append((a, b, r * math.sqrt(a * b)))
    pts += [(0.0, 2.0, 0.0), (3.0, 0.0, 0.0), (0.0, 0.0, 0.0), (2.0, 2.0, 2.0)]
    return pts


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_closed_forms(name):
    f, kinks, ref = CLOSED[name]
    worst = 0.0
    for a, b, c in _points():
        got = expectation_2d(f, f, a, b, c, kinks, kinks)
        want = float(ref(a, b, c))
        norm = math.sqrt(float(ref(a, a, a)) * float(ref(b, b, b))) or 1.0
        worst = max(worst, abs(got - want) / norm)
        assert abs(got - want) <= 1e-12 * max(norm, abs(want)), (name, a, b, c, got, want)
    assert worst <= 1e-13


def test_rho_slightly_above_one_is_clipped():
    relu = CLOSED["relu"][0]
    a, b = 0.8, 1.7
    c = math.sqrt(a * b) * (1 + 1e-15)
    assert expectation_2d(relu, relu, a, b, c, (0.0,), (0.0,)) == pytest.approx(
        math.sqrt(a * b) / 2, rel=1e-13
    )


@pytest.mark.parametrize(
    "name,a,b,c",
    [("relu", 0.8, 1.7, 0.9), ("step", 2.0, 0.5, -0.7), ("erf", 1.3, 0.4, 0.5), ("gelu", 3.0, 1.0, 1.2)],
)
def test_monte_carlo_agrees(name, a, b, c):
    f, kinks, _ = CLOSED[name]
    mean, se = monte_carlo_2d(f, f, a, b, c, n_samples=400_000, seed=1)
    assert abs(mean - expectation_2d(f, f, a, b, c, kinks, kinks)) <= 5 * se


def test_cross_expectation_and_biased_kinks():
    # E[relu(u − 1/2) step(v + 1/3)] against Monte Carlo; kinks away from 0 on both sides
    f = lambda t: np.maximum(t - 0.5, 0.0)
    g = lambda t: np.heaviside(t + 1 / 3, 0.5)
    val = expectation_2d(f, g, 1.2, 0.7, 0.5, (0.5,), (-1 / 3,))
    mean, se = monte_carlo_2d(f, g, 1.2, 0.7, 0.5, n_samples=400_000, seed=3)
    assert abs(val - mean) <= 5 * se
    # panel refinement does not change it
    assert val == pytest.approx(expectation_2d(f, g, 1.2, 0.7, 0.5, (0.5,), (-1 / 3,), n=32), abs=1e-14)


def test_find_kinks():
    half = sp.Rational(1, 2)
    assert find_kinks(sp.Max(x, 0)) == (0.0,)
    assert find_kinks(sp.Max(x - half, 0) + sp.Abs(2 * x + 3)) == (-1.5, 0.5)
    assert find_kinks(sp.Heaviside(x - 1) + sp.sign(x + 2) + sp.Min(x, x / 10)) == (-2.0, 0.0, 1.0)
    assert find_kinks(sp.Piecewise((x, x > 0), (sp.exp(x) - 1, True))) == (0.0,)
    assert find_kinks(sp.tanh(x)) == ()
    assert find_kinks(sp.DiracDelta(3 * x - 1)) == (pytest.approx(1 / 3, abs=1e-15),)


def test_ae_derivative_drops_delta():
    d = ae_derivative(sp.Heaviside(x) * x + sp.Heaviside(x - 1))
    assert not d.has(sp.DiracDelta)
    f = lambdify_numpy(d)
    np.testing.assert_allclose(f(np.array([-1.0, 0.5, 2.0])), [0.0, 1.0, 1.0])


def test_expectation_1d_and_mp():
    relu = lambda t: np.maximum(t - 0.5, 0.0)
    q = 2.3
    s = math.sqrt(q)
    # E[relu(s z − 1/2)] = s φ(k) − (1/2)(1 − Φ(k)), k = 1/(2s)
    k = 0.5 / s
    want = s * math.exp(-k * k / 2) / math.sqrt(2 * math.pi) - 0.5 * 0.5 * math.erfc(k / math.sqrt(2))
    assert expectation_1d(relu, q, (0.5,)) == pytest.approx(want, rel=1e-14)
    f_mp = lambdify_mpmath(sp.Max(x - sp.Rational(1, 2), 0))
    with mp.workdps(40):
        ss_ = mp.sqrt(mp.mpf(q))
        kk = 1 / (2 * ss_)
        want_mp = ss_ * mp.npdf(kk) - mp.mpf(1) / 2 * (1 - mp.ncdf(kk))
        got = expectation_1d_mp(f_mp, mp.mpf(q), (0.5,), dps=35)
        assert abs(got - want_mp) < mp.mpf(10) ** -32
    assert expectation_1d(np.cos, 0.0) == 1.0


def test_dual_reference_sympy():
    assert dual_reference(sp.Max(x, 0), 1.3, 0.6, 0.4) == pytest.approx(
        float(_relu(1.3, 0.6, 0.4)), rel=1e-13
    )
    # a.e. derivative of relu is the step: E[H(u)H(v)]
    assert dual_reference(sp.Max(x, 0), 1.3, 0.6, 0.4, derivative=True) == pytest.approx(
        float(_step(1.3, 0.6, 0.4)), rel=1e-13
    )
    # overflowing float formula (softplus at large x) is re-evaluated with mpmath
    sp_f = lambdify_numpy(sp.log(1 + sp.exp(x)))
    assert sp_f(np.array([900.0]))[0] == 900.0


def test_steep_transitions_get_panel_points():
    """erf(100x) turns over on |x| ≲ 0.03 and its σ' is a Gaussian bump of width 0.007: the reference rules
    must resolve them (unresolved, E[σ'(u)σ'(v)] was 2e-4 off and the gate rejected erf(100x)'s closed form)."""
    from dualact.symbolic.quadrature import ae_derivative, panel_points

    e = sp.erf(100 * x)
    pts = panel_points(e)
    assert min(abs(p) for p in pts if p) == pytest.approx(1 / 400) and max(pts) == pytest.approx(0.16)
    assert panel_points(ae_derivative(e)) and panel_points(sp.tanh(x)) == ()  # unit-scale: the base rule suffices
    d = lambdify_numpy(ae_derivative(e))
    kinks = panel_points(ae_derivative(e))
    a, c, b = 1.407485, -0.022087, 1.419489
    exact = 4e4 / math.pi / math.sqrt((1 + 2e4 * a) * (1 + 2e4 * b) - 4e8 * c * c)
    assert expectation_2d(d, d, a, b, c, kinks, kinks) == pytest.approx(exact, rel=1e-12)
    diag = 4e4 / math.pi / math.sqrt(1 + 4e4 * a)
    assert expectation_1d(lambda t: d(t) ** 2, a, kinks) == pytest.approx(diag, rel=1e-12)


def test_kinks_where_sympy_finds_no_closed_form():
    """Max(x, tanh(2x)) has kinks where tanh(2x) = x (no closed form); SymPy's solve gives up and the sign
    changes of the argument are bisected. Checked against mpmath's root finder."""
    from dualact.symbolic.quadrature import find_kinks

    kinks = find_kinks(sp.Max(x, sp.tanh(2 * x)))
    root = float(mp.findroot(lambda t: mp.tanh(2 * t) - t, 1.0))
    assert kinks == pytest.approx((-root, 0.0, root), abs=1e-13)


def test_kinks_and_numpy_form_of_a_nested_max():
    """σ = Max(Max(Max(0.3x, 2), cosh x), sigmoid(atan(−x))) in Heaviside form nests Heavisides in Heaviside
    arguments: solving them took minutes, and SymPy's numpy printer rewrote each Heaviside as a Piecewise
    (minutes more). The kinks are where cosh x = 2; σ and σ' evaluate to their values."""
    from dualact.symbolic.normalize import ae_derivative, to_heaviside
    from dualact.symbolic.parse import parse_activation
    from dualact.symbolic.quadrature import find_kinks, lambdify_numpy

    sigma = to_heaviside(parse_activation("Max(Max(Max(0.3*x, 2), cosh(x)), sigmoid(atan(-x)))").expr)
    a = math.acosh(2.0)
    assert find_kinks(sigma) == pytest.approx((-a, a), abs=1e-13)
    t = np.array([-3.0, -1.0, 0.0, 1.0, 3.0, 8.0])
    expect = np.maximum(np.cosh(t), 2.0)
    np.testing.assert_allclose(lambdify_numpy(sigma)(t), expect, rtol=1e-14)
    np.testing.assert_allclose(lambdify_numpy(ae_derivative(sigma))(t), np.where(np.abs(t) > a, np.sinh(t), 0.0),
                               rtol=1e-14, atol=1e-15)


def test_sign_changes_count_the_ends_of_zero_plateaus_once():
    """An argument that is 0 on a whole range (relu(x), or erf(erfc(x/3)) where it underflows) changes sign at
    the ends of the plateau only; exact zeros on the grid are kept exactly."""
    from dualact.symbolic.quadrature import _sign_changes, find_kinks

    assert _sign_changes(sp.Max(x, 0)) == (0.0,)
    assert _sign_changes(sp.Max(x, 0) - sp.Max(x - 1, 0)) == (0.0,)
    far = _sign_changes(sp.erf(sp.erfc(x / 3)))
    assert len(far) == 1 and 70 < far[0] < 90
    assert find_kinks(sp.Heaviside(sp.erf(sp.erfc(x / 3)))) == far
