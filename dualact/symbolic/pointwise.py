"""Pointwise σ(x), σ'(x) in forms whose evaluation does not turn an overflow into NaN.

* Products with Heaviside factors become selections, H(g)·F → ``heaviside_gate(g, F, H(0))``, and a sum with
  at most three Heaviside arguments the branch of their signs, ``sign_select(g, value for g > 0, for g < 0, at 0)``:
  evaluated as a product, H(g)·F is 0·inf = NaN wherever F overflows (or is undefined) on the side where g < 0
  (ELU's e^x·H(−x) for x > 709), and a sum of such products leaves rounding noise where it cancels.
* Products of exponentials become one exponential, e^a·e^b → e^{a+b}: SymPy splits e^{(x+½)cosh 3x} into
  e^{x cosh 3x}·e^{cosh(3x)/2}, which is 0·inf = NaN from x ≈ −3.

The generated JAX code (``_num.gate``) and the engine's numpy callables
(:func:`dualact.symbolic.quadrature.lambdify_numpy`) both evaluate :func:`overflow_safe` forms.

>>> import sympy as sp
>>> from dualact.symbolic.symbols import x
>>> gate_heavisides((sp.exp(x) - 1) * sp.Heaviside(-x) + 3 * x * sp.Heaviside(x))
sign_select(-x, exp(x) - 1, 3*x, 3*x/2 + exp(x)/2 - 1/2)
>>> gate_heavisides(x * sp.Heaviside(x) * sp.Heaviside(1 - x))
heaviside_gate(1 - x, heaviside_gate(x, x, 1/2), 1/2)
"""

from __future__ import annotations

import sympy as sp

__all__ = ["gate_heavisides", "heaviside_gate", "merge_exp_products", "overflow_safe", "sign_select"]


class heaviside_gate(sp.Function):  # noqa: N801 - printed name
    """H(g)·F with H(0) = h0, args (g, F, h0), printed as ``_num.gate(g, F, h0)``: a selection, so an F that
    overflows or is undefined where g < 0 (e^y − 1 for y > 709 in ELU(y), log of a negative number) gives 0
    there, where the product 0·inf gave NaN."""

    nargs = 3
    is_real = True

    def _eval_rewrite_as_Heaviside(self, g, f, h0, **kwargs):
        return sp.Heaviside(g, h0) * f


class sign_select(sp.Function):  # noqa: N801 - printed name
    """The branch of (positive, negative, zero) chosen by the sign of g; args (g, positive, negative, zero),
    printed as ``_num.by_sign(g, positive, negative, zero)``."""

    nargs = 4
    is_real = True


_MAX_REGION_ARGUMENTS = 3  # distinct Heaviside arguments split into sign regions (3^k branches)


def _arguments(heavisides) -> list[sp.Expr] | None:
    """The distinct arguments g of the Heavisides, up to sign (H(−g) counts as g), in a deterministic order;
    None if there are more than :data:`_MAX_REGION_ARGUMENTS`."""
    args: list[sp.Expr] = []
    for a in sorted((h.args[0] for h in heavisides), key=sp.default_sort_key):
        if not any(sp.expand(a - g) == 0 or sp.expand(a + g) == 0 for g in args):
            args.append(a)
    return args if len(args) <= _MAX_REGION_ARGUMENTS else None


def _by_region(add):
    """A sum of Heaviside products with at most three distinct arguments ±g as nested sign_select(g, value for
    g > 0, for g < 0, at g = 0), each branch the sum with the Heavisides of g replaced by 1 or 0 (H(0) at
    g = 0), so that SymPy cancels what the branch cancels: x − ½ − (x − ½)H(½ − x) is then exactly 0 for
    x < ½ (evaluated as written it left ~1e-17 of rounding noise where relu(x − ½)'s far tail is e^{−125}),
    and e^{3x} − e^{3x}H(x) in max(elu(3x), p(x)) is 0 for x > 0 (in floating point it swallowed 3x from
    x ≈ 12)."""
    hs = {f for t in add.args for f in sp.Mul.make_args(t) if isinstance(f, sp.Heaviside)}
    products = [t for t in add.args if t.has(sp.Heaviside) and not t.as_independent(sp.Heaviside)[0].is_number]
    if not hs or not products:  # only c·H(g) terms: nothing to overflow or cancel
        return add
    args = _arguments(hs)
    if args is None:
        return add

    def split(expr, gs):
        if not gs:
            return expr
        g, rest = gs[0], gs[1:]
        mine = {h for h in expr.atoms(sp.Heaviside)
                if sp.expand(h.args[0] - g) == 0 or sp.expand(h.args[0] + g) == 0}

        def value(sign):
            rep = {}
            for h in mine:
                h0 = h.args[1] if len(h.args) > 1 else sp.S.Half
                same = sp.expand(h.args[0] - g) == 0
                rep[h] = h0 if sign == 0 else sp.S.One if (sign > 0) == same else sp.S.Zero
            return split(expr.xreplace(rep), rest)

        return sign_select(g, value(1), value(-1), value(0))

    return split(add, args)


def gate_heavisides(expr: sp.Expr) -> sp.Expr:
    """A sum of Heaviside products with at most three distinct arguments becomes nested ``sign_select``
    (:func:`_by_region`); any other product c·H(g_1)···H(g_k)·F (F not a number) becomes
    c·gate(g_1, ··· gate(g_k, F))."""

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

    expr = expr.replace(lambda e: e.is_Add and e.has(sp.Heaviside), _by_region)
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
