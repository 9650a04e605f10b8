"""Forms the tiers did not recognise, and the Hermite fallback for exponentially growing σ.

``erfc(x)`` and ``2**x`` went to the Hermite fallback although they are 1 − erf(x) and exp(x·log 2); and
the Hermite table of exp(0.7x) + tanh(x) was NaN at every variance (E[σ(sz)²] overflows float64 inside
the tabulated range of scales, and the NaN spread through the Chebyshev pieces).
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import dualact
from dualact.symbolic.quadrature import dual_reference
from dualact.symbolic.symbols import x

POINTS = [(1.0, 0.5, 2.0), (0.3, -0.25, 0.5), (3.0, 2.9, 3.0)]


def _normalised_errors(k, sigma, points=POINTS):
    errs = []
    for a, c, b in points:
        for fn, der in ((k.nngp, False), (k.ntk_factor, True)):
            ref = dual_reference(sigma, a, b, c, derivative=der)
            diag_a, diag_b = (dual_reference(sigma, v, v, v, derivative=der) for v in (a, b))
            scale = np.sqrt(diag_a * diag_b)
            err = abs(float(fn(a, c, b)) - ref)
            errs.append(err / scale if scale > 0 else err)  # σ' ≡ 0 (a constant σ): absolute
    return max(errs)


@pytest.mark.parametrize("source, sigma", [
    ("erfc(x)", sp.erfc(x)),
    ("erfc(2*x)/2 + 1", sp.erfc(2 * x) / 2 + 1),
    ("2**x", 2**x),
    ("0.5**(x + 1)", sp.Rational(1, 2) ** (x + 1)),
])
def test_erfc_and_constant_powers_have_closed_forms(source, sigma):
    k = dualact.derive(source)
    assert k.method == "closed_form"
    assert _normalised_errors(k, sigma) < 1e-13


def test_hermite_fallback_for_exponentially_growing_activation():
    sigma = sp.exp(sp.Rational(7, 10) * x) + sp.tanh(x)
    k = dualact.derive("exp(0.7*x) + tanh(x)")
    assert k.method == "hermite"
    assert _normalised_errors(k, sigma) < 1e-8
    for qv in [10.0, 100.0, 400.0]:  # finite while E[σ(u)²] = e^{0.98 q} + … is (1e170 at q = 400)
        values = [float(k.nngp(qv, 0.5 * qv, qv)), float(k.ntk_factor(qv, -0.5 * qv, qv)), float(k.diag(qv))]
        assert np.all(np.isfinite(values))
    assert float(k.diag(1000.0)) == np.inf  # e^{980}: beyond float64 (a fixed radius z ≤ 10 gave 1e168)
    # normalised, as the Hermite targets: at ρ = 1/2 the kernel is 1e-11 of the diagonal here
    assert _normalised_errors(k, sigma, [(100.0, 50.0, 100.0), (30.0, -20.0, 60.0), (400.0, 150.0, 300.0)]) < 1e-8


@pytest.mark.parametrize("source", [
    "softplus(step(x**2))",  # x² has a double root: the kink finder's root solver did not converge
    "Max(x, tanh(2*x))",  # kinks where tanh(2x) = x: no closed form, found by bisection
    "softplus(Max(x/3 - 3*x, sigmoid(0.5)))",  # logistic(1/2) inside Max was "not comparable"
    "Max(relu(3*x), log(x**2))",  # log(x²)·H(…) is −∞·0 = NaN at x = 0, and σ' = 2/x there
    "sign(erf(erfc(x/3)))",  # = 1; erf(erfc(x/3)) underflows to 0 beyond x ≈ 80: one kink there, not hundreds
    "tanh(Max(Max(1, x-1), elu(1)))",  # σ' = 0 below x = 2: its only nonzero values at small scales sit where
    # φ(z) underflows, and the quadrature radius followed that "peak" to the cap (DerivationError)
    "elu((x + 0.5)*cosh(3*x))",  # SymPy splits e^{(x+½)cosh 3x} into e^{x cosh 3x}·e^{cosh(3x)/2}: 0·inf = NaN
    # from x ≈ −3 (and e^y·H(−y) from x ≈ 2.5), so every such node was re-evaluated in mpmath (150 s), and the
    # generated σ gave NaN (the kernel at q = 0 too)
])
def test_composites_found_by_fuzzing(source):
    """Random compositions that raised SymPy or mpmath errors (or hung) before: each derives, and agrees with
    the kink-aware quadrature reference."""
    from dualact.symbolic.normalize import to_heaviside
    from dualact.symbolic.parse import parse_activation

    k = dualact.derive(source)
    sigma = to_heaviside(parse_activation(source).expr)
    assert _normalised_errors(k, sigma) < 1e-7
