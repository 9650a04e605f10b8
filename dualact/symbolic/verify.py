"""The verification gate: a closed-form derivation is checked against independent quadrature before use.

At ≥ 4 random points (q11, q12, q22) — variances between 0.2 and 3 (off the unit sphere), correlations in
[−0.95, 0.95] plus one at |ρ| = 0.999 — and with random values for every parameter, the formulas T, Ṫ are
evaluated at 30 digits (mpmath) and compared with kink-aware Gauss–Legendre quadrature of E[σ(u)σ(v)] and
E[σ'(u)σ'(v)] (:mod:`dualact.symbolic.quadrature`); the diagonal and the zero-variance mean are checked
against one-dimensional quadrature. Errors are normalised by √(T(q11,q11,q11)·T(q22,q22,q22)).

>>> import sympy as sp
>>> from dualact.symbolic.symbols import q11, q12, q22, x
>>> rng = np.random.default_rng(0)
>>> sample_parameters(sp.Symbol("a", real=True) * sp.exp(sp.Symbol("b", real=True) * x**2), ("a", "b"), rng)[1] < 0
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import mpmath
import numpy as np
import sympy as sp

from dualact.errors import DivergentActivationError, VerificationError

from .derivation import Derivation
from .normalize import check_second_moment
from .quadrature import dual_reference, expectation_1d, lambdify_numpy, mpmath_function, panel_points
from .symbols import q, q11, q12, q22

__all__ = ["TOLERANCE", "sample_parameters", "verify_closed_form"]

TOLERANCE = 1e-12
_POINTS = 4


def _seed(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _subs(e: sp.Expr, values: Mapping[str, float]) -> sp.Expr:
    by_name = {s.name: s for s in e.free_symbols}
    return e.xreplace({by_name[k]: sp.nsimplify(v, rational=True) for k, v in values.items() if k in by_name})


def sample_parameters(sigma: sp.Expr, params: tuple[str, ...], rng) -> tuple[float, ...]:
    """Random parameter values (|value| in [0.4, 1.3], two decimals) for which E[σ(u)²] is finite up to q = 3."""
    if not params:
        return ()
    for attempt in range(12):
        sign = 1.0 if attempt % 2 == 0 else -1.0
        vals = tuple(round(sign * rng.uniform(0.4, 1.3), 2) for _ in params)
        numeric = _subs(sigma, dict(zip(params, vals, strict=True)))
        try:
            check_second_moment(numeric)
            f = lambdify_numpy(numeric)
            m2 = expectation_1d(lambda t, f=f: f(t) ** 2, 3.0, panel_points(numeric))
        except (DivergentActivationError, ValueError, TypeError, OverflowError, ZeroDivisionError):
            continue
        if math.isfinite(m2):
            return vals
    raise VerificationError(f"could not find parameter values with a finite second moment for σ = {sigma}")


def _mp_fn(e: sp.Expr, variables):
    return mpmath_function(e, variables)


def _points(rng) -> list[tuple[float, float, float]]:
    out = []
    for i in range(_POINTS + 1):
        a, b = (float(np.exp(rng.uniform(math.log(0.2), math.log(3.0)))) for _ in range(2))
        rho = float(rng.uniform(-0.95, 0.95)) if i < _POINTS else 0.999 * (1 if rng.uniform() < 0.5 else -1)
        out.append((round(a, 6), round(b, 6), round(rho * math.sqrt(round(a, 6) * round(b, 6)), 6)))
    return out


def verify_closed_form(d: Derivation, sigma: sp.Expr, deriv: sp.Expr) -> dict:
    """Check T, Ṫ, diagonals and means of ``d`` against quadrature; return the accuracy record.

    Raises :class:`VerificationError` naming the first formula that is off by more than :data:`TOLERANCE`.
    """
    rng = np.random.default_rng(_seed(sp.srepr(sigma)))
    worst = {"nngp": 0.0, "ntk": 0.0, "diag": 0.0, "mean": 0.0}
    free = tuple(p for p in d.params if d.param_values.get(p) is None)
    settings = []
    if len(free) < len(d.params) or not d.params:  # the defaults (random values for the free ones)
        vals = dict(zip(free, sample_parameters(_subs(sigma, d.param_values), free, rng), strict=True))
        settings.append({**d.param_values, **vals})
    if d.params:  # every parameter random
        settings.append(dict(zip(d.params, sample_parameters(sigma, d.params, rng), strict=True)))
    count = 0
    for values in settings:
        s_num, ds_num = _subs(sigma, values), _subs(deriv, values)
        f = lambdify_numpy(s_num)
        kinks = panel_points(s_num)
        checks = [("nngp", d.nngp, s_num, False), ("ntk", d.ntk_factor, ds_num, True)]
        norms_cache: dict[tuple[str, float], float] = {}

        def norm2(which, qq, f=f, kinks=kinks, ds_num=ds_num, norms_cache=norms_cache):
            k = (which, qq)
            if k not in norms_cache:
                if which == "nngp":
                    norms_cache[k] = expectation_1d(lambda t: f(t) ** 2, qq, kinks)
                else:
                    g = lambdify_numpy(ds_num)
                    norms_cache[k] = expectation_1d(lambda t: g(t) ** 2, qq, panel_points(ds_num))
            return norms_cache[k]

        for which, formula, _, is_deriv in checks:
            fn = _mp_fn(_subs(formula, values), (q11, q12, q22))
            for a, b, c in _points(rng):
                ref = dual_reference(s_num, a, b, c, derivative=is_deriv)
                with mpmath.workdps(30):
                    got = float(sp.re(complex(fn(mpmath.mpf(a), mpmath.mpf(c), mpmath.mpf(b)))))
                scale = math.sqrt(max(norm2(which, a) * norm2(which, b), 0.0))
                err = abs(got - ref) / scale if scale > 0 else abs(got - ref)
                if not err <= TOLERANCE:
                    raise VerificationError(
                        f"{which} formula disagrees with quadrature at (q11, q12, q22) = ({a}, {c}, {b})"
                        f"{' with ' + str(values) if values else ''}: {got!r} vs {ref!r} (normalised error {err:.1e})"
                    )
                worst[which] = max(worst[which], err)
                count += 1
        for which, formula, expr in (("diag", d.diag, s_num), ("diag", d.ntk_diag, ds_num)):
            fn = _mp_fn(_subs(formula, values), (q,))
            g = lambdify_numpy(expr)
            for qq in (round(float(rng.uniform(0.2, 3.0)), 6), 1.0):
                ref = expectation_1d(lambda t, g=g: g(t) ** 2, qq, panel_points(expr))
                with mpmath.workdps(30):
                    got = float(sp.re(complex(fn(mpmath.mpf(qq)))))
                err = abs(got - ref) / abs(ref) if ref else abs(got)
                if not err <= TOLERANCE:
                    raise VerificationError(
                        f"diagonal formula disagrees with quadrature at q = {qq}: {got!r} vs {ref!r}"
                    )
                worst[which] = max(worst[which], err)
        for formula, expr, which in ((d.mean, s_num, "nngp"), (d.ntk_mean, ds_num, "ntk")):
            if formula is None:
                continue
            fn = _mp_fn(_subs(formula, values), (q,))
            g = lambdify_numpy(expr)
            qq = round(float(rng.uniform(0.2, 3.0)), 6)
            ref = expectation_1d(g, qq, panel_points(expr))
            with mpmath.workdps(30):
                got = float(sp.re(complex(fn(mpmath.mpf(qq)))))
            scale = math.sqrt(norm2(which, qq))
            err = abs(got - ref) / scale if scale > 0 else abs(got - ref)
            if not err <= TOLERANCE:
                raise VerificationError(f"mean formula disagrees with quadrature at q = {qq}: {got!r} vs {ref!r}")
            worst["mean"] = max(worst["mean"], err)
    return {
        "error_bound": float(max(worst.values())),
        "max_rel_err_nngp": float(worst["nngp"]),
        "max_rel_err_ntk": float(worst["ntk"]),
        "max_rel_err_diag": float(worst["diag"]),
        "max_rel_err_mean": float(worst["mean"]),
        "points": count,
        "tolerance": TOLERANCE,
        "reference": "kink-aware Gauss–Legendre quadrature (float64)",
    }
