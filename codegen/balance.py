"""Keep the numeric constants of generated code near 1, so that float32 neither overflows nor underflows.

An activation with a decimal coefficient arrives as a rational with large numerator and denominator
(``erf(0.4163*x)`` is ``erf(4163*x/10000)``), and SymPy clears such denominators when it puts a sum over one
line: neural-tangents' sigmoid-like activation gave ``safe_atan2(1.25e+31*q12, safe_sqrt(4.5e+62*q11 + …))``,
where 4.5e+62 is ``inf`` in float32 (and the integer literal 2500000000000000 is rejected by JAX without
``jax_enable_x64``). The value is unchanged if both arguments of the angle, or a radicand and the factor in
front of its root, are rescaled together, and :func:`balance_constants` does exactly that:

* ``b**e`` for a sum b with a non-unit exponent, and ``safe_sqrt(b)`` → ``k**e·(b/k)**e`` (``√k·safe_sqrt(b/k)``),
  so the constant folds into the factor in front;
* ``safe_atan2(y, x)`` (homogeneous of degree 0) → ``safe_atan2(y/k, x/k)``;

k the power of ten nearest the largest numeric factor among the terms (exact, so the arithmetic stays
rational). Only scales beyond 1e±4 are moved; everything else is left as the engine wrote it.

>>> import sympy as sp
>>> from dualact.symbolic.symbols import q
>>> balance_constants(1 / sp.sqrt(10**40 * q + 3 * 10**40))
1/(100000000000000000000*sqrt(q + 3))
"""

from __future__ import annotations

import math

import sympy as sp

from .stabilize import safe_atan2, safe_sqrt

__all__ = ["balance_constants"]

_DIGITS = 4


def _scale(*exprs: sp.Expr):
    """10**n, n the rounded decimal exponent of the largest numeric factor among the terms of ``exprs``
    (None when abs(n) <= 4 or when a factor is not a plain number)."""
    largest = 0.0
    for e in exprs:
        for t in sp.Add.make_args(sp.expand(e)):
            c = t.as_independent(*t.free_symbols, as_Add=False)[0] if t.free_symbols else t
            try:
                largest = max(largest, abs(float(c)))
            except TypeError:
                return None
    if not 0.0 < largest < math.inf:
        return None
    n = round(math.log10(largest))
    return sp.Integer(10) ** n if abs(n) > _DIGITS else None


def _atan2(e: safe_atan2) -> sp.Expr:
    y, x = e.args
    k = _scale(y, x)
    return e if k is None else safe_atan2(sp.expand(y / k), sp.expand(x / k))


def _root(e: safe_sqrt) -> sp.Expr:
    (b,) = e.args
    k = _scale(b)
    return e if k is None else sp.sqrt(k) * safe_sqrt(sp.expand(b / k))


def _power(e: sp.Pow) -> sp.Expr:
    b, p = e.args
    k = _scale(b)
    return e if k is None else k**p * sp.expand(b / k) ** p


def _is_sum_power(t) -> bool:
    return isinstance(t, sp.Pow) and t.base.is_Add and t.exp != 1 and bool(t.base.free_symbols)


def balance_constants(expr: sp.Expr) -> sp.Expr:
    """``expr`` with the rescalings of the module docstring applied (bottom-up; the value is unchanged)."""
    e = sp.sympify(expr)
    e = e.replace(lambda t: isinstance(t, safe_sqrt), _root)
    e = e.replace(_is_sum_power, _power)
    return e.replace(lambda t: isinstance(t, safe_atan2), _atan2)
