"""Products of exponentials merged into one exponent, so that e^{big}·e^{−big} is never formed.

The Gaussian-class rule returns E[sin(bu + c) sin(bv + c)] as
½(e^{2b²q12} − cos 2c)·e^{−b²(q11 + 2q12 + q22)/2}: for b = 3.3 the first factor is ``inf`` from q12 ≈ 33
(q ≈ 3 in float32) while the second is 0, and the kernel came out NaN. :func:`merge_exponentials`
multiplies every exponential factor of a product into the sum beside it and adds the exponents,
½(e^{−b²(q11 − 2q12 + q22)/2} − cos 2c·e^{−b²(q11 + 2q12 + q22)/2}), whose exponents are bounded by the
size of the result. The value is unchanged.

>>> import sympy as sp
>>> from dualact.symbolic.symbols import q11, q12, q22
>>> merge_exponentials((sp.exp(2 * q12) - 1) * sp.exp(-q11 / 2 - q12 - q22 / 2))
-exp(-q11/2 - q12 - q22/2) + exp(-q11/2 + q12 - q22/2)
"""

from __future__ import annotations

import sympy as sp

__all__ = ["merge_exponentials"]


def _exponent(e: sp.Expr) -> sp.Expr:
    """A sum of exponents with its large parts cancelled: expanded (over a common denominator if need be)."""
    num, den = sp.fraction(sp.together(e))
    return sp.expand(num) / den if den != 1 else sp.expand(e)


def _times_exp(term: sp.Expr, extra: sp.Expr) -> sp.Expr:
    factors = sp.Mul.make_args(term)
    exponent = extra + sp.Add(*[f.args[0] for f in factors if isinstance(f, sp.exp)])
    return sp.Mul(*[f for f in factors if not isinstance(f, sp.exp)]) * sp.exp(_exponent(exponent))


def _mergeable(t) -> bool:
    if not t.is_Mul:
        return False
    factors = sp.Mul.make_args(t)
    return any(isinstance(f, sp.exp) for f in factors) and any(f.is_Add and f.has(sp.exp) for f in factors)


def _merge(t: sp.Expr) -> sp.Expr:
    factors = list(sp.Mul.make_args(t))
    exps = [f for f in factors if isinstance(f, sp.exp)]
    target = next(f for f in factors if f.is_Add and f.has(sp.exp))
    rest = [f for f in factors if not isinstance(f, sp.exp)]
    rest.remove(target)
    extra = sp.Add(*[f.args[0] for f in exps])
    return sp.Mul(*rest) * sp.Add(*[_times_exp(term, extra) for term in sp.Add.make_args(target)])


def merge_exponentials(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every product exp(A)·(… + c·exp(B) + …) distributed into … + c·exp(A + B) + …"""
    return sp.sympify(expr).replace(_mergeable, _merge)
