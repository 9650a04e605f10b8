"""A structured simplifier for dual-kernel formulas (``sympy.simplify`` is slow and often times out).

Transcendental atoms (asin, atan, exp, erf, …) are frozen into symbols, each square-root radical √B is replaced by
a symbol W with W² = B, the expression becomes a rational function that is reduced modulo W² = B, collected on
the frozen symbols, and every coefficient is factored. The smallest of the candidates is kept.

>>> import sympy as sp
>>> a, b = sp.symbols("a b", positive=True)
>>> canonicalize(sp.sqrt(a*b - 1)**3 / (a*b - 1) + 0*a)
sqrt(a*b - 1)
"""

from __future__ import annotations

import sympy as sp

_FROZEN = (sp.asin, sp.acos, sp.atan, sp.atan2, sp.exp, sp.erf, sp.erfc, sp.log, sp.sin, sp.cos, sp.sinh,
           sp.cosh, sp.tanh)


def _freeze(expr):
    mapping = {}
    for cls in _FROZEN:
        for atom in expr.atoms(cls):
            if atom not in mapping:
                mapping[atom] = sp.Dummy(f"F{len(mapping)}")
    # innermost first is not needed: atoms are replaced as wholes
    return expr.xreplace(mapping), {v: k for k, v in mapping.items()}


def _split_base(base):
    """base → [(factor, multiplicity)] when √base = Π √factor^m is valid (all factors but one positive)."""
    const, factors = sp.factor_list(base)
    unknown = [f for f, _ in factors if not f.is_positive]
    if len(unknown) > 1 or (const < 0 and not unknown):
        return [(base, 1)]
    out = []
    for f, m in factors:
        if const < 0 and f is unknown[0]:
            f = -f
        out.append((f, m))
    return out, abs(const)


def _radicals(expr):
    """Map each square-root power p (exponent k/2) to its expression in positive radical symbols."""
    symbols: dict[sp.Expr, sp.Dummy] = {}
    repl = {}
    for p in expr.atoms(sp.Pow):
        if not (p.exp.is_Rational and p.exp.q == 2 and p.base.free_symbols):
            continue
        split = _split_base(sp.cancel(p.base))
        if isinstance(split, list):
            parts, const = split, 1
        else:
            parts, const = split
        value = sp.sqrt(const)
        for f, m in parts:
            W = symbols.setdefault(f, sp.Dummy("W", positive=True))
            value *= f ** (m // 2) * W ** (m % 2)
        repl[p] = value ** int(2 * p.exp)
    return repl, {W: f for f, W in symbols.items()}


def canonical_form(expr: sp.Expr) -> sp.Expr:
    """Collect on frozen atoms and radicals (reduced modulo W² = B); factor each coefficient."""
    frozen, back = _freeze(expr)
    repl, rad_syms = _radicals(frozen)
    body = frozen.xreplace(repl)
    body = body.replace(
        lambda e: e.is_Pow and e.base in rad_syms and e.exp.is_Integer and not 0 <= e.exp <= 1,
        lambda e: rad_syms[e.base] ** (int(e.exp) // 2) * e.base ** (int(e.exp) % 2),
    )
    gens = list(back) + list(rad_syms)
    if not gens:
        return sp.factor(sp.cancel(expr))
    collected = sp.collect(sp.expand(body), gens, evaluate=False)
    out = sp.S.Zero
    for mono, coeff in collected.items():
        out += sp.factor(sp.cancel(coeff)) * mono
    subs = {**back, **{W: sp.sqrt(base) for W, base in rad_syms.items()}}
    return out.xreplace(subs)


def canonicalize(expr: sp.Expr) -> sp.Expr:
    """The smallest (by ``count_ops``) of the raw, canonical and factored forms."""
    candidates = [expr]
    for fn in (canonical_form, lambda e: sp.factor_terms(canonical_form(e))):
        try:
            candidates.append(fn(expr))
        except (sp.PolynomialError, sp.polys.polyerrors.PolificationFailed, ValueError, TypeError):
            continue
    return min(candidates, key=lambda e: (sp.count_ops(e), len(sp.srepr(e))))
