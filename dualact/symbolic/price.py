"""Price's theorem tier: differentiate until the Gaussian class, evaluate, integrate back in q12.

∂ᵏK/∂cᵏ = E[f⁽ᵏ⁾(u) g⁽ᵏ⁾(v)], so with boundary data ∂ᵐK/∂cᵐ(0) = E[f⁽ᵐ⁾(u)]·E[g⁽ᵐ⁾(v)],

    K(c) = Σ_{m<k} E[f⁽ᵐ⁾]E[g⁽ᵐ⁾] cᵐ/m! + ∫₀ᶜ (c − t)ᵏ⁻¹/(k − 1)! · F(t) dt.

When f⁽ᵏ⁾, g⁽ᵏ⁾ are in the Gaussian class with β = 0, F(t) is a sum of tⁿ·λᵉ·(R − t²)ᵉ with half-integer e,
whose antiderivatives follow from reduction formulas (arcsin and algebraic terms) — never ``sympy.integrate``,
which silently returns wrong answers on these integrands.
"""

from __future__ import annotations

import functools

import sympy as sp

from dualact.symbolic import gaussian_class as gc
from dualact.symbolic.normalize import derivative

MAX_ORDER = 6


def price_order(term: sp.Expr, max_order: int = MAX_ORDER) -> int | None:
    """Smallest k with term⁽ᵏ⁾ in the Gaussian class (0 if the term already is), or None."""
    cur = term
    for k in range(max_order + 1):
        if gc.in_g0(cur):
            return k
        if sp.count_ops(cur) > 400:
            return None
        cur = derivative(cur)
    return None


# ---------------------------------------------------------------------------------------------------------
# the integrator: ∫₀ᶜ tⁿ (R − t²)ᵉ dt for half-integer e

_RG = sp.Symbol("R_generic", positive=True)
_TG = sp.Symbol("t_generic", real=True)


@functools.cache
def _definite_generic(n: int, e) -> sp.Expr:
    """∫₀^t tⁿ(R − t²)ᵉ dt in the generic symbols (R_generic, t_generic), simplified once and cached."""
    anti = _antiderivative(n, e, _RG, _TG)
    return sp.factor_terms(sp.expand(anti - anti.subs(_TG, 0)))


def _antiderivative(n: int, e, R, t):
    """An antiderivative of tⁿ(R − t²)ᵉ (e half-odd), by reduction."""
    if n >= 2:
        return sp.expand(R * _antiderivative(n - 2, e, R, t) - _antiderivative(n - 2, e + 1, R, t))
    if n == 1:
        return -((R - t**2) ** (e + 1)) / (2 * (e + 1))
    if e == sp.Rational(-1, 2):
        return sp.asin(t / sp.sqrt(R))
    if e > 0:
        return t * (R - t**2) ** e / (2 * e + 1) + 2 * e * R / (2 * e + 1) * _antiderivative(0, e - 1, R, t)
    m = -e - sp.Rational(1, 2)  # e = −(m + 1/2), m ≥ 1
    return t * (R - t**2) ** (e + 1) / ((2 * m - 1) * R) + (2 * m - 2) / ((2 * m - 1) * R) * _antiderivative(
        0, e + 1, R, t)


def _quadratic_base(base, t):
    """base = λ(R − t²) with λ, R free of t; return (λ, R) or None."""
    if not base.has(t):
        return None
    num, den = sp.fraction(sp.together(base))
    if den.has(t) or not num.is_polynomial(t):
        return None
    poly = sp.Poly(sp.expand(num), t)
    if poly.degree() != 2 or poly.coeff_monomial(t) != 0:
        return None
    lam = sp.cancel(-poly.coeff_monomial(t**2) / den)
    R = sp.cancel(poly.coeff_monomial(1) / -poly.coeff_monomial(t**2))
    return lam, R


def _reduce_w(poly_expr, W, R, t):
    """Split a polynomial in W into A(t) + W·B(t) using W² = R − t²."""
    p = sp.Poly(sp.expand(poly_expr), W)
    A, B = sp.S.Zero, sp.S.Zero
    for (k,), coeff in p.terms():
        red = coeff * (R - t**2) ** (k // 2)
        if k % 2:
            B += red
        else:
            A += red
    return sp.expand(A), sp.expand(B)


def _strip_radical_power(D, R, t):
    """D(t) = κ·(R − t²)ʳ with κ free of t → (κ, r); raise NotInClass otherwise."""
    base = sp.Poly(R - t**2, t)
    r = 0
    Dp = sp.Poly(D, t)
    while Dp.degree() > 0:
        quo, rem = sp.div(Dp, base)
        if not rem.is_zero:
            raise gc.NotInClass("denominator is not a power of the radicand")
        Dp, r = quo, r + 1
    return Dp.as_expr(), r


def integrate_from_zero(F: sp.Expr, t: sp.Symbol, c) -> sp.Expr:
    """∫₀ᶜ F(t) dt for F rational in t and one radical √(λ(R − t²)); raise NotInClass otherwise."""
    radicals = [p for p in F.atoms(sp.Pow) if p.base.has(t) and p.exp.is_Rational and not p.exp.is_Integer]
    bases = {}
    for p in radicals:
        if not (2 * p.exp).is_Integer:
            raise gc.NotInClass(p)
        qb = _quadratic_base(p.base, t)
        if qb is None:
            raise gc.NotInClass(p)
        bases[p] = qb
    Rs = {sp.expand(R) for _, R in bases.values()}
    if len(Rs) > 1:
        raise gc.NotInClass("several radicals")
    if not Rs:  # rational integrand: only polynomials are accepted
        G = sp.cancel(sp.together(F))
        num, den = sp.fraction(G)
        if den.has(t):
            raise gc.NotInClass("rational integrand")
        return sp.integrate(sp.expand(num), (t, 0, c)) / den
    R = Rs.pop()
    W = sp.Dummy("W", positive=True)
    F = F.xreplace({p: lam**p.exp * W ** (2 * p.exp) for p, (lam, _) in bases.items()})
    num, den = sp.fraction(sp.together(F))
    N0, N1 = _reduce_w(num, W, R, t)
    D0, D1 = _reduce_w(den, W, R, t)
    if D1 != 0:  # rationalise the denominator
        N0, N1 = _reduce_w((N0 + W * N1) * (D0 - W * D1), W, R, t)
        D0 = sp.expand(D0**2 - (R - t**2) * D1**2)
    kappa, r = _strip_radical_power(D0, R, t)
    out = sp.S.Zero
    for part, e0 in ((N0, -r), (N1, sp.Rational(1, 2) - r)):
        if part == 0:
            continue
        e = sp.Integer(e0) if e0 == int(e0) else e0
        poly = sp.Poly(part, t)
        if e.is_Integer and e < 0:
            quo, rem = sp.div(poly, sp.Poly((R - t**2) ** (-e), t))
            if not rem.is_zero:
                raise gc.NotInClass("logarithmic antiderivative")
            poly, e = quo, sp.S.Zero
        for (n,), coeff in poly.terms():
            if e.is_Integer:
                out += coeff * sp.integrate(sp.expand(t**n * (R - t**2) ** e), (t, 0, c))
            else:
                out += coeff * _definite_generic(int(n), e).xreplace({_TG: c, _RG: R})
    return out / kappa


# ---------------------------------------------------------------------------------------------------------

def pair_dual(f: sp.Expr, g: sp.Expr, k: int, a, b, c) -> sp.Expr:
    """K(a, b, c) = E[f(u) g(v)] by Price's theorem of order k (k = 0: Gaussian-class rule)."""
    if k == 0:
        return gc.expect_2d(f, g, a, b, c)
    out = sp.S.Zero
    fm, gm = f, g
    for m in range(k):
        ef, eg = gc.expect_1d(fm, a), gc.expect_1d(gm, b)
        out += ef * eg * c**m / sp.factorial(m)
        fm, gm = derivative(fm), derivative(gm)
    t = sp.Dummy("t", real=True)
    kernel = (c - t) ** (k - 1) / sp.factorial(k - 1)
    for F in gc.expect_2d_terms(fm, gm, a, b, t):
        if F.has(sp.exp):
            F = sp.simplify(F)
            if F.has(sp.exp):
                raise gc.NotInClass("exponential in the Price integrand")
        out += integrate_from_zero(kernel * F, t, c)
    return out


def split_by_order(sigma: sp.Expr) -> dict[int, sp.Expr] | None:
    """Group the terms of σ by their Price order; None if some term has none."""
    groups: dict[int, sp.Expr] = {}
    for term in sp.Add.make_args(sp.expand(sigma)):
        k = price_order(term)
        if k is None:
            return None
        groups[k] = groups.get(k, sp.S.Zero) + term
    return groups


def dual_by_price(sigma: sp.Expr, a, b, c) -> tuple[sp.Expr, str] | None:
    """T = E[σ(u)σ(v)] for σ whose terms all have a Price order; returns (T, tier) or None."""
    groups = split_by_order(sigma)
    if groups is None:
        return None
    orders = sorted(groups)
    total = sp.S.Zero
    for i, ki in enumerate(orders):
        for kj in orders[i:]:
            try:
                kij = pair_dual(groups[ki], groups[kj], max(ki, kj), a, b, c)
            except gc.NotInClass:
                return None
            if ki == kj:
                total += kij
            else:
                total += kij + kij.subs({a: b, b: a}, simultaneous=True)
    tier = "gaussian_class" if orders == [0] else "price"
    return total, tier
