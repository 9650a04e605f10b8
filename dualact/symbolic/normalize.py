"""Normalisation of an activation into a canonical sum of terms.

Max/Min/Abs/sign become Heaviside form; Heaviside of a linear argument through 0 becomes ``H(x)`` (using
``H(-x) = 1 - H(x)``, exact also at 0 with SymPy's H(0) = 1/2); products are expanded; DiracDelta terms are
reduced to ``c·δ⁽ᵐ⁾(x)``. The result is a list of additive terms the derivation tiers work on.

>>> from dualact.symbolic.symbols import x
>>> import sympy as sp
>>> to_heaviside(sp.Max(x, x / 10))
9*x*Heaviside(x)/10 + x/10
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import sympy as sp

from dualact.errors import DivergentActivationError, NotRealValuedError
from dualact.symbolic.canonical import _run_within
from dualact.symbolic.quadrature import NUMPY_FUNCTIONS, _real_roots, mpmath_function
from dualact.symbolic.symbols import x

H = sp.Heaviside
DELTA = sp.DiracDelta


def _max2(a, b):
    return b + (a - b) * H(a - b)


def _min2(a, b):
    return a - (a - b) * H(a - b)


def _fold(fn, args):
    out = args[0]
    for arg in args[1:]:
        out = fn(out, arg)
    return out


def _heaviside_through_zero(arg):
    """H(k·x) for numeric k → H(x) or 1 − H(x); anything else unchanged."""
    coeff, rest = sp.expand(arg).as_independent(x, as_Add=False)
    if rest == x and coeff.is_number and coeff != 0:
        return H(x) if coeff > 0 else 1 - H(x)
    return H(arg)


def _is_exponential_power(e) -> bool:
    """c**f(x) with a positive constant base c (2**x): an exponential in disguise."""
    return e.is_Pow and e.base.is_positive and not e.base.has(x) and e.exp.has(x)


def to_heaviside(expr: sp.Expr) -> sp.Expr:
    """Rewrite Max, Min, Abs and sign into Heaviside form and canonicalise H(k·x); also write erfc(z) as
    1 − erf(z) and c**f(x) as exp(f(x)·log c), the forms the closed-form tiers know.

    >>> to_heaviside(sp.erfc(x) + 2**x)
    exp(x*log(2)) - erf(x) + 1
    """
    expr = expr.replace(sp.erfc, lambda z: 1 - sp.erf(z))
    expr = expr.replace(_is_exponential_power, lambda e: sp.exp(e.exp * sp.log(e.base)))
    expr = expr.replace(sp.Max, lambda *a: _fold(_max2, a))
    expr = expr.replace(sp.Min, lambda *a: _fold(_min2, a))
    expr = expr.replace(sp.Abs, lambda a: a * (2 * H(a) - 1))
    expr = expr.replace(sp.sign, lambda a: 2 * H(a) - 1)
    expr = expr.replace(H, lambda *a: _heaviside_through_zero(a[0]))
    expr = sp.expand(expr)
    return _reduce_heaviside_powers(expr)


def _reduce_heaviside_powers(expr):
    return expr.replace(lambda e: e.is_Pow and e.base == H(x) and e.exp.is_Integer and e.exp > 0, lambda e: H(x))


def reduce_deltas(expr: sp.Expr) -> sp.Expr:
    """p(x)·δ⁽ᵐ⁾(x) → Σⱼ (−1)ʲ C(m,j) p⁽ʲ⁾(0) δ⁽ᵐ⁻ʲ⁾(x), term by term (δ at 0 only)."""
    out = 0
    for term in sp.Add.make_args(sp.expand(expr)):
        deltas = [f for f in sp.Mul.make_args(term) if isinstance(f, DELTA)]
        if not deltas:
            out += term
            continue
        if len(deltas) > 1:
            raise ValueError("products of Dirac deltas are not distributions")
        d = deltas[0]
        if d.args[0] != x:
            raise ValueError("Dirac delta away from 0")
        m = int(d.args[1]) if len(d.args) > 1 else 0
        p = term / d
        for j in range(m + 1):
            pj = sp.diff(p, x, j).subs(x, 0)
            if pj != 0:
                out += (-1) ** j * sp.binomial(m, j) * pj * (DELTA(x, m - j) if m - j else DELTA(x))
    return sp.expand(out)


def derivative(expr: sp.Expr, order: int = 1) -> sp.Expr:
    """The distributional derivative, with Dirac-delta terms reduced to c·δ⁽ᵐ⁾(x)."""
    out = expr
    for _ in range(order):
        out = reduce_deltas(_reduce_heaviside_powers(sp.expand(sp.diff(out, x))))
    return out


def ae_derivative(expr: sp.Expr) -> sp.Expr:
    """The almost-everywhere derivative σ' (Dirac-delta terms dropped)."""
    d = sp.diff(expr, x)
    return sp.expand(d.replace(lambda e: isinstance(e, DELTA), lambda e: sp.S.Zero))


def jump_at_zero(expr: sp.Expr) -> sp.Expr:
    """σ(0+) − σ(0−) for an expression in Heaviside form (0 for continuous σ)."""
    right = expr.subs(H(x), 1)
    left = expr.subs(H(x), 0)
    return sp.simplify(sp.limit(right - left, x, 0))


def is_continuous(expr: sp.Expr) -> bool:
    """True when σ has no jump (kinks allowed)."""
    shifted = [h for h in expr.atoms(H) if h.args[0] != x]
    if shifted:
        # a jump at a shifted kink k: coefficient of H(x-k) evaluated at k
        for h in shifted:
            k_roots = sp.solve(h.args[0], x)
            coeff = sp.expand(expr).coeff(h)
            if any(sp.simplify(coeff.subs(x, r)) != 0 for r in k_roots):
                return False
    return jump_at_zero(expr) == 0 if expr.has(H(x)) else True


def homogeneity_degree(expr: sp.Expr) -> int | None:
    """k if σ(λx) = λᵏσ(x) for all λ > 0 (σ in Heaviside form), else None.

    >>> homogeneity_degree(x * sp.Heaviside(x)), homogeneity_degree(2 * sp.Heaviside(x) - 1)
    (1, 0)
    """
    degrees = set()
    for term in sp.Add.make_args(sp.expand(expr)):
        coeff, dep = term.as_independent(x, as_Add=False)
        factors = sp.Mul.make_args(dep)
        n = 0
        for f in factors:
            if f == x:
                n += 1
            elif f.is_Pow and f.base == x and f.exp.is_Integer and f.exp > 0:
                n += int(f.exp)
            elif f == H(x) or f == 1:
                continue
            else:
                return None
        degrees.add(n)
    if len(degrees) != 1:
        return None
    return degrees.pop()


def substitute_values(expr: sp.Expr, params: dict | None, label: str = "σ") -> sp.Expr:
    """σ with the parameters that have values (keys: names or symbols; ``None`` = left symbolic) substituted.

    Raise NotRealValuedError where a value makes σ complex in a way SymPy refuses to build, e.g.
    ``Max(x, log(a)**a)`` at a = 1/2 (Heaviside of a complex argument).

    >>> a = sp.Symbol("a", real=True)
    >>> substitute_values(a * x, {"a": 2})
    2*x
    """
    values = {str(k): v for k, v in (params or {}).items() if v is not None}
    try:
        return expr.subs({s: values[s.name] for s in expr.free_symbols if s.name in values})
    except (ValueError, TypeError) as err:
        shown = ", ".join(f"{k} = {v}" for k, v in sorted(values.items()))
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise NotRealValuedError(f"{label} = {expr} is not real-valued at {shown}: {reason}") from None


def check_exp_growth(expr: sp.Expr, label: str = "σ", where: str = "") -> None:
    """Raise DivergentActivationError if some exp(P(x)) in ``expr`` has P of degree ≥ 3, or of degree 2 with a
    leading coefficient known to be positive (σ² then outgrows every Gaussian). ``where`` is appended to the
    message (e.g. the parameter values a kernel was evaluated at)."""
    for sub in expr.atoms(sp.exp):
        arg = sub.args[0]
        if arg.is_polynomial(x):
            poly = sp.Poly(arg, x)
            if poly.degree() >= 3 or (poly.degree() == 2 and poly.LC().is_positive):
                raise DivergentActivationError(
                    f"E[{label}(u)²] diverges for Gaussian u{where}: {sub} grows like exp(εx²) or faster"
                )


def check_second_moment(expr: sp.Expr, params: dict | None = None, label: str = "σ") -> None:
    """Raise DivergentActivationError if E[σ(u)²] = ∞: σ grows like exp(εx²) or faster, or has a
    non-square-integrable singularity. ``label`` names the function in the message (``"σ'"`` when the
    a.e. derivative is checked: the NTK factor needs E[σ'(u)²] < ∞)."""
    e = substitute_values(expr, params, label)
    check_exp_growth(e, label)
    if e.free_symbols - {x}:
        return  # symbolic parameters: only the structural check above applies (values are checked at use)
    f = mpmath_function(e)
    for point in _singular_points(e):
        if not _square_integrable_near(f, point):
            raise DivergentActivationError(
                f"E[{label}(u)²] diverges for Gaussian u: {label} = {expr} has a non-square-integrable singularity "
                f"at x = {point}"
            )
    with mpmath.workdps(30):
        growth = []
        for point in (1e3, 1e4):
            top = max(_magnitude(f, e, sgn * point) for sgn in (1, -1))
            growth.append(mpmath.inf if top == mpmath.inf else (mpmath.log(top) / point**2 if top > 1 else 0))
    # log|σ|/x² tends to a positive constant for exp(εx²)-type growth and decays like 1/x for exp(bx)
    if growth[1] == mpmath.inf or (growth[1] > 1e-6 and growth[1] > 0.5 * growth[0]):
        raise DivergentActivationError(
            f"E[{label}(u)²] diverges for Gaussian u of large variance: {label} = {expr} grows like exp(εx²) or faster"
        )


def _magnitude(f, e: sp.Expr, point: float, seconds: float = 2.0):
    """|σ(point)| (mpmath, working precision), ``inf`` where σ overflows there.

    mpmath's cost grows with the exponent of the result, so a super-exponential σ such as cosh(cosh(exp(x)))
    never returns at x = 10⁴: after ``seconds`` the float64 value decides (finite, e.g. exp(−exp(x)) → 0, or
    overflowed → ``inf``).
    """
    try:
        done, value = _run_within(seconds, lambda: abs(mpmath.mpmathify(f(mpmath.mpf(point)))))
    except (OverflowError, MemoryError, ZeroDivisionError, ValueError, TypeError):
        return mpmath.inf
    if done:
        return value
    with np.errstate(all="ignore"):
        try:
            v = float(sp.lambdify(x, e, [NUMPY_FUNCTIONS, "numpy"])(np.float64(point)))
        except (OverflowError, MemoryError, ZeroDivisionError, ValueError, TypeError):
            return mpmath.inf
    return mpmath.mpf(abs(v)) if math.isfinite(v) else mpmath.inf


def _singular_points(e: sp.Expr) -> list[sp.Expr]:
    """Real zeros of the denominators and logarithm arguments of σ (where it may blow up)."""
    bases = [p.base for p in e.atoms(sp.Pow) if p.exp.is_negative]
    bases += [lg.args[0] for lg in e.atoms(sp.log)]
    points: set = set()
    for base in bases:
        b = base.replace(lambda t: isinstance(t, sp.Abs), lambda t: t.args[0])
        for branch in (1, 0):  # Heaviside(·) → 1 and → 0: the polynomial on each side of a kink
            bb = b.replace(lambda t: isinstance(t, sp.Heaviside), lambda t, v=branch: sp.Integer(v))
            if not bb.has(x):
                continue
            if not bb.is_polynomial(x):  # e.g. 3x(1 + exp(−x/3π)), sigmoid(·)/(3x) combined: zeros numerically
                points.update(sp.Float(r, 30) for r in _real_roots(bb))
                continue
            try:
                points.update(sp.Poly(bb, x).real_roots())
            except (sp.PolynomialError, NotImplementedError):
                continue
    return sorted(points, key=lambda r: float(r))


def _square_integrable_near(f, point) -> bool:
    """Whether σ² is integrable at ``point``: h·σ(point ± h)² must tend to 0 as h → 0.

    Decided at h = 1e-8, 1e-16, 1e-24 (50 digits): a non-integrable σ² ≳ c/h keeps h·σ² from decaying
    (1/x, |x|^(-1/2)); log-type and removable singularities (log|x|, sin(x)/x) decay.
    """
    with mpmath.workdps(50):
        x0 = mpmath.mpf(sp.N(point, 60))
        for sgn in (1, -1):
            vals = []
            for h in (mpmath.mpf("1e-8"), mpmath.mpf("1e-16"), mpmath.mpf("1e-24")):
                try:
                    done, v = _run_within(_PROBE_SECONDS, lambda h=h, sgn=sgn: h * abs(mpmath.mpmathify(
                        f(x0 + sgn * h))) ** 2)
                except (ZeroDivisionError, OverflowError, ValueError, TypeError):
                    return False
                if not done:
                    break  # e.g. sin(exp(1/h)): reducing a 10^(10^8) argument; the values so far decide
                vals.append(v)
            if not all(mpmath.isfinite(v) for v in vals):
                return False
            if len(vals) == 3 and vals[2] > 1e-6 and vals[2] > 0.9 * vals[1] and vals[1] > 0.9 * vals[0]:
                return False
    return True


_PROBE_SECONDS = 2.0  # per evaluation of σ next to a singular point


def check_real_valued(expr: sp.Expr, params: dict | None = None) -> None:
    """Raise NotRealValuedError if σ is undefined or complex somewhere on the real line (e.g. log(x), sqrt(x)).

    Parameters left symbolic are probed at a few values; σ passes if it is real-valued at one of them (a
    parameter may have a valid range, e.g. ``Max(x, log(a)**a)`` needs a ≥ 1)."""
    e = substitute_values(expr, params)
    symbolic = e.free_symbols - {x}
    if not symbolic:
        return _check_real_on_line(e, expr, "")
    first = None
    for probe in (sp.Rational(7, 10), sp.Rational(23, 10)):
        probes = {s.name: probe for s in symbolic}
        try:
            return _check_real_on_line(substitute_values(e, probes), expr, f" (parameters at {probe})")
        except NotRealValuedError as err:
            first = first or err
    raise first


def _check_real_on_line(e: sp.Expr, expr: sp.Expr, where: str) -> None:
    f = mpmath_function(e)
    with mpmath.workdps(20):
        for point in (-7.3, -2.1, -0.6, -0.01, 0.01, 0.6, 2.1, 7.3):
            try:
                v = mpmath.mpmathify(f(mpmath.mpf(point)))
            except (ZeroDivisionError, ValueError, TypeError):
                v = mpmath.nan
            if isinstance(v, mpmath.mpc) and abs(v.imag) > 1e-15 * max(1, abs(v.real)) or not mpmath.isfinite(v):
                raise NotRealValuedError(f"σ = {expr} is not a finite real number at x = {point}{where}")
