"""The engine's dual kernels against independent references.

* 2-D kink-aware Gauss–Legendre quadrature (:func:`dualact.symbolic.quadrature.dual_reference`) at random
  off-sphere points, ≤ 1e-12 normalised (Hermite tables: ≤ 1e-8 for variances in [1/16, 16]);
* Monte Carlo with 10⁶ samples, within 5 standard errors;
* the closed forms of ``../shared/reference/papers.md`` §1.3 (Cho & Saul arc-cosine kernels, Williams' erf,
  GeLU, sin/cos, exp, Gaussian, Abs, Leaky/AB-ReLU, Rbf, monomials, Hermite polynomials at non-unit variance)
  at rational (q11, q12, q22), to 50 significant digits (``sympy.N(…, 50)``). Polynomial activations are also
  checked against an exact Wick-moment computation (independent of the table).

Every row checked here agrees with the engine to 50 digits as printed in the digest (no errata found); the
Hermite-polynomial row (q12^k) holds only at unit variance, so those kernels are checked against Wick moments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
from _engine import SPECS, kernel, numeric_activation, reference

import dualact
from dualact.symbolic.symbols import q, q11, q12, q22, x

P = q11 * q22
RHO = q12 / sp.sqrt(P)
THETA = sp.acos(RHO)
S = q11 + q22
pi = sp.pi


pytestmark = pytest.mark.usefixtures("private_derivation_cache")


# --------------------------------------------------------------------------------------------- quadrature
def _random_points(seed: int, n: int, log2_range: float):
    rng = np.random.default_rng(seed)
    a = 2.0 ** rng.uniform(-log2_range, log2_range, n)
    b = 2.0 ** rng.uniform(-log2_range, log2_range, n)
    r = rng.uniform(-0.99, 0.99, n)
    r[0] = 0.97  # near the edge
    return list(zip(a, r * np.sqrt(a * b), b, strict=True))


@pytest.mark.parametrize("name", list(SPECS))
def test_agrees_with_quadrature(name):
    k = kernel(name)
    hermite = SPECS[name].method == "hermite"
    tol = 1e-8 if hermite else 1e-12
    act = numeric_activation(k, SPECS[name].call)
    for a, c, b in _random_points(hash(name) % 2**32, 3, 4.0 if hermite else 6.0):
        for derivative, fn, dg in ((False, k.nngp, k.diag), (True, k.ntk_factor, k.ntk_diag)):
            ref = reference(act, a, b, c, derivative=derivative)
            scale = math.sqrt(float(dg(a)) * float(dg(b)))
            err = abs(float(fn(a, c, b)) - ref)
            assert err <= tol * scale + 1e-300, (fn.__name__, a, c, b, err / max(scale, 1e-300))


# --------------------------------------------------------------------------------------------- Monte Carlo
_MC = {
    "relu": lambda t: np.maximum(t, 0.0),
    "step": lambda t: (t > 0).astype(float),
    "erf": None,  # scipy.special.erf
    "sin": np.sin,
    "affine_relu": lambda t: 3 * np.maximum(2 * t, 0.0) + 1,
}


@pytest.mark.parametrize("name", list(_MC))
def test_agrees_with_monte_carlo(name):
    from scipy.special import erf

    f = _MC[name] or erf
    k = kernel(name)
    rng = np.random.default_rng(1234)
    n = 10**6
    z1, z2 = rng.standard_normal(n), rng.standard_normal(n)
    for a, rho, b in [(0.7, 0.6, 2.3), (3.0, -0.4, 0.5)]:
        u = math.sqrt(a) * z1
        v = math.sqrt(b) * (rho * z1 + math.sqrt(1 - rho**2) * z2)
        vals = f(u) * f(v)
        mean, se = vals.mean(), vals.std(ddof=1) / math.sqrt(n)
        assert abs(float(k.nngp(a, rho * math.sqrt(a * b), b)) - mean) <= 5 * se, (a, rho, b)


# --------------------------------------------------------------------------------------------- papers.md
def _abrelu(a, b):
    a, b = sp.sympify(a), sp.sympify(b)
    T = (a - b) ** 2 / (2 * pi) * sp.sqrt(P - q12**2) + ((a**2 + b**2) / 2 - (a - b) ** 2 * THETA / (2 * pi)) * q12
    Td = (a**2 + b**2) / 2 - (a - b) ** 2 * THETA / (2 * pi)
    return T, Td, (a**2 + b**2) / 2 * q


def _cho_saul_J(k: int) -> sp.Expr:
    """J_k(θ) = (−1)^k sin^{2k+1}θ ((1/sinθ)∂_θ)^k ((π−θ)/sinθ)."""
    t = sp.Symbol("t")
    f = (pi - t) / sp.sin(t)
    for _ in range(k):
        f = sp.diff(f, t) / sp.sin(t)
    return sp.simplify((-1) ** k * sp.sin(t) ** (2 * k + 1) * f), t


def _rectified(k: int):
    def T_of(j):
        J, t = _cho_saul_J(j)
        return sp.sqrt(P) ** j / (2 * pi) * J.subs(t, THETA)

    T = T_of(k)
    Td = sp.S.Zero if k == 0 else k**2 * T_of(k - 1)
    return T, Td, sp.factorial2(2 * k - 1) * q**k / 2


def _erf_family(a, b, c):
    d1, d2 = 1 + 2 * b**2 * q11, 1 + 2 * b**2 * q22
    T = a**2 * 2 / pi * sp.asin(2 * b**2 * q12 / sp.sqrt(d1 * d2)) + c**2
    Td = a**2 * b**2 * 4 / pi / sp.sqrt(d1 * d2 - 4 * b**4 * q12**2)
    diag = a**2 * 2 / pi * sp.asin(2 * b**2 * q / (1 + 2 * b**2 * q)) + c**2
    return T, Td, diag


def _gelu():
    D2 = (1 + q11) * (1 + q22) - q12**2
    D = sp.sqrt(D2)
    A = sp.asin(q12 / sp.sqrt((1 + q11) * (1 + q22)))
    T = q12 / 4 + (1 / (2 * pi)) * ((q12**2 + P * D2) / ((1 + q11) * (1 + q22) * D) + q12 * A)
    Td = sp.Rational(1, 4) + A / (2 * pi) + q12 / (2 * pi * D) * (1 / D2 + (1 - P) / ((1 + q11) * (1 + q22)) + 1)
    r = sp.sqrt(1 + 2 * q)
    diag = q * (sp.Rational(1, 4) + (1 / pi) * (q / ((q + 1) * r) + sp.atan(q / r) / 2))
    return T, Td, diag


def _sin_family(a, b, c):
    s1 = sp.exp(b**2 * (-S / 2 + q12))
    s2 = sp.exp(b**2 * (-S / 2 - q12)) * sp.cos(2 * c)
    return a**2 / 2 * (s1 - s2), a**2 * b**2 / 2 * (s1 + s2), a**2 / 2 * (1 - sp.exp(-2 * b**2 * q) * sp.cos(2 * c))


def _exp_family(a, b):
    T = a**2 * sp.exp(b**2 * (S / 2 + q12))
    return T, b**2 * T, a**2 * sp.exp(2 * b**2 * q)


def _gaussian_family(a, b):
    d1, d2 = 1 - 2 * b * q11, 1 - 2 * b * q22
    R = d1 * d2 - 4 * b**2 * q12**2
    return a**2 / sp.sqrt(R), a**2 * 4 * b**2 * q12 / R ** sp.Rational(3, 2), a**2 / sp.sqrt(1 - 4 * b * q)


def _wick(poly: sp.Expr):
    """Exact E[p(u)p(v)], E[p'(u)p'(v)], E[p(u)²] for a polynomial p by Gaussian moments (independent check)."""
    z1, z2 = sp.symbols("z1 z2")
    u = sp.sqrt(q11) * z1
    v = RHO * sp.sqrt(q22) * z1 + sp.sqrt(q22 - q22 * RHO**2) * z2

    def moment(e):
        e = sp.Poly(sp.expand(e), z1, z2)
        return sum(c * sp.factorial2(i - 1) * sp.factorial2(j - 1) for (i, j), c in e.terms() if i % 2 == 0 == j % 2)

    dp = sp.diff(poly, x)
    T = moment(poly.subs(x, u) * poly.subs(x, v))
    Td = moment(dp.subs(x, u) * dp.subs(x, v))
    diag = moment(poly.subs(x, sp.sqrt(q) * z1) ** 2)
    return T, Td, diag


def _monomial_digest(k: int):
    table = {
        2: 2 * q12**2 + P,
        3: 6 * q12**3 + 9 * q12 * P,
        4: 24 * q12**4 + 72 * q12**2 * P + 9 * P**2,
        5: 120 * q12**5 + 600 * q12**3 * P + 225 * q12 * P**2,
    }
    lower = {1: q12, 0: sp.S.One, **table}
    return table[k], k**2 * lower[k - 1], sp.factorial2(2 * k - 1) * q**k


def _hermite_poly(k: int) -> sp.Expr:
    return sp.hermite_prob(k, x) / sp.sqrt(sp.factorial(k))


a_, b_, c_, al_ = (sp.Symbol(n, real=True) for n in ("a", "b", "c", "alpha"))

# name -> (source, params (None = symbolic), reference formulas (T, Ṫ, diag), parameter values, slow?)
PAPERS = {
    "relu (Cho–Saul k=1)": ("relu(x)", None, lambda: _rectified(1), {}, False),
    "step (Cho–Saul k=0)": ("step(x)", None, lambda: _rectified(0), {}, False),
    "rectified square (Cho–Saul k=2)": ("x**2*Heaviside(x)", None, lambda: _rectified(2), {}, False),
    "rectified cube (Cho–Saul k=3)": ("x**3*Heaviside(x)", None, lambda: _rectified(3), {}, True),
    "relu as ABReLU(0, 1)": ("relu(x)", None, lambda: _abrelu(0, 1), {}, False),
    "abs": (
        "Abs(x)", None,
        lambda: ((2 / pi) * sp.sqrt(P - q12**2) + (1 - 2 * THETA / pi) * q12, 1 - 2 * THETA / pi, q), {}, False,
    ),
    "sign": ("sign(x)", None, lambda: (1 - 2 * THETA / pi, sp.S.Zero, sp.S.One), {}, False),
    "leaky relu": ("Max(x, 0) + alpha*Min(x, 0)", {"alpha": None}, lambda: _abrelu(al_, 1), {"alpha": "1/7"}, False),
    "abrelu": ("a*Min(x, 0) + b*Max(x, 0)", {"a": None, "b": None}, lambda: _abrelu(a_, b_),
               {"a": "-2/5", "b": "3/2"}, True),
    "erf (Williams)": ("a*erf(b*x) + c", {"a": None, "b": None, "c": None}, lambda: _erf_family(a_, b_, c_),
                       {"a": "3/2", "b": "7/10", "c": "-3/10"}, False),
    "gelu": ("x*erf(x/sqrt(2))/2 + x/2", None, _gelu, {}, False),
    "sin family": ("a*sin(b*x + c)", {"a": None, "b": None, "c": None}, lambda: _sin_family(a_, b_, c_),
                   {"a": "4/3", "b": "3/5", "c": "1/3"}, False),
    "sin": ("sin(x)", None, lambda: _sin_family(1, 1, 0), {}, True),
    "cos": ("cos(x)", None, lambda: (sp.exp(-S / 2) * sp.cosh(q12), sp.exp(-S / 2) * sp.sinh(q12),
                                     (1 + sp.exp(-2 * q)) / 2), {}, True),
    "exp family": ("a*exp(b*x)", {"a": None, "b": None}, lambda: _exp_family(a_, b_), {"a": "2/3", "b": "-5/4"},
                   False),
    "gaussian exp(-x²/2)": (
        "exp(-x**2/2)", None,
        lambda: (1 / sp.sqrt((1 + q11) * (1 + q22) - q12**2),
                 q12 / ((1 + q11) * (1 + q22) - q12**2) ** sp.Rational(3, 2), 1 / sp.sqrt(1 + 2 * q)), {}, False,
    ),
    "gaussian family": ("a*exp(b*x**2)", {"a": None, "b": None}, lambda: _gaussian_family(a_, b_),
                        {"a": "5/4", "b": "-1/3"}, True),
    "rbf": ("sqrt(2)*sin(sqrt(2*gamma)*x + pi/4)", {"gamma": 1.0},
            lambda: (sp.exp(-sp.Rational(3, 2) * (S - 2 * q12)), 3 * sp.exp(-sp.Rational(3, 2) * (S - 2 * q12)),
                     sp.S.One), {"gamma": "3/2"}, True),
    "monomial x³": ("x**3", None, lambda: _monomial_digest(3), {}, False),
    "monomial x⁴": ("x**4", None, lambda: _monomial_digest(4), {}, False),
    "monomial x²": ("x**2", None, lambda: _monomial_digest(2), {}, True),
    "monomial x⁵": ("x**5", None, lambda: _monomial_digest(5), {}, True),
    "hermite h3 (any variance)": (sp.sstr(sp.expand(_hermite_poly(3))), None, lambda: _wick(_hermite_poly(3)), {},
                                  False),
    "hermite h2 (any variance)": (sp.sstr(sp.expand(_hermite_poly(2))), None, lambda: _wick(_hermite_poly(2)), {},
                                  True),
    "hermite h4 (any variance)": (sp.sstr(sp.expand(_hermite_poly(4))), None, lambda: _wick(_hermite_poly(4)), {},
                                  True),
}

RATIONAL_POINTS = [
    (sp.Rational(3, 2), sp.Rational(2, 5), sp.Rational(5, 7)),
    (sp.Rational(1, 3), sp.Rational(-1, 4), sp.Integer(2)),
    (sp.Rational(7, 4), sp.Rational(6, 5), sp.Rational(9, 8)),
]
Q_DIAG = sp.Rational(5, 3)


def _n50(e: sp.Expr, values: dict[str, sp.Expr]) -> sp.Float:
    by_name = {s.name: s for s in e.free_symbols}
    return sp.N(e.xreplace({by_name[n]: v for n, v in values.items() if n in by_name}), 50)


def _agree(derived: sp.Expr, ref: sp.Expr, values: dict[str, sp.Expr], what: str) -> None:
    d, r = _n50(derived, values), _n50(ref, values)
    assert d.is_number and r.is_number, (what, d, r)
    assert abs(d - r) <= sp.Float("1e-45", 50) * max(1, abs(r)), (what, d, r)


def _derivation(source, params, fresh: bool):
    from dualact.symbolic.derive import derive

    if source == "x*erf(x/sqrt(2))/2 + x/2" and not fresh:
        return dualact.catalog.get("gelu").derivation  # the shipped engine output (a fresh derivation takes ~40 s)
    # fresh: the catalog's budget (Entry.derive), so a loaded machine does not push GeLU past the default 60 s
    # into the Hermite fallback; the time under the default budget is measured by benchmarks/derive.py
    return derive(source, params, use_cache=not fresh, time_budget=240.0 if fresh else 60.0)


def _check_paper(name: str, fresh: bool) -> None:
    source, params, formulas, pvals, _ = PAPERS[name]
    d = _derivation(source, params, fresh)
    assert d.method == "closed_form", d.method
    T, Td, diag = formulas()
    values = {n: sp.Rational(v) for n, v in pvals.items()}
    for a, c, b in RATIONAL_POINTS:
        pt = {"q11": a, "q12": c, "q22": b, **values}
        _agree(d.nngp, T, pt, "T")
        _agree(d.ntk_factor, Td, pt, "Ṫ")
    _agree(d.diag, diag, {"q": Q_DIAG, **values}, "diag")
    _agree(d.ntk_diag, Td.xreplace({q11: q, q22: q}).subs(q12, q), {"q": Q_DIAG, **values}, "ntk_diag")


@pytest.mark.parametrize("name", [n for n, v in PAPERS.items() if not v[4]])
def test_papers_formulas_50_digits(name):
    _check_paper(name, fresh=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPERS))
def test_papers_formulas_50_digits_fresh(name):
    """All rows, every one derived afresh (no cache, no catalog)."""
    _check_paper(name, fresh=True)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_monomial_digest_rows_match_wick(k):
    """The digest's monomial rows are exact Gaussian moments."""
    T, Td, diag = _monomial_digest(k)
    W = _wick(x**k)
    for a, c, b in RATIONAL_POINTS:
        pt = {"q11": a, "q12": c, "q22": b}
        _agree(T, W[0], pt, "T")
        _agree(Td, W[1], pt, "Ṫ")
    _agree(diag, W[2], {"q": Q_DIAG}, "diag")


def test_hermite_polynomials_are_not_q12_power_off_the_sphere():
    """neural-tangents' Hermite(k) dual q12^k holds only at unit variance; the engine is right at any variance."""
    k = kernel("cubic")  # warm-up shared with the property tests
    assert k is not None
    T, _, _ = _wick(_hermite_poly(3))
    unit = {"q11": sp.Integer(1), "q12": sp.Rational(1, 3), "q22": sp.Integer(1)}
    off = {"q11": sp.Integer(2), "q12": sp.Rational(1, 3), "q22": sp.Rational(1, 2)}
    _agree(T, q12**3, unit, "unit variance")
    assert abs(_n50(T, off) - _n50(q12**3, off)) > 0.1


def test_digest_gelu_ntk_is_price_of_its_nngp():
    """The digest's GeLU Ṫ (the least obvious row) is ∂T/∂q12 of its T, and matches quadrature."""
    from dualact.symbolic.quadrature import dual_reference

    T, Td, _ = _gelu()
    pt = {"q11": sp.Rational(3, 2), "q12": sp.Rational(2, 5), "q22": sp.Rational(5, 7)}
    _agree(sp.diff(T, q12), Td, pt, "Price")
    gelu = x * sp.erf(x / sp.sqrt(2)) / 2 + x / 2
    assert abs(float(_n50(Td, pt)) - dual_reference(gelu, 1.5, 5 / 7, 0.4, derivative=True)) < 1e-13


def test_steep_erf_keeps_its_closed_form(tmp_path, monkeypatch):
    """erf(100x): the gate's reference quadrature resolves the steep transition (panel points), so the exact
    arcsine kernel is accepted; it used to be rejected and replaced by a Hermite series 37% off at ρ = 0.999."""
    monkeypatch.setenv("DUALACT_CACHE_DIR", str(tmp_path))
    k = dualact.derive("erf(100*x)")
    assert k.method == "closed_form"
    a2, q1, q2 = 1e4, 2.5, 0.3
    c = 0.999 * math.sqrt(q1 * q2)
    ntk = 4 * a2 / math.pi / math.sqrt((1 + 2 * a2 * q1) * (1 + 2 * a2 * q2) - 4 * a2 * a2 * c * c)
    assert float(k.ntk_factor(q1, c, q2)) == pytest.approx(ntk, rel=1e-12)


@pytest.mark.parametrize("src", ["sign(x + 0.3)", "relu(x - 5)"])
def test_shifted_kinks_stay_in_the_one_dimensional_tier(src, tmp_path, monkeypatch):
    """sign(x + 0.3) failed an over-strict check of its conditional mean (a float kink at −0.3 is ~1e-17 off
    −3/10) and relu(x − 5) failed the gate where its mass lies beyond z = 10: both fell to Hermite series
    (error bounds 3e-5 and 0.33)."""
    monkeypatch.setenv("DUALACT_CACHE_DIR", str(tmp_path))
    k = dualact.derive(src)
    assert k.method == "quadrature_1d" and k.error_bound <= 1e-12
