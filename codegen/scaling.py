"""Formulas evaluated in rescaled variances, so that polynomials of high degree never overflow.

GeLU's T carries q11²·q22² in a numerator that the denominator (q11 + 1)(q22 + 1)√(…) brings back to the
size of q: the value is ~q, but the product overflowed (NaN) from q ≈ 1e77 in float64 and q ≈ 1e9.6 in
float32. Writing every variance as q = s·p, with s = 4^k the largest power of four not above max(1, q11, q22)
(:func:`dualact.runtime.numerics.variance_scale`), each subexpression f becomes s^d·f̃(p, r) with r = 1/s ≤ 1
and d its degree of growth: a sum of terms of degrees d_i is s^D·Σ r^(D − d_i)·t̃_i (D = max d_i), a product
adds degrees, a root halves them, an angle atan2(y, x) compares them, and any other function (and
:class:`~dualact.codegen.exponentials.exp_diff`) receives its arguments at full size s^d·ã. The formula is then
f̃ evaluated on p = r·q, times s^D. The scale leaves p as large as the largest degree met allows (p^(2·top)
within the float range, see :func:`~dualact.runtime.numerics.variance_scale`): where the leading terms cancel
(ρ = ±1), the terms left over, like r·p, then stay normal numbers.

Multiplying by powers of two is exact, so up to the order of the roundings the evaluation is the old one,
without intermediate overflow or underflow. Degree 2 is enough to need it: erf's (1 + 2q11)(1 + 2q22)
overflowed from q ≈ 1e19 in float32 (1e154 in float64) and the kernel fell to 0. :func:`rescale_all`
leaves the formulas unchanged (returns ``None``) where every degree is at most 1 — variances, their roots
and the overflow-free :func:`~dualact.runtime.numerics.sqrt_gram_det` — or where :func:`rescale` meets a
construct it does not know.

>>> import sympy as sp
>>> from dualact.symbolic.symbols import q11, q12, q22
>>> rescale(q11**2 * q22**2 / (q11 + 1), (q11, q12, q22))
(3, q11**2*q22**2/(_r + q11), 4)
"""

from __future__ import annotations

import sympy as sp

from .exponentials import exp_diff
from .stabilize import gram_det, safe_atan2, safe_sqrt, sqrt_gram_det, unscale

__all__ = ["RECIPROCAL", "SCALE", "rescale", "rescale_all"]

SCALE = S = sp.Symbol("_s", positive=True)  # the scale s = 4^k
RECIPROCAL = R = sp.Symbol("_r", positive=True)  # its reciprocal r = 1/s

_KEEP_ARGS = (sp.Heaviside, sp.sign)  # functions of the sign only: f(s^d·a) = f(a)


class _Unknown(Exception):
    pass


def _sum(parts):
    top = max(d for d, _ in parts)
    return top, sp.Add(*[e * R ** (top - d) for d, e in parts])


def _full(d, e):
    """An argument at full size, s^d·ẽ."""
    return e if d == 0 else S**d * e


def _walk(e, variables, seen):
    if e in variables:
        return sp.S.One, e
    if not e.free_symbols & set(variables):
        return sp.S.Zero, e
    if e.is_Add:
        out = _sum([_walk(t, variables, seen) for t in e.args])
    elif e.is_Mul:
        parts = [_walk(f, variables, seen) for f in e.args]
        seen += [sp.Add(*[d for d, _ in parts if d > 0]), -sp.Add(*[d for d, _ in parts if d < 0])]
        out = sp.Add(*[d for d, _ in parts]), sp.Mul(*[f for _, f in parts])
    elif e.is_Pow:
        d, b = _walk(e.base, variables, seen)
        if not e.exp.is_Number:
            if d != 0 or e.exp.free_symbols & set(variables):
                raise _Unknown(e)
            out = d, b**e.exp
        else:
            out = d * e.exp, b**e.exp
    elif isinstance(e, safe_sqrt):
        d, b = _walk(e.args[0], variables, seen)
        out = sp.Rational(1, 2) * d, safe_sqrt(b)
    elif isinstance(e, (gram_det, sqrt_gram_det)):
        if tuple(e.args) != tuple(variables):
            raise _Unknown(e)
        out = sp.Integer(2 if isinstance(e, gram_det) else 1), e
    elif isinstance(e, safe_atan2):
        (dy, y), (dx, x) = (_walk(a, variables, seen) for a in e.args)
        top = max(dy, dx)
        out = sp.S.Zero, safe_atan2(y * R ** (top - dy), x * R ** (top - dx))
    elif isinstance(e, sp.Abs):
        d, a = _walk(e.args[0], variables, seen)
        out = d, sp.Abs(a)
    elif isinstance(e, _KEEP_ARGS):
        d, a = _walk(e.args[0], variables, seen)
        out = sp.S.Zero, type(e)(a, *e.args[1:])
    elif isinstance(e, (sp.Max, sp.Min)):
        parts = [_walk(t, variables, seen) for t in e.args]
        top = max(d for d, _ in parts)
        out = top, type(e)(*[t * R ** (top - d) for d, t in parts])
    elif isinstance(e, exp_diff):  # like exp: its arguments at full size
        out = sp.S.Zero, exp_diff(*[_full(*_walk(a, variables, seen)) for a in e.args])
    elif isinstance(e, sp.Function) and len(e.args) == 1:
        d, a = _walk(e.args[0], variables, seen)
        out = sp.S.Zero, type(e)(_full(d, a))
    else:
        raise _Unknown(e)
    seen.append(abs(out[0]))
    return out


def rescale(expr: sp.Expr, variables: tuple) -> tuple[sp.Expr, sp.Expr, sp.Expr] | None:
    """(D, f̃, top) with expr = s^D·f̃(q/s, 1/s) (f̃ written in the names of ``variables``, r as :data:`R`,
    s as :data:`S`) and top the largest degree met, or None where a construct is not handled."""
    seen: list = [sp.S.Zero]
    try:
        degree, scaled = _walk(sp.sympify(expr), tuple(variables), seen)
    except _Unknown:
        return None
    return degree, scaled, max(seen)


def rescale_all(exprs: list, variables: tuple) -> tuple[list, int] | None:
    """The expressions as unscale(f̃, s, D) = f̃·s^D (the factor applied after f̃, one s at a time), with the
    largest degree met in any of them (which bounds the scaled variances, see
    :func:`~dualact.runtime.numerics.variance_scale`), if all can be rescaled and one has degrees above 1
    (else None)."""
    out = [rescale(e, variables) for e in exprs]
    if any(o is None for o in out) or max(o[2] for o in out) <= 1:
        return None
    top = int(sp.ceiling(max(o[2] for o in out)))
    return [f if d == 0 else unscale(f, S, d) for d, f, _ in out], top
