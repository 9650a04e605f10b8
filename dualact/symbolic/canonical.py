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

import contextlib
import signal
import threading
import time

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


def _size(e) -> tuple[int, int]:
    return sp.count_ops(e), len(sp.srepr(e))


def _opaque_bases(expr: sp.Expr) -> dict[sp.Expr, sp.Dummy]:
    """Radicands that are sums of three or more terms, each replaced by one positive symbol.

    Price integrals produce long rational functions of such radicands (e.g. R = (1 + q11)(1 + q22) expanded);
    keeping them opaque for a first pass shrinks the polynomials the factoriser sees by orders of magnitude.
    """
    out: dict[sp.Expr, sp.Dummy] = {}
    for p in expr.atoms(sp.Pow):
        if p.exp.is_Rational and p.exp.q == 2 and p.base.is_Add and len(p.base.args) >= 3:
            base = sp.expand(p.base)
            if base.is_positive or all(t.is_nonnegative for t in base.args):
                out.setdefault(base, sp.Dummy("S", positive=True))
    return out


_SYMBOLIC_ERRORS = (sp.PolynomialError, sp.polys.polyerrors.PolificationFailed, ValueError, TypeError)
_BIG = 300  # count_ops above which the plain (non-staged) canonical form is not attempted


class _OutOfTime(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """Raise :class:`_OutOfTime` inside the block after ``seconds`` (main thread of a Unix process only).

    Nests: an enclosing deadline that expires first still fires (re-armed when the inner block exits).
    """
    usable = (
        seconds is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _raise(signum, frame):
        raise _OutOfTime

    outer, _ = signal.getitimer(signal.ITIMER_REAL)
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _raise)
    limit = max(float(seconds), 1e-3)
    signal.setitimer(signal.ITIMER_REAL, min(limit, outer) if outer > 0 else limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def _staged(expr: sp.Expr) -> sp.Expr:
    """canonical_form with long positive radicands kept opaque first, then on the true variables."""
    opaque = _opaque_bases(expr)
    if not opaque:
        return canonical_form(expr)
    first = canonical_form(expr.subs(opaque))
    return canonical_form(first.xreplace({s: b for b, s in opaque.items()}))


def _improve(expr: sp.Expr, deadline: float | None) -> sp.Expr:
    best = expr
    fns = (_staged,) if sp.count_ops(expr) > _BIG else (_staged, canonical_form)
    for fn in fns:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        try:
            with _deadline(remaining):
                cand = fn(best)
        except (_OutOfTime, *_SYMBOLIC_ERRORS):
            continue
        for c in (cand, sp.factor_terms(cand)):
            if _size(c) < _size(best):
                best = c
    return best


def canonicalize(expr: sp.Expr, time_budget: float | None = None) -> sp.Expr:
    """The smallest (by ``count_ops``) of the raw, canonical and factored forms found within the budget.

    Sums are canonicalised term by term first (each term of a Price-theorem dual is a natural unit and
    small), then as a whole. ``time_budget`` (seconds) bounds the work; the best form found so far is kept.
    The result is always mathematically equal to ``expr``.
    """
    deadline = None if time_budget is None else time.monotonic() + time_budget
    best = expr
    if expr.is_Add and len(expr.args) > 1:
        per_term = sp.Add(*(_improve(t, deadline) for t in expr.args))
        if _size(per_term) < _size(best):
            best = per_term
    return _improve(best, deadline)
