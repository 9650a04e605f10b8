"""Conditional Gaussian means of piecewise polynomial × exponential activations (the one-dimensional tier).

For σ whose pieces between its kinks k_1 < … < k_m are finite sums c·xⁿ·e^{βx} (β real: ReLU shifted,
ELU, SELU, hard-tanh, rectified polynomials, …),

    g(μ, s) = E[σ(μ + s z)],  z ~ N(0, 1),  s > 0,

has a closed form: on a piece [lo, hi] the moments I_n = ∫_lo^hi xⁿ e^{βx} ψ(x) dx, ψ the N(μ, s²) density,
satisfy (integration by parts, with μ' = μ + βs² and B(x) = e^{βx − ((x−μ)/s)²/2}/√(2π))

    I_0 = e^{βμ + β²s²/2}·(Φ((hi − μ')/s) − Φ((lo − μ')/s)),
    I_{n+1} = μ' I_n + n s² I_{n−1} + s·(loⁿ B(lo) − hiⁿ B(hi)),

so no symbolic integration of Heaviside integrands is needed. The dual kernel is then the one-dimensional
integral T = E_z[σ(√q11 z)·g(c z, s)] with c = q12/√q11 and s² = (q11 q22 − q12²)/q11, evaluated by
:mod:`dualact.runtime.quadrature_1d`. This module finds the pieces (:func:`pieces_of`), builds g as a SymPy
expression (:func:`conditional_mean`) and checks it against mpmath quadrature (:func:`check_conditional_mean`).

>>> import sympy as sp
>>> from dualact.symbolic.symbols import x
>>> pcs = pieces_of(sp.Max(x - sp.Rational(1, 2), 0))
>>> [(p.lo, p.hi, p.terms) for p in pcs]
[(None, 1/2, ()), (1/2, None, ((0, (-1/2, 1)),))]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import sympy as sp

from .gaussian_class import NotInClass, split_exp
from .quadrature import find_kinks, mpmath_function
from .symbols import x

__all__ = ["Piece", "check_conditional_mean", "conditional_mean", "mu", "pieces_json", "pieces_of", "product", "s"]

mu = sp.Symbol("mu", real=True)
s = sp.Symbol("s", positive=True)
_MAX_DEGREE = 8


@dataclass(frozen=True)
class Piece:
    """σ on (lo, hi) (``None``: ∓∞) as Σ (Σ_n p_n xⁿ)·e^{βx}; ``terms`` = ((β, (p_0, p_1, …)), …)."""

    lo: sp.Expr | None
    hi: sp.Expr | None
    terms: tuple


def _decompose(e: sp.Expr) -> tuple | None:
    """Σ_β P_β(x) e^{βx} of a smooth expression in x (``None`` if it is not of that form)."""
    e = sp.expand(sp.powsimp(sp.expand(e, power_exp=True), combine="exp"), power_exp=True)
    by_beta: dict = {}
    for term in sp.Add.make_args(e):
        if term == 0:
            continue
        coeff, dep = term.as_independent(x, as_Add=False)
        if not coeff.is_number or not coeff.is_real:
            return None
        try:
            n, alpha, beta, extra = split_exp(dep)  # xⁿ·e^{αx² + βx}·extra
        except NotInClass:
            return None
        if alpha != 0 or not beta.is_number or not beta.is_real or not extra.is_number:
            return None
        coeff *= extra
        if n > _MAX_DEGREE:
            return None
        poly = by_beta.setdefault(sp.nsimplify(beta) if beta.is_Rational else beta, {})
        poly[n] = poly.get(n, 0) + coeff
    out = []
    for beta in sorted(by_beta, key=float):
        poly = by_beta[beta]
        coeffs = [sp.sympify(poly.get(i, 0)) for i in range(max(poly) + 1)]
        while coeffs and coeffs[-1] == 0:
            coeffs.pop()
        if coeffs:
            out.append((beta, tuple(coeffs)))
    return tuple(out)


def _branch(e: sp.Expr, at: float) -> sp.Expr:
    """σ on the interval containing ``at``: every Heaviside, Abs, sign, Max, Min resolved by its value there."""

    def h(arg):
        v = float(sp.N(arg.subs(x, at), 30))
        return sp.S.One if v > 0 else sp.S.Zero

    e = e.replace(sp.Max, lambda *a: max(a, key=lambda t: float(sp.N(t.subs(x, at), 30))))
    e = e.replace(sp.Min, lambda *a: min(a, key=lambda t: float(sp.N(t.subs(x, at), 30))))
    e = e.replace(sp.Abs, lambda a: a if float(sp.N(a.subs(x, at), 30)) >= 0 else -a)
    e = e.replace(sp.sign, lambda a: 2 * h(a) - 1)
    return e.replace(sp.Heaviside, lambda *a: h(a[0]))


def pieces_of(expr: sp.Expr, kinks=None) -> tuple[Piece, ...] | None:
    """The pieces of σ (numeric parameters, only the symbol x), or ``None`` when σ is not of the class.

    ``kinks``: the piece boundaries (default: σ's own kinks); pass the union of the kinks of σ and σ' to get
    both on the same partition.
    """
    expr = sp.sympify(expr)
    if expr.free_symbols - {x} or expr.has(sp.DiracDelta, sp.Piecewise, sp.floor, sp.ceiling):
        return None
    try:
        kinks = sorted(set(find_kinks(expr)) | set(kinks or ()))
    except (ValueError, TypeError, NotImplementedError):
        return None
    edges = [None, *kinks, None]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if lo is None and hi is None:
            at = 0.37
        elif lo is None:
            at = hi - 1.0
        elif hi is None:
            at = lo + 1.0
        else:
            at = 0.5 * (lo + hi)
        try:
            terms = _decompose(_branch(expr, at))
        except (TypeError, ValueError):
            return None
        if terms is None:
            return None
        out.append(Piece(_edge(lo), _edge(hi), terms))
    return tuple(out)


def _edge(v: float | None) -> sp.Expr | None:
    """A kink as a small rational where it is one exactly (1/2, -1), else a Float."""
    if v is None:
        return None
    r = Fraction(v).limit_denominator(4096)
    return sp.Rational(r.numerator, r.denominator) if float(r) == v else sp.Float(v)


def product(a: tuple[Piece, ...], b: tuple[Piece, ...]) -> tuple[Piece, ...]:
    """The pieces of σ_a·σ_b (same kinks, e.g. σ² from σ)."""
    out = []
    for pa, pb in zip(a, b, strict=True):
        ea = sum((_poly(c) * sp.exp(beta * x) for beta, c in pa.terms), sp.S.Zero)
        eb = sum((_poly(c) * sp.exp(beta * x) for beta, c in pb.terms), sp.S.Zero)
        out.append(Piece(pa.lo, pa.hi, _decompose(ea * eb)))
    return tuple(out)


def _poly(coeffs) -> sp.Expr:
    return sum((c * x**i for i, c in enumerate(coeffs)), sp.S.Zero)


def pieces_json(pieces: tuple[Piece, ...]) -> list:
    """Plain JSON data: [[lo, hi, [[β, [p_0, …]], …]], …] with floats (``None`` for ∓∞)."""
    return [
        [None if p.lo is None else float(p.lo), None if p.hi is None else float(p.hi),
         [[float(beta), [float(c) for c in cs]] for beta, cs in p.terms]]
        for p in pieces
    ]


def kernel_pieces(act: tuple[Piece, ...], der: tuple[Piece, ...]) -> dict:
    """The piece data of σ, σ', σ² and σ'² that :class:`dualact.runtime.quadrature_1d.Kernel1D` evaluates."""
    return {
        "activation": pieces_json(act),
        "derivative": pieces_json(der),
        "activation_sq": pieces_json(product(act, act)),
        "derivative_sq": pieces_json(product(der, der)),
    }


def _Phi(t):
    return sp.erfc(-t / sp.sqrt(2)) / 2


def conditional_mean(pieces: tuple[Piece, ...]) -> sp.Expr:
    """g(μ, s) = E[σ(μ + s z)] for s > 0 as a SymPy expression in :data:`mu` and :data:`s`."""
    total = sp.S.Zero
    for p in pieces:
        for beta, coeffs in p.terms:
            beta = sp.sympify(beta)
            mup = mu + beta * s**2
            scale = sp.exp(beta * mu + beta**2 * s**2 / 2)
            upper = sp.S.One if p.hi is None else _Phi((p.hi - mup) / s)
            lower = sp.S.Zero if p.lo is None else _Phi((p.lo - mup) / s)
            moments = [scale * (upper - lower)]

            def boundary(n, p=p, beta=beta):
                out = sp.S.Zero
                for xb, sgn in ((p.lo, 1), (p.hi, -1)):
                    if xb is not None:
                        out += sgn * xb**n * sp.exp(beta * xb - (xb - mu) ** 2 / (2 * s**2)) / sp.sqrt(2 * sp.pi)
                return out

            for n in range(len(coeffs) - 1):
                prev = moments[n - 1] if n >= 1 else sp.S.Zero
                moments.append(mup * moments[n] + n * s**2 * prev + s * boundary(n))
            total += sum((c * m for c, m in zip(coeffs, moments, strict=True)), sp.S.Zero)
    return total


def check_conditional_mean(expr: sp.Expr, g: sp.Expr, points=((0.3, 0.7), (-1.2, 1.9), (2.1, 0.05)),
                           dps: int = 30) -> float:
    """Largest |g − E[σ(μ + s z)]|/(1 + |E|) over ``points`` (mpmath quadrature split at the kinks)."""
    f = mpmath_function(expr)
    gf = sp.lambdify((mu, s), g, modules="mpmath")
    kinks = find_kinks(expr)
    worst = 0.0
    with mpmath.workdps(dps):
        for m, sd in points:
            m, sd = mpmath.mpf(m), mpmath.mpf(sd)
            edges = sorted({-mpmath.inf, mpmath.inf, *range(-12, 13, 2), *[(mpmath.mpf(k) - m) / sd for k in kinks]})
            ref = mpmath.quad(lambda z, m=m, sd=sd: f(m + sd * z) * mpmath.npdf(z), edges)
            val = gf(m, sd)
            worst = max(worst, float(abs(val - ref) / (1 + abs(ref))))
    return worst if math.isfinite(worst) else math.inf


def formula_lines(d) -> list[tuple[str, str]]:
    """(label, text) lines describing a ``quadrature_1d`` Derivation (for ``dualact show`` and the demo)."""
    from .derivation import _from_srepr

    cond = d.conditional or {}
    lines = [
        ("T", "E_z[σ(√q11·z)·g(c·z, s)], z ~ N(0, 1), c = q12/√q11, s = √((q11·q22 − q12²)/q11), "
              "by Gauss–Legendre panels split at the kinks"),
        ("Ṫ", "E_z[σ'(√q11·z)·gd(c·z, s)], likewise"),
    ]
    for key, name in (("g", "g(μ, s)"), ("gd", "gd(μ, s)")):
        if cond.get(key):
            lines.append((name, sp.sstr(_from_srepr(cond[key]))))
    if cond.get("kinks"):
        lines.append(("kinks", ", ".join(f"{float(k):g}" for k in cond["kinks"])))
    return lines
