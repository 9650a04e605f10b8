"""A structured simplifier for dual-kernel formulas (``sympy.simplify`` is slow and often times out).

Transcendental atoms (asin, atan, exp, erf, …) are frozen into symbols, each square-root radical √B is replaced by
a symbol W with W² = B, the expression becomes a rational function that is reduced modulo W² = B, collected on
the frozen symbols, and every coefficient is factored. The smallest of the candidates is kept.

The rational arithmetic runs on sparse polynomials over QQ (``sympy.polys.rings``) with denominators kept as
products of irreducible factors, so a sum never needs a gcd and cancellation is exact division by known factors;
the imaginary unit is one more radical (I² = -1). Structures outside that scheme (a frozen atom inside a
denominator, floats) go through sympy's expand / collect / cancel instead.

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
from sympy.polys.rings import ring

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


class _Unsupported(Exception):
    """The expression is outside what the polynomial-ring path handles (the sympy path is used instead)."""


class _Ring:
    """Rational functions num / Π f^e over QQ[leaves], with irreducible, normalised denominator factors.

    Sums take the common denominator factor by factor (max exponent), so no polynomial gcd is ever computed
    while the expression is built; cancellation is by exact division at the end, against known factors.
    """

    def __init__(self, leaves: list[sp.Expr]):
        syms = [x if x.is_Symbol else sp.Dummy("L") for x in leaves]
        self.ring, *gens = ring(syms, sp.QQ)
        self.gen = dict(zip(leaves, gens, strict=True))
        self.back = {s: x for s, x in zip(syms, leaves, strict=True) if s is not x}
        self.symbols = syms
        self._memo: dict = {}
        self._factors: dict = {}

    def factor(self, p):
        """(constant, [(irreducible, multiplicity)]) of a polynomial, memoised."""
        if p.is_ground:
            return self.ring.domain.convert(p.LC), []
        if p not in self._factors:
            self._factors[p] = p.factor_list()
        return self._factors[p]

    def convert(self, e):
        if e in self._memo:
            return self._memo[e]
        if e in self.gen:
            out = (self.gen[e], {})
        elif e.is_Rational:
            out = (self.ring.ground_new(sp.QQ(int(e.p), int(e.q))), {})
        elif e.is_Add:
            out = self.add([self.convert(a) for a in e.args])
        elif e.is_Mul:
            out = (self.ring.one, {})
            for a in e.args:
                out = self.mul(out, self.convert(a))
        elif e.is_Pow and e.exp.is_Integer:
            out = self.power(self.convert(e.base), int(e.exp))
        elif e.is_Pow and e.exp.is_Rational and e.base ** sp.Rational(1, e.exp.q) in self.gen:
            out = self.power(self.gen[e.base ** sp.Rational(1, e.exp.q)], int(e.exp.p))
        else:
            raise _Unsupported(e)
        self._memo[e] = out
        return out

    @staticmethod
    def mul(a, b):
        den = dict(a[1])
        for f, k in b[1].items():
            den[f] = den.get(f, 0) + k
        return a[0] * b[0], den

    @staticmethod
    def add(terms):
        den: dict = {}
        for _, d in terms:
            for f, k in d.items():
                den[f] = max(den.get(f, 0), k)
        num = 0
        for n, d in terms:
            for f, k in den.items():
                if k > d.get(f, 0):
                    n = n * f ** (k - d.get(f, 0))
            num = n + num
        return num, den

    def power(self, a, n):
        if not isinstance(a, tuple):
            a = (a, {})
        num, den = a
        if n >= 0:
            return num**n, {f: k * n for f, k in den.items()}
        if not num:
            raise _Unsupported("division by zero")
        const, factors = self.factor(num)
        new_num = self.ring.ground_new(1 / const)
        for f, k in den.items():
            new_num *= f**k
        return self.power((new_num, {f: k for f, k in factors}), -n)


def _leaves(expr: sp.Expr) -> set[sp.Expr]:
    """The atoms the polynomial ring needs: symbols, constants such as π, roots of numbers, other functions."""
    out: set[sp.Expr] = set()
    stack = [expr]
    while stack:
        e = stack.pop()
        if e.is_Rational:
            continue
        if e.is_Number:  # floats, infinities: no exact ring arithmetic
            raise _Unsupported(e)
        if e.is_Add or e.is_Mul:
            stack.extend(e.args)
        elif e.is_Pow and e.exp.is_Integer:
            stack.append(e.base)
        elif e.is_Pow and e.exp.is_Rational:
            out.add(e.base ** sp.Rational(1, e.exp.q))
        else:
            out.add(e)
    return out


def _ring_form(body: sp.Expr, gens: list[sp.Dummy], rad_syms: dict) -> sp.Expr:
    """Σ_m factor(c_m) · m over monomials m in ``gens``, the c_m rational in the other leaves (W² = B applied)."""
    found = _leaves(sp.Add(body, *rad_syms.values(), evaluate=False)) - set(gens)
    rest = sorted(found, key=sp.default_sort_key)
    leaves = rest + list(gens)
    R = _Ring(leaves)
    num, den = R.convert(body)
    npos = len(rest)
    gen_index = {R.gen[g]: i for i, g in enumerate(leaves) if i >= npos}
    w_index = {leaves.index(W): R.convert(B) for W, B in rad_syms.items()}
    neg = [0] * len(leaves)
    den = dict(den)
    for f in list(den):
        if any(f.degree(i) for i in range(npos, len(leaves))):
            if f not in gen_index:
                raise _Unsupported(f)
            i, k = gen_index[f], den.pop(f)
            if i in w_index:  # 1/W^k = W^(k mod 2) / B^⌈k/2⌉
                bnum, bden = w_index[i]
                if bden:
                    raise _Unsupported(f)
                j = (k + k % 2) // 2
                const, factors = R.factor(bnum)
                num = num * f ** (k % 2) * R.ring.ground_new(1 / const**j)
                for g, m in factors:
                    den[g] = den.get(g, 0) + m * j
            else:
                neg[i] = k
    # reduce modulo W² = B
    groups: dict = {}
    for monom, coeff in num.terms():
        gm = tuple(monom[npos:])
        low = tuple(monom[:npos]) + tuple(e % 2 if i + npos in w_index else e for i, e in enumerate(gm))
        key = tuple(e // 2 if i + npos in w_index else 0 for i, e in enumerate(gm))
        groups.setdefault(key, []).append((low, coeff))
    reduced = R.ring.zero
    for key, terms in groups.items():
        part = R.ring.from_dict(dict(terms))
        for i, j in enumerate(key):
            if j:
                part *= w_index[i + npos][0] ** j
        reduced += part
    # collect on the generators, cancel each coefficient against the known denominator factors
    coeffs: dict = {}
    for monom, coeff in reduced.terms():
        coeffs.setdefault(tuple(monom[npos:]), {})[tuple(monom[:npos]) + (0,) * (len(leaves) - npos)] = coeff
    out = []
    for gm, cdict in coeffs.items():
        c = R.ring.from_dict(cdict)
        d = {}
        for f, k in den.items():
            while k:
                q, r = c.div(f)
                if r:
                    break
                c, k = q, k - 1
            if k:
                d[f] = k
        const, factors = R.factor(c)
        value = sp.Mul(sp.Rational(const.numerator, const.denominator), *(f.as_expr() ** m for f, m in factors),
                       *(f.as_expr() ** -k for f, k in d.items()))
        mono = sp.Mul(*(R.symbols[npos + i] ** (e - neg[npos + i]) for i, e in enumerate(gm)))
        out.append(value * mono)
    return sp.Add(*out).xreplace(R.back)


def canonical_form(expr: sp.Expr) -> sp.Expr:
    """Collect on frozen atoms and radicals (reduced modulo W² = B); factor each coefficient."""
    frozen, back = _freeze(expr)
    repl, rad_syms = _radicals(frozen)
    if frozen.has(sp.I):  # the imaginary unit is one more radical: I = √-1
        J = sp.Dummy("J")
        repl[sp.I], rad_syms[J] = J, sp.S.NegativeOne
    body = frozen.xreplace(repl)
    gens = list(back) + list(rad_syms)
    try:
        out = _ring_form(body, gens, rad_syms)
    except (_Unsupported, sp.polys.polyerrors.BasePolynomialError):
        out = _sympy_form(expr, body, gens, rad_syms)
    subs = {**back, **{W: sp.sqrt(base) for W, base in rad_syms.items()}}
    return out.xreplace(subs)


def _sympy_form(expr, body, gens, rad_syms):
    """The same collection with sympy's expand/collect/cancel (slow on big inputs; any structure)."""
    body = body.replace(
        lambda e: e.is_Pow and e.base in rad_syms and e.exp.is_Integer and not 0 <= e.exp <= 1,
        lambda e: rad_syms[e.base] ** (int(e.exp) // 2) * e.base ** (int(e.exp) % 2),
    )
    if not gens:
        return sp.factor(sp.cancel(expr))
    collected = sp.collect(sp.expand(body), gens, evaluate=False)
    return sp.Add(*(sp.factor(sp.cancel(coeff)) * mono for mono, coeff in collected.items()))


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


def _run_within(seconds: float, fn):
    """``(True, fn())`` if ``fn`` returns within ``seconds``, ``(False, None)`` if this deadline fired first; an
    enclosing deadline that fires first still raises :class:`_OutOfTime`, and ``fn``'s own errors propagate."""
    began = time.monotonic()
    try:
        with _deadline(seconds):
            return True, fn()
    except _OutOfTime:
        if time.monotonic() - began < 0.9 * seconds:
            raise  # an enclosing deadline fired first
        return False, None


def _staged(expr: sp.Expr) -> sp.Expr:
    """canonical_form with long positive radicands kept opaque first, then on the true variables."""
    opaque = _opaque_bases(expr)
    if not opaque:
        return canonical_form(expr)
    first = canonical_form(expr.subs(opaque))
    return canonical_form(first.xreplace({s: b for b, s in opaque.items()}))


class _Best:
    """The smallest form offered so far, by count_ops (the length of the srepr breaks ties)."""

    def __init__(self, expr: sp.Expr):
        self.item = (sp.count_ops(expr), expr)  # one attribute: a timer signal cannot split an update

    @property
    def expr(self) -> sp.Expr:
        return self.item[1]

    def offer(self, cand: sp.Expr) -> None:
        ops, best = sp.count_ops(cand), self.item
        if ops < best[0] or (ops == best[0] and len(sp.srepr(cand)) < len(sp.srepr(best[1]))):
            self.item = (ops, cand)


def _improve(expr: sp.Expr, deadline: float | None) -> sp.Expr:
    best = _Best(expr)
    fns = (_staged,) if best.item[0] > _BIG else (_staged, canonical_form)
    for fn in fns:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        try:
            with _deadline(remaining):
                cand = fn(best.expr)
                best.offer(cand)
                best.offer(sp.factor_terms(cand))
        except (_OutOfTime, *_SYMBOLIC_ERRORS):
            continue
    return best.expr


def canonicalize(expr: sp.Expr, time_budget: float | None = None) -> sp.Expr:
    """The smallest (by ``count_ops``) of the raw, canonical and factored forms found within the budget.

    Sums are canonicalised term by term first (each term of a Price-theorem dual is a natural unit and
    small), then as a whole. ``time_budget`` (seconds) bounds the work; the best form found so far is kept.
    The result is always mathematically equal to ``expr``.
    """
    deadline = None if time_budget is None else time.monotonic() + time_budget
    best = _Best(expr)
    if expr.is_Add and len(expr.args) > 1:
        best.offer(sp.Add(*(_improve(t, deadline) for t in expr.args)))
    return _improve(best.expr, deadline)
