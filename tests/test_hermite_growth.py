"""Hermite fallback for σ that grows exponentially, e^{β|x|} (relu(x) + cosh(3x), Max(cosh x, 2)).

σ(sz)²φ(z) then peaks at z = 2βs: the truncation radius of every quadrature must follow the scale
(``quadrature.gaussian_radius``, ``HermiteTable.radii``), or the kernel silently loses most of its mass (a
fixed radius of 10 gave diag(4) 98% low for relu(x) + cosh(3x)). References: closed forms through the
exponential tilt E[g(u) e^{a v}] = e^{a² q22/2} E[g(u + a q12)], and mpmath quadrature split at the kinks.
"""

import json
import math

import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import sympy as sp

import dualact
from dualact.symbolic import derive as derive_module
from dualact.symbolic.hermite import hermite_coefficients, hermite_coefficients_f64
from dualact.symbolic.quadrature import gaussian_radius, lambdify_numpy, log_abs_function
from dualact.symbolic.symbols import x

pytestmark = pytest.mark.usefixtures("private_derivation_cache")

_Phi = np.vectorize(lambda v: float(mpmath.ncdf(v)))
_phi = np.vectorize(lambda v: float(mpmath.npdf(v)))


def _tilt_relu(a, q11, q12, q22):
    """E[relu(u) e^{a v}]."""
    mu, s = a * q12, math.sqrt(q11)
    return math.exp(a * a * q22 / 2) * (mu * _Phi(mu / s) + s * _phi(mu / s))


def _tilt_step(a, q11, q12, q22):
    """E[H(u) e^{a v}]."""
    return math.exp(a * a * q22 / 2) * _Phi(a * q12 / math.sqrt(q11))


def _relu_cosh(q11, q12, q22):
    """(T, Ṫ) of σ = relu(x) + cosh(3x) in closed form."""
    rho = max(-1.0, min(1.0, q12 / math.sqrt(q11 * q22)))
    th = math.acos(rho)
    relu = math.sqrt(q11 * q22) / (2 * math.pi) * (math.sin(th) + (math.pi - th) * rho)
    up, down = math.exp(4.5 * (q11 + q22 + 2 * q12)), math.exp(4.5 * (q11 + q22 - 2 * q12))
    cross = sum(0.5 * (_tilt_relu(3, a, q12, b) + _tilt_relu(-3, a, q12, b)) for a, b in ((q11, q22), (q22, q11)))
    step = (math.pi - th) / (2 * math.pi)
    dcross = sum(1.5 * (_tilt_step(3, a, q12, b) - _tilt_step(-3, a, q12, b)) for a, b in ((q11, q22), (q22, q11)))
    return relu + 0.5 * (up + down) + cross, step + 4.5 * (up - down) + dcross


def test_gaussian_radius_follows_exponential_growth():
    cosh3 = log_abs_function(sp.cosh(3 * x))
    for s in (0.5, 2.0, 5.0):
        R = gaussian_radius([cosh3], [s], tail=25.0, floor=10.0)
        assert 6 * s + 10 - 1 <= R <= 6 * s + 10 + 1.5  # peak at 2βs = 6s, then e^{−(z−6s)²/4} = e^{−25}
    # bounded or polynomial σ: the floor; +∞ beyond float64 is seen through mpmath
    assert gaussian_radius([log_abs_function(sp.tanh(x))], [100.0], tail=24.5, floor=10.0) == 10.0
    assert gaussian_radius([log_abs_function(sp.exp(3 * x))], [20.0], tail=24.5, floor=10.0, cap=200.0) > 120


@pytest.fixture(scope="module")
def relu_cosh():
    return dualact.derive("relu(x) + cosh(3*x)")


QS = (1 / 16, 1.0, 4.0, 16.0, 25.0)


def _norm(which, q11, q22):
    return math.sqrt(_relu_cosh(q11, q11, q11)[which]) * math.sqrt(_relu_cosh(q22, q22, q22)[which])


def test_growing_sigma_kernel_matches_closed_form(relu_cosh):
    k = relu_cosh
    assert k.method == "hermite"
    worst, worst_099 = 0.0, 0.0
    for q11 in QS:
        for q22 in QS:
            for rho in (-1.0, -0.9, 0.0, 0.5, 0.99, 1.0):
                q12 = rho * math.sqrt(q11 * q22)
                T, D = _relu_cosh(q11, q12, q22)
                eT = abs(float(k.nngp(q11, q12, q22)) - T) / _norm(0, q11, q22)
                eD = abs(float(k.ntk_factor(q11, q12, q22)) - D) / _norm(1, q11, q22)
                worst = max(worst, eT) if rho == 0.99 else max(worst, eT, eD)
                worst_099 = max(worst_099, eD) if rho == 0.99 else worst_099
    assert worst < 1e-9
    # at ρ = 0.99 the NTK factor's step function (σ' jumps at 0) converges slowly: within the reported bound
    assert worst_099 <= k.accuracy["ntk_error_full_range"]
    for q in QS:  # the diagonal is a one-dimensional expectation: exact
        T, D = _relu_cosh(q, q, q)
        assert float(k.diag(q)) == pytest.approx(T, rel=1e-12)
        assert float(k.ntk_diag(q)) == pytest.approx(D, rel=1e-12)


def test_growing_sigma_kernel_matrix_matches_elementwise(relu_cosh):
    from dualact.layers.activation import _hermite_maps

    nngp_matrix, _ = _hermite_maps(relu_cosh, {})
    q1, q2 = jnp.array([0.5, 4.0, 16.0]), jnp.array([1.0, 9.0])
    q12 = jnp.array([[0.1, -1.5], [2.0, 5.9], [-3.9, 11.9]])
    M = nngp_matrix(q1, q12, q2)
    ref = np.array([[_relu_cosh(float(a), float(c), float(b))[0] for b, c in zip(q2, row, strict=True)]
                    for a, row in zip(q1, q12, strict=True)])
    norm = np.array([[_norm(0, float(a), float(b)) for b in q2] for a in q1])
    assert float(np.max(np.abs(np.asarray(M) - ref) / norm)) < 1e-9


@pytest.mark.parametrize("q", [1.0, 4.0, 16.0, 64.0, 256.0])
def test_kinked_growing_sigma_diagonal_against_mpmath(q):
    k = dualact.derive("Max(cosh(x), 2)")
    kink = float(mpmath.acosh(2))
    s = mpmath.sqrt(q)
    pts = sorted({-mpmath.inf, -kink / s, 0, kink / s, 2 * s, 2 * s + 20, -2 * s, -2 * s - 20, mpmath.inf})
    with mpmath.workdps(30):
        ref = mpmath.quad(lambda z: max(mpmath.cosh(s * z), 2) ** 2 * mpmath.npdf(z), pts)
        dref = mpmath.quad(lambda z: (mpmath.sinh(s * z) if abs(s * z) > kink else 0) ** 2 * mpmath.npdf(z), pts)
    assert float(k.diag(q)) == pytest.approx(float(ref), rel=1e-12)
    assert float(k.ntk_diag(q)) == pytest.approx(float(dref), rel=1e-12)


def test_hermite_coefficients_of_a_growing_sigma():
    """c_j(s) of e^{βx} is e^{β²s²/2} (βs)^j/√(j!); at βs = 15 the mass sits at z = 2βs = 30."""
    beta, s, J = 3.0, 5.0, 8
    exact = [math.exp(beta**2 * s**2 / 2) * (beta * s) ** j / math.sqrt(math.factorial(j)) for j in range(J)]
    mp = hermite_coefficients(sp.exp(3 * x), s, J, dps=30)
    with mpmath.workdps(40):
        b = mpmath.mpf(beta) * s
        exact_mp = [mpmath.exp(b * b / 2) * b**j / mpmath.sqrt(mpmath.factorial(j)) for j in range(J)]
        assert max(abs(c / e - 1) for c, e in zip(mp, exact_mp, strict=True)) < 1e-25
    c, E = hermite_coefficients_f64(lambdify_numpy(sp.exp(3 * x)), [s], J)
    scale = math.sqrt(math.exp(2 * beta**2 * s**2))  # √E[σ(sz)²]
    assert float(E[0]) == pytest.approx(scale**2, rel=1e-13)
    assert max(abs(float(v) - e) / scale for v, e in zip(c[0], exact, strict=True)) < 1e-14


def test_cached_table_without_radii_is_derived_again(relu_cosh):
    d = relu_cosh.derivation
    assert d.hermite["radii"][-1][1] > 30  # the runtime radius grows with the scale
    paths = [p for p in derive_module.cache_dir().glob("*.json")
             if json.loads(p.read_text()).get("method") == "hermite"]
    assert paths
    rec = json.loads(paths[0].read_text())
    del rec["hermite"]["radii"]
    paths[0].write_text(json.dumps(rec))
    assert derive_module._cache_load(paths[0].stem) is None
