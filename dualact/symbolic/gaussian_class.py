"""Closed-form Gaussian expectations of the "Gaussian class" G0 — no integration anywhere.

G0 is the span of ``xⁿ·exp(αx² + βx)`` (β may be complex, which covers sin and cos) and ``δ⁽ᵐ⁾(x)``.
For (u, v) ~ N(0, [[a, c], [c, b]]) with Λ = diag(α₁, α₂), D = det(I − 2ΣΛ) and Δ = ab − c²,

    E[exp(α₁u² + β₁u + α₂v² + β₂v)] = D^(−1/2) · exp((β₁²(a − 2α₂Δ) + 2β₁β₂c + β₂²(b − 2α₁Δ)) / (2D)),

and polynomial factors are derivatives in β. Delta terms use E[δ⁽ᵐ⁾(u)g(v)] = (−1)ᵐ ∂ᵤᵐ[φ_a(u) E[g(v) | u]]₀.
One-dimensional expectations also cover ``xⁿ·H(x)`` and ``xⁿ·erf(γx)`` (Stein's identity E[u h(u)] = q E[h'(u)]),
which the Price tier needs for its boundary data.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from dualact.symbolic.symbols import x

H = sp.Heaviside
DELTA = sp.DiracDelta


class NotInClass(Exception):
    """The expression is outside the class a rule handles."""


@dataclass(frozen=True)
class GTerm:
    """coeff·xⁿ·exp(αx² + βx) (kind "gauss") or coeff·δ⁽ⁿ⁾(x) (kind "delta")."""

    kind: str
    coeff: sp.Expr
    n: int
    alpha: sp.Expr = sp.S.Zero
    beta: sp.Expr = sp.S.Zero


def split_exp(dep):
    """dep (x-dependent product) → (n, α, β, extra constant factor) or raise NotInClass."""
    n, arg = 0, sp.S.Zero
    for f in sp.Mul.make_args(dep):
        if f == 1:
            continue
        if f == x:
            n += 1
        elif f.is_Pow and f.base == x and f.exp.is_Integer and f.exp > 0:
            n += int(f.exp)
        elif isinstance(f, sp.exp):
            arg += f.args[0]
        elif f.is_Pow and f.base is sp.E:
            arg += f.exp
        elif f.is_Pow and isinstance(f.base, sp.exp) and f.exp.is_Integer:
            arg += f.base.args[0] * f.exp
        else:
            raise NotInClass(f)
    arg = sp.expand(arg)
    if not arg.is_polynomial(x):
        raise NotInClass(arg)
    poly = sp.Poly(arg, x)
    if poly.degree() > 2:
        raise NotInClass(arg)
    alpha, beta, const = (poly.coeff_monomial(x**2), poly.coeff_monomial(x), poly.coeff_monomial(1))
    return n, alpha, beta, sp.exp(const)


def g0_terms(expr: sp.Expr) -> list[GTerm]:
    """Decompose an expression of G0 into terms; raise NotInClass otherwise."""
    expr = sp.powsimp(sp.expand(expr.rewrite(sp.exp) if expr.has(sp.sin, sp.cos, sp.sinh, sp.cosh) else expr))
    expr = sp.expand(expr)
    terms = []
    for term in sp.Add.make_args(expr):
        if term == 0:
            continue
        coeff, dep = term.as_independent(x, as_Add=False)
        if isinstance(dep, DELTA):
            if dep.args[0] != x:
                raise NotInClass(dep)
            terms.append(GTerm("delta", coeff, int(dep.args[1]) if len(dep.args) > 1 else 0))
            continue
        n, alpha, beta, extra = split_exp(dep)
        terms.append(GTerm("gauss", coeff * extra, n, alpha, beta))
    return terms


def in_g0(expr: sp.Expr) -> bool:
    try:
        g0_terms(expr)
    except NotInClass:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# one-dimensional expectations, u ~ N(0, q)

def _gauss_1d(t: GTerm, q):
    bp = sp.Dummy("beta")
    mgf = (1 - 2 * t.alpha * q) ** sp.Rational(-1, 2) * sp.exp(bp**2 * q / (2 * (1 - 2 * t.alpha * q)))
    return t.coeff * sp.diff(mgf, bp, t.n).subs(bp, t.beta)


def _delta_1d(t: GTerm, q):
    u = sp.Dummy("u")
    phi = sp.exp(-(u**2) / (2 * q)) / sp.sqrt(2 * sp.pi * q)
    return t.coeff * (-1) ** t.n * sp.diff(phi, u, t.n).subs(u, 0)


def _power_of_x(dep):
    """(n, rest) with dep = xⁿ·rest."""
    n, rest = 0, sp.S.One
    for f in sp.Mul.make_args(dep):
        if f == x:
            n += 1
        elif f.is_Pow and f.base == x and f.exp.is_Integer and f.exp > 0:
            n += int(f.exp)
        else:
            rest *= f
    return n, rest


def _erf_moment(n: int, gamma, q):
    """E[uⁿ erf(γu)], u ~ N(0, q), by Stein's identity."""
    if n % 2 == 0:
        return sp.S.Zero
    gauss = GTerm("gauss", 2 * gamma / sp.sqrt(sp.pi), n - 1, -(gamma**2), sp.S.Zero)
    out = q * _gauss_1d(gauss, q)
    if n >= 3:
        out += q * (n - 1) * _erf_moment(n - 2, gamma, q)
    return out


def expect_1d(expr: sp.Expr, q) -> sp.Expr:
    """E[σ(u)] for u ~ N(0, q), σ a sum of G0 terms, xⁿ·H(x) and xⁿ·erf(γx); raise NotInClass otherwise.

    >>> import sympy as sp
    >>> qs = sp.Symbol("q", positive=True)
    >>> sp.simplify(expect_1d(x * sp.Heaviside(x), qs))
    sqrt(2)*sqrt(q)/(2*sqrt(pi))
    """
    out = sp.S.Zero
    rest_terms = []
    for term in sp.Add.make_args(sp.expand(expr)):
        coeff, dep = term.as_independent(x, as_Add=False)
        n, rest = _power_of_x(dep)
        if rest == H(x):
            out += coeff * q ** sp.Rational(n, 2) * 2 ** (sp.Rational(n, 2) - 1) * sp.gamma(
                sp.Rational(n + 1, 2)) / sp.sqrt(sp.pi)
        elif isinstance(rest, sp.erf):
            g_coeff, g_dep = rest.args[0].as_independent(x, as_Add=False)
            if g_dep != x:
                raise NotInClass(rest)
            out += coeff * _erf_moment(n, g_coeff, q)
        else:
            rest_terms.append(term)
    for t in g0_terms(sp.Add(*rest_terms)):
        out += _gauss_1d(t, q) if t.kind == "gauss" else _delta_1d(t, q)
    return out


# ---------------------------------------------------------------------------------------------------------
# two-dimensional expectations, (u, v) ~ N(0, [[a, c], [c, b]])

def _gauss_gauss(f: GTerm, g: GTerm, a, b, c):
    b1, b2 = sp.Dummy("b1"), sp.Dummy("b2")
    delta = a * b - c**2
    det = (1 - 2 * a * f.alpha) * (1 - 2 * b * g.alpha) - 4 * f.alpha * g.alpha * c**2
    quad = b1**2 * (a - 2 * g.alpha * delta) + 2 * b1 * b2 * c + b2**2 * (b - 2 * f.alpha * delta)
    mgf = det ** sp.Rational(-1, 2) * sp.exp(quad / (2 * det))
    d = sp.diff(mgf, b1, f.n, b2, g.n) if (f.n or g.n) else mgf
    return f.coeff * g.coeff * d.subs({b1: f.beta, b2: g.beta})


def _delta_gauss(f: GTerm, g: GTerm, a, b, c):
    """E[δ⁽ᵐ⁾(u) g(v)] with v | u ~ N(cu/a, (ab − c²)/a)."""
    u, bp = sp.Dummy("u"), sp.Dummy("bp")
    mu = c * u / a
    s2 = (a * b - c**2) / a
    one = 1 - 2 * g.alpha * s2
    mgf = one ** sp.Rational(-1, 2) * sp.exp((g.alpha * mu**2 + bp * mu + bp**2 * s2 / 2) / one)
    cond = sp.diff(mgf, bp, g.n).subs(bp, g.beta)
    phi = sp.exp(-(u**2) / (2 * a)) / sp.sqrt(2 * sp.pi * a)
    return f.coeff * g.coeff * (-1) ** f.n * sp.diff(phi * cond, u, f.n).subs(u, 0)


def _delta_delta(f: GTerm, g: GTerm, a, b, c):
    u, v = sp.Dummy("u"), sp.Dummy("v")
    delta = a * b - c**2
    dens = sp.exp(-(b * u**2 - 2 * c * u * v + a * v**2) / (2 * delta)) / (2 * sp.pi * sp.sqrt(delta))
    d = sp.diff(dens, u, f.n, v, g.n) if (f.n or g.n) else dens
    return f.coeff * g.coeff * (-1) ** (f.n + g.n) * d.subs({u: 0, v: 0})


def expect_2d_terms(f_expr: sp.Expr, g_expr: sp.Expr, a, b, c) -> list[sp.Expr]:
    """E[f(u) g(v)] for f, g in G0 as a list of per-term-pair contributions (raise NotInClass otherwise)."""
    out = []
    for f in g0_terms(f_expr):
        for g in g0_terms(g_expr):
            if f.kind == "gauss" and g.kind == "gauss":
                out.append(_gauss_gauss(f, g, a, b, c))
            elif f.kind == "delta" and g.kind == "gauss":
                out.append(_delta_gauss(f, g, a, b, c))
            elif f.kind == "gauss" and g.kind == "delta":
                out.append(_delta_gauss(g, f, b, a, c))
            else:
                out.append(_delta_delta(f, g, a, b, c))
    return out


def expect_2d(f_expr: sp.Expr, g_expr: sp.Expr, a, b, c) -> sp.Expr:
    """E[f(u) g(v)] for f, g in G0 (raise NotInClass otherwise).

    >>> import sympy as sp
    >>> a, b, c = sp.symbols("a b c", positive=True)
    >>> sp.simplify(expect_2d(x, x, a, b, c))
    c
    """
    return sp.Add(*expect_2d_terms(f_expr, g_expr, a, b, c))
