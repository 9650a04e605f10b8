"""The canonical simplifier (:mod:`dualact.symbolic.canonical`): small exact rewrites, and GeLU's closed form.

Every rewrite must be an identity; the fast tests compare against the input numerically at random points.
"""

from __future__ import annotations

import random
import time

import mpmath
import pytest
import sympy as sp

from dualact.symbolic.canonical import _sympy_form, canonical_form, canonicalize
from dualact.symbolic.symbols import q11, q12, q22

a, b, x = sp.symbols("a b x", positive=True)


def _same(e1: sp.Expr, e2: sp.Expr, trials: int = 5) -> bool:
    """Equal at random points (|q12| < √(q11 q22), where dual kernels live), in 30-digit arithmetic."""
    syms = sorted(e1.free_symbols | e2.free_symbols, key=str)
    f1, f2 = (sp.lambdify(syms, e, "mpmath") for e in (e1, e2))
    rng = random.Random(0)
    with mpmath.workdps(30):
        for _ in range(trials):
            point = {s: mpmath.mpf(rng.randint(1, 40)) / 20 for s in syms}
            if q12 in point:
                point[q12] /= 4
            v1, v2 = f1(*point.values()), f2(*point.values())
            if abs(v1 - v2) > 1e-20 + 1e-15 * abs(v2):
                return False
    return True


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (sp.sqrt(a * b - 1) ** 3 / (a * b - 1), sp.sqrt(a * b - 1)),
        ((x**2 - 1) / (x - 1), x + 1),
        (sp.asin(x) * (x**2 - 1) / (x - 1) + sp.asin(x), sp.asin(x) * (x + 2)),
        (1 / sp.sqrt(a + 1) - sp.sqrt(a + 1) / (a + 1), sp.S.Zero),
        (sp.sqrt((a + 1) * (b + 1)) * sp.sqrt(a + 1), (a + 1) * sp.sqrt(b + 1)),
        ((sp.sqrt(2) * x + x) / (1 + sp.sqrt(2)), x),
        (sp.S(3) / 7, sp.S(3) / 7),
    ],
)
def test_small_identities(expr, expected):
    out = canonicalize(expr)
    assert sp.simplify(out - expected) == 0
    assert sp.count_ops(out) <= sp.count_ops(expected)


def _gelu_like_term():
    B = q11 * q22 + q11 + q22 + 1
    R = B - q12**2
    return (
        q12 * (45 / R - 15 / B + 15 * B**2 / (B - q12**2) ** 3 - 45 * B / (B - q12**2) ** 2)
        * (8 * sp.pi * q11 * q12 * q22 + 6 * sp.pi * q11 * q12) / (105 * sp.sqrt(R))
        + (2 / (35 * B ** sp.Rational(5, 2)) + B / (7 * R**3 * sp.sqrt(R))) * (6 * sp.pi * q11 - 2 * sp.pi)
        + 2 * sp.pi * q12 * sp.asin(q12 / sp.sqrt(B)) * (1 + 1 / B) / (q11 + 1)
    )


def test_collects_on_radicals_and_frozen_atoms():
    expr = _gelu_like_term()
    out = canonicalize(expr)
    assert _same(out, expr)
    assert sp.count_ops(out) < sp.count_ops(expr)
    assert out.count(sp.asin) == 1


def test_polynomial_path_agrees_with_sympy_path():
    from dualact.symbolic.canonical import _freeze, _radicals

    B = q11 * q22 + q11 + q22 + 1
    expr = (q12 * sp.asin(q12 / sp.sqrt(B)) * (1 + 1 / B) / (q11 + 1) + q12**3 / (B - q12**2) ** sp.Rational(3, 2)
            + sp.I * sp.pi * q12 / sp.sqrt(q11 + 1) - sp.I * sp.pi * q12 * sp.sqrt(q11 + 1) / (q11 + 1))
    frozen, back = _freeze(expr)
    repl, rad_syms = _radicals(frozen)
    slow = _sympy_form(expr, frozen.xreplace(repl), list(back) + list(rad_syms), rad_syms)
    slow = slow.xreplace({**back, **{W: sp.sqrt(B) for W, B in rad_syms.items()}})
    fast = canonical_form(expr)
    assert not fast.has(sp.I)  # I² = -1 and √(q11 + 1)² = q11 + 1 cancel the imaginary part
    assert _same(fast, slow)
    assert _same(fast, expr)
    assert sp.count_ops(fast) <= sp.count_ops(slow)


@pytest.mark.parametrize(
    "expr",
    [
        sp.exp(x) / (1 + sp.exp(x)) + 1 / (1 + sp.exp(x)),  # a frozen atom in a denominator: the sympy path
        sp.Abs(x - 1) * (x**2 - 1) / (x - 1) + sp.Heaviside(x - 1) / (1 + sp.sqrt(x)),
        sp.exp(-x) * (x**2 - 1) / (x + 1) + x ** sp.Rational(1, 3) / sp.sqrt(2),
    ],
)
def test_other_structures_stay_exact(expr):
    out = canonicalize(expr)
    assert _same(out, expr)
    assert sp.count_ops(out) <= sp.count_ops(expr)


def test_budget_is_respected():
    expr = sp.expand(_gelu_like_term() * (q11 + 3))
    start = time.monotonic()
    out = canonicalize(expr, 0.2)
    assert time.monotonic() - start < 3.0
    assert _same(out, expr, trials=2)


@pytest.mark.slow
def test_fresh_gelu_is_small_within_default_budget(private_derivation_cache):
    from dualact.symbolic.derive import TIME_BUDGET, derive

    start = time.monotonic()
    d = derive("x*erf(x/sqrt(2))/2 + x/2", use_cache=False)
    assert time.monotonic() - start < TIME_BUDGET
    assert d.method == "closed_form"
    assert sp.count_ops(d.nngp) <= 100
    assert sp.count_ops(d.ntk_factor) <= 100
