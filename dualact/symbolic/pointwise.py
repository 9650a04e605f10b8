"""Pointwise σ(x), σ'(x) in forms whose evaluation does not turn an overflow into NaN.

* Products with Heaviside factors become selections, H(g)·F → ``heaviside_gate(g, F, H(0))``: evaluated as a
  product, H(g)·F is 0·inf = NaN wherever F overflows (or is undefined) on the side where g < 0 (ELU's
  e^x·H(−x) for x > 709).
* Products of exponentials become one exponential, e^a·e^b → e^{a+b}: SymPy splits e^{(x+½)cosh 3x} into
  e^{x cosh 3x}·e^{cosh(3x)/2}, which is 0·inf = NaN from x ≈ −3.

The generated JAX code (``_num.gate``) and the engine's numpy callables
(:func:`dualact.symbolic.quadrature.lambdify_numpy`) both evaluate :func:`overflow_safe` forms.

>>> import sympy as sp
>>> from dualact.symbolic.symbols import x
>>> gate_heavisides((sp.exp(x) - 1) * sp.Heaviside(-x) + x * sp.Heaviside(x) + 2 * x * sp.Heaviside(x))
heaviside_gate(-x, exp(x) - 1, 1/2) + 3*heaviside_gate(x, x, 1/2)
"""

from __future__ import annotations

import sympy as sp

__all__ = ["gate_heavisides", "heaviside_gate", "merge_exp_products", "overflow_safe"]


class heaviside_gate(sp.Function):  # noqa: N801 - printed name
    """H(g)·F with H(0) = h0, args (g, F, h0), printed as ``_num.gate(g, F, h0)``: a selection, so an F that
    overflows or is undefined where g < 0 (e^y − 1 for y > 709 in ELU(y), log of a negative number) gives 0
    there, where the product 0·inf gave NaN."""

    nargs = 3
    is_real = True

    def _eval_rewrite_as_Heaviside(self, g, f, h0, **kwargs):
        return sp.Heaviside(g, h0) * f


def gate_heavisides(expr: sp.Expr) -> sp.Expr:
    """Every product c·H(g_1)···H(g_k)·F (F not a number) becomes c·gate(g_1, ··· gate(g_k, F)), after the
    terms of each sum with the same Heaviside factors are collected under one gate."""

    def collect(add):
        groups: dict[tuple, list] = {}
        for t in add.args:
            steps = tuple(sorted((f for f in sp.Mul.make_args(t) if isinstance(f, sp.Heaviside)), key=sp.srepr))
            groups.setdefault(steps, []).append(sp.Mul(*[f for f in sp.Mul.make_args(t) if f not in steps]))
        if all(len(v) == 1 for v in groups.values()):
            return add
        return sp.Add(*[sp.Mul(*steps, sp.Add(*bodies), evaluate=False) for steps, bodies in groups.items()])

    def rewrite(mul):
        coeff, rest = mul.as_coeff_Mul()
        factors = sp.Mul.make_args(rest)
        steps = [f for f in factors if isinstance(f, sp.Heaviside)]
        body = sp.Mul(*[f for f in factors if not isinstance(f, sp.Heaviside)])
        if not steps or body.is_number:
            return mul
        for h in steps:
            body = heaviside_gate(h.args[0], body, h.args[1] if len(h.args) > 1 else sp.S.Half)
        return coeff * body

    expr = expr.replace(lambda e: e.is_Add and e.has(sp.Heaviside), collect)
    return expr.replace(lambda e: e.is_Mul and any(isinstance(f, sp.Heaviside) for f in e.args), rewrite)


def merge_exp_products(expr: sp.Expr) -> sp.Expr:
    """Every product holding several exponentials gets one, e^a·e^b·F → e^{a+b}·F.

    >>> from dualact.symbolic.symbols import x
    >>> merge_exp_products(sp.exp(x * sp.cosh(x), evaluate=False) * sp.exp(sp.cosh(x) / 2) * x)
    x*exp(x*cosh(x) + cosh(x)/2)
    """

    def merge(mul):
        exps = [f for f in mul.args if isinstance(f, sp.exp)]
        rest = [f for f in mul.args if not isinstance(f, sp.exp)]
        return sp.Mul(*rest, sp.exp(sp.Add(*[e.args[0] for e in exps])))

    return expr.replace(lambda e: e.is_Mul and sum(isinstance(f, sp.exp) for f in e.args) > 1, merge)


def overflow_safe(expr: sp.Expr) -> sp.Expr:
    """:func:`merge_exp_products`, then :func:`gate_heavisides`."""
    return gate_heavisides(merge_exp_products(expr))
