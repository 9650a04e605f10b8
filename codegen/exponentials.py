"""Products of exponentials merged into one exponent, so that e^{big}·e^{−big} is never formed.

The Gaussian-class rule returns E[sin(bu + c) sin(bv + c)] as
½(e^{2b²q12} − cos 2c)·e^{−b²(q11 + 2q12 + q22)/2}: for b = 3.3 the first factor is ``inf`` from q12 ≈ 33
(q ≈ 3 in float32) while the second is 0, and the kernel came out NaN. :func:`merge_exponentials`
multiplies every exponential factor of a product into the sum beside it and adds the exponents,
½(e^{−b²(q11 − 2q12 + q22)/2} − cos 2c·e^{−b²(q11 + 2q12 + q22)/2}), whose exponents are bounded by the
size of the result. The value is unchanged.

:func:`pair_exponentials` then turns each difference c·e^A − c·e^B of such terms (B possibly 0) into
c·exp_diff(A, B, A − B) with A − B simplified symbolically (printed as ``_num.exp_diff``): e^{q12 − t} − e^{−q12 − t}
(the NTK factor of cos, ≈ 2·q12 for small variances) and ½ − ½e^{−2q} keep their relative accuracy as the
variances go to 0, where the plain difference cancels (at q = 1e-8, half the digits of float64 and all of
float32's).

>>> import sympy as sp
>>> from dualact.symbolic.symbols import q11, q12, q22
>>> merge_exponentials((sp.exp(2 * q12) - 1) * sp.exp(-q11 / 2 - q12 - q22 / 2))
-exp(-q11/2 - q12 - q22/2) + exp(-q11/2 + q12 - q22/2)
"""

from __future__ import annotations

import sympy as sp

from dualact.symbolic.symbols import q, q11, q12, q22

__all__ = ["exp_diff", "merge_exponentials", "pair_exponentials"]


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


class exp_diff(sp.Function):  # noqa: N801 - printed name
    """e^a − e^b given d = a − b (printed as ``_num.exp_diff``: relative accuracy where a ≈ b)."""

    nargs = 3
    is_real = True

    def fdiff(self, argindex=1):
        a, b, _ = self.args
        return (sp.exp(a), -sp.exp(b), sp.S.Zero)[argindex - 1]  # d is a function of a and b

    def _eval_rewrite_as_exp(self, a, b, d, **kwargs):
        return sp.exp(a) - sp.exp(b)


def _split_exp(term: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(coefficient, exponent) of ``term`` = coefficient·e^exponent (exponent 0 without an exponential)."""
    factors = sp.Mul.make_args(term)
    exps = [f for f in factors if isinstance(f, sp.exp)]
    rest = sp.Mul(*[f for f in factors if not isinstance(f, sp.exp)])
    return rest, sp.Add(*[f.args[0] for f in exps])


_VARIANCES = frozenset((q, q11, q12, q22))


def _pairing(ci: sp.Expr, cj: sp.Expr):
    """c_j/c_i as −1, or 1 + c_j/c_i simplified where the ratio depends on parameters only (it may reach −1:
    −cos 2c at c = 0), else None (a fixed ratio other than −1 never cancels at small variances)."""
    if sp.expand(ci + cj) == 0:
        return sp.S.NegativeOne
    ratio = sp.simplify(cj / ci)
    if ratio.is_number or ratio.free_symbols & _VARIANCES or sp.fraction(sp.together(ratio))[1] != 1:
        return None  # (a denominator such as cos 2c may vanish: the other order is tried)
    return sp.trigsimp(1 + ratio)


def _paired(first, second, d):
    """c1·exp_diff(A, B, d) + c1·(1 + c2/c1)·e^B for the terms (c1, A), (c2, B) in whichever order
    :func:`_pairing` accepts (c1 e^A + c2 e^B = c1 (e^A − e^B) + c1 (1 + c2/c1) e^B), else None."""
    for (c1, e1), (c2, e2), d12 in ((first, second, d), (second, first, -d)):
        rest = _pairing(c1, c2)
        if rest is not None:
            return c1 * exp_diff(e1, e2, d12) + (0 if rest == -1 else c1 * rest * sp.exp(e2))
    return None


def _pair(add: sp.Add) -> sp.Expr:
    terms = [_split_exp(t) for t in add.args]
    used, out = set(), []
    for i, (ci, ei) in enumerate(terms):
        if i in used:
            continue
        for j in range(i + 1, len(terms)):
            cj, ej = terms[j]
            if j in used:
                continue
            d = _exponent(ei - ej)
            if d.is_number:  # no cancellation where the exponents never meet
                continue
            paired = _paired((ci, ei), (cj, ej), d)
            if paired is None:
                continue
            used |= {i, j}
            out.append(paired)
            break
        else:
            out.append(add.args[i])
    return sp.Add(*out) if used else add


def pair_exponentials(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every difference c·e^A − c·e^B of two terms of a sum (e^0 = 1 included) written as
    c·exp_diff(A, B, A − B), and every c·e^A + k·c·e^B with k a function of the parameters (which may be
    −1: k = −cos 2c at c = 0) as c·exp_diff(A, B, A − B) + (1 + k)·c·e^B, 1 + k simplified (2 sin² c).

    >>> from dualact.symbolic.symbols import q
    >>> pair_exponentials(sp.Rational(1, 2) - sp.exp(-2 * q) / 2)
    exp_diff(0, -2*q, 2*q)/2
    """
    return sp.sympify(expr).replace(lambda e: e.is_Add and e.has(sp.exp), _pair)
