"""Safe parsing of activation expressions into SymPy.

The text is never evaluated as Python: it is parsed with :func:`ast.parse` and the SymPy expression is
built by walking the syntax tree against a strict whitelist (numbers, ``x``, ``pi``, ``E``, declared
parameters, ``+ - * / **``, unary ``-``/``+``, calls of whitelisted functions). Size limits keep hostile
input cheap. SymPy expressions given directly are validated against the same whitelist instead.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import numbers
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial

import sympy as sp
from sympy.core.function import Application, AppliedUndef

from dualact.errors import ActivationSyntaxError, DualactError, NotAFunctionOfXError, UnknownFunctionError
from dualact.symbolic import symbols as _sym

MAX_LENGTH = 2000  # characters of text
MAX_DEPTH = 60  # nesting of the syntax tree (chains of + - * / count once) and of brackets
MAX_AST_NODES = 1000
MAX_INT_DIGITS = 40  # integer literals, and significant digits of float literals
MAX_EXPONENT = 64  # |n| of a numeric exponent
MAX_NUMBER_BITS = 1024  # numerator/denominator of any number in the result
MAX_EXPR_NODES = 10_000  # nodes of the SymPy expression tree (after expanding shorthands)
MAX_NUMERIC_NODES = 200  # nodes of a subexpression free of x and parameters
MAX_MINMAX_ARGS = 8  # SymPy's Max/Min compare all pairs of arguments
MAX_ROOT = 64  # common denominator of the fractional exponents (SymPy factors c**(p/q) in time ~ c**q)

SELU_ALPHA = sp.Rational("1.6732632423543772848170429916717")
SELU_SCALE = sp.Rational("1.0507009873554804934193349852946")
GELU_TANH_COEFF = sp.Rational(44715, 1000000)
LEAKY_ALPHA = sp.Rational(1, 100)


@dataclass(frozen=True)
class ParsedActivation:
    """A validated activation σ(x).

    Attributes:
      expr: σ(x) in :data:`dualact.symbolic.symbols.x` and the parameter symbols (exact numbers only).
      params: sorted names of the free parameters that occur in ``expr``.
      param_values: the values given for those of ``params`` that were declared with a number.
      source: the original text (``sympy.srepr`` for SymPy input, ``repr`` for a plain number).
    """

    expr: sp.Expr
    params: tuple[str, ...]
    param_values: dict[str, float] = field(hash=False)
    source: str


class _Reject(Exception):
    """Raised by a builder; converted into an ActivationSyntaxError at the call's position."""


# --------------------------------------------------------------------------------------------- functions
def _exp_problem(a: sp.Expr) -> str | None:
    # exp(k*log(c)) evaluates to c**k, which for a huge k and numeric c would never finish; exp's
    # evaluation also runs logcombine, turning any k*log(c) inside the argument into log(c**k).
    for m in sp.preorder_traversal(a):
        if m.is_Mul and any(isinstance(f, sp.log) for f in m.args):
            if (problem := _exponent_problem(m.as_coeff_Mul()[0])) is not None:
                return f"k*log(...) inside exp: {problem}"
    for term in sp.Add.make_args(a):
        if term.has(sp.log) and (problem := _exponent_problem(term)) is not None:
            return f"k*log(...) inside exp: {problem}"
    return None


def _exp(a: sp.Expr) -> sp.Expr:
    if (problem := _exp_problem(a)) is not None:
        raise _Reject(problem)
    return sp.exp(a)


def _outer_rationals(e: sp.Expr):
    stack = [e]
    while stack:
        n = stack.pop()
        if n.is_Rational:
            yield n
        elif n.is_Add or n.is_Mul or n.is_Pow:
            stack.extend(n.args)


def _minmax(cls):
    def build(*args):
        if sum(len(a.args) if isinstance(a, cls) else 1 for a in args) > MAX_MINMAX_ARGS:
            raise _Reject(f"{cls.__name__} of more than {MAX_MINMAX_ARGS} arguments is not allowed")
        return cls(*args)

    return build


def _heaviside(a):
    return sp.Heaviside(a)  # default H(0) = 1/2


def _sigmoid(a):
    return 1 / (1 + _exp(-a))


def _elu(a, alpha=sp.S.One):
    return a * _heaviside(a) + alpha * (_exp(a) - 1) * _heaviside(-a)


_PLAIN = ("log", "sqrt", "erf", "erfc", "sin", "cos", "tanh", "sinh", "cosh", "atan", "Abs", "sign")
_FUNCTIONS: dict[str, tuple[int, int | None, Callable[..., sp.Expr]]] = {
    **{f: (1, 1, getattr(sp, f)) for f in _PLAIN},
    "exp": (1, 1, _exp),
    "abs": (1, 1, sp.Abs),
    "Heaviside": (1, 1, _heaviside),
    **{f: (2, None, _minmax(getattr(sp, f.capitalize()))) for f in ("Max", "max", "Min", "min")},
    # activation shorthands (Piecewise-free)
    "relu": (1, 1, lambda a: a * _heaviside(a)),
    "step": (1, 1, _heaviside),
    "sigmoid": (1, 1, _sigmoid),
    "softplus": (1, 1, lambda a: sp.log(1 + _exp(a))),
    "gelu": (1, 1, lambda a: a * (1 + sp.erf(a / sp.sqrt(2))) / 2),
    "gelu_tanh": (
        1,
        1,
        lambda a: a * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (a + GELU_TANH_COEFF * a**3))) / 2,
    ),
    "silu": (1, 1, lambda a: a * _sigmoid(a)),
    "swish": (1, 1, lambda a: a * _sigmoid(a)),
    "mish": (1, 1, lambda a: a * sp.tanh(sp.log(1 + _exp(a)))),
    "elu": (1, 2, _elu),
    "selu": (1, 1, lambda a: SELU_SCALE * _elu(a, SELU_ALPHA)),
    "leaky_relu": (1, 2, lambda a, alpha=LEAKY_ALPHA: a * _heaviside(a) + alpha * a * _heaviside(-a)),
}
_CONSTANTS = {"x": _sym.x, "pi": sp.pi, "E": sp.E}
# SymPy classes that the whitelist can produce.
_SYMPY_FUNCS = (sp.exp, sp.log, sp.erf, sp.erfc, sp.sin, sp.cos, sp.tanh, sp.sinh, sp.cosh, sp.atan, sp.Abs,
                sp.sign, sp.Heaviside, sp.Max, sp.Min)  # fmt: skip

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_BAD_BINOPS = {ast.BitXor: "^", ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<",
               ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|"}  # fmt: skip
_REASONS = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "indexing is not allowed",
    ast.Lambda: "lambda expressions are not allowed",
    **dict.fromkeys((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp), "comprehensions: forbidden"),
    ast.Compare: "comparisons are not allowed (use Heaviside(x) or step(x) for steps)",
    ast.BoolOp: "'and'/'or' are not allowed",
    ast.IfExp: "conditional expressions are not allowed (use Heaviside(x) for piecewise activations)",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.Starred: "starred arguments are not allowed",
    **dict.fromkeys((ast.Tuple, ast.List, ast.Set, ast.Dict), "tuples, lists, sets, dicts are forbidden"),
}
_NEWLINE = re.compile(r"\r\n|\r|\n")
_FLOAT = re.compile(r"(\d*)(?:\.(\d*))?(?:e([+-]?\d+))?")
_PARAM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_UNDEFINED = (sp.S.ComplexInfinity, sp.S.NaN, sp.S.Infinity, sp.S.NegativeInfinity)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    candidates = sorted(candidates)
    hits = [c for c in candidates if c.lower() == name.lower()]
    hits += [c for c in difflib.get_close_matches(name, candidates, n=3, cutoff=0.6) if c not in hits]
    return f"; did you mean {' or '.join(repr(h) for h in hits[:3])}?" if hits else ""


def _bits(r: sp.Rational) -> int:
    return max(int(r.p).bit_length(), int(r.q).bit_length())


def _pow(b: float, p: float) -> float | None:
    return None if (b < 0 and not p.is_integer()) or (b == 0 and p <= 0) else b**p


def _log(v: float) -> float | None:
    return math.log(v) if v > 0 else None


_FLOAT_FUNCS = {sp.exp: math.exp, sp.log: _log, sp.erf: math.erf, sp.erfc: math.erfc, sp.sin: math.sin,
                sp.cos: math.cos, sp.tanh: math.tanh, sp.sinh: math.sinh, sp.cosh: math.cosh,
                sp.atan: math.atan, sp.Abs: abs, sp.sign: lambda v: float((v > 0) - (v < 0)),
                sp.Heaviside: lambda v, h=0.5: 1.0 if v > 0 else 0.0 if v < 0 else h, sp.Max: max,
                sp.Min: min, sp.Add: lambda *v: math.fsum(v), sp.Mul: lambda *v: math.prod(v),
                sp.Pow: _pow}  # fmt: skip


def _float_node(e: sp.Basic, vals: list) -> float | None:
    """float64 value of node e from its arguments' values (None: symbolic or unknown); OverflowError if huge.

    Numeric subexpressions are evaluated in floats *before* SymPy sees them: SymPy's own numerical checks
    (assumptions, comparisons) on towers such as cosh(10**40) hang, raise or even abort the interpreter.
    """
    if e.is_Rational or e.is_Float:
        r = float(e)
    elif e is sp.pi or e is sp.E:
        r = float(e)
    elif not vals or None in vals or type(e) not in _FLOAT_FUNCS:
        return None
    else:
        try:
            r = _FLOAT_FUNCS[type(e)](*vals)
        except (ValueError, ZeroDivisionError):
            return None
    if r is not None and not math.isfinite(r):
        raise OverflowError
    return r


def _tree_info(expr: sp.Expr, memo: dict) -> tuple[int, bool, float | None, int]:
    """(tree nodes, counting shared subexpressions each time; has a symbol; float value; lcm of the
    denominators of rational exponents), computed iteratively. Raises _Reject past the limits."""
    stack = [expr]
    while stack:
        e = stack[-1]
        if e in memo:
            stack.pop()
            continue
        todo = [a for a in e.args if a not in memo]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        info = [memo[a] for a in e.args]
        symbolic = isinstance(e, sp.Symbol) or any(i[1] for i in info)
        try:
            value = None if symbolic else _float_node(e, [i[2] for i in info])
        except OverflowError:
            raise _Reject("a numeric value exceeds the float64 range") from None
        denom = math.lcm(1, *(i[3] for i in info), e.exp.q if e.is_Pow and e.exp.is_Rational else 1)
        if denom > MAX_ROOT:
            raise _Reject(f"fractional exponents need a common denominator <= {MAX_ROOT}")
        memo[e] = (1 + sum(i[0] for i in info), symbolic, value, denom)
    return memo[expr]


def _float_binop(sym: str, u: float, v: float) -> float | None:
    if sym == "/":
        r = u / v if v != 0 else 0.0 if u == 0 else math.inf  # v underflowed: the quotient is huge
    else:
        r = {"+": u + v, "-": u - v, "*": u * v}[sym] if sym != "**" else _pow(u, v)
    if r is not None and not math.isfinite(r):
        raise OverflowError
    return r


def _float_eval(e: sp.Basic, env: dict) -> float | None:
    """Float value of a small template expression whose Dummy arguments have the values in env."""
    return env[e] if e in env else _float_node(e, [_float_eval(a, env) for a in e.args])


_TEMPLATES: dict = {}


def _template(name: str, n: int):
    if (name, n) not in _TEMPLATES:
        args = [sp.Dummy(real=True) for _ in range(n)]
        _TEMPLATES[name, n] = (args, _FUNCTIONS[name][2](*args))
    return _TEMPLATES[name, n]


def _node_problem(e: sp.Basic) -> str | None:
    """Why a single node (as built, any provenance) is unacceptable, or None."""
    if any(e is u for u in _UNDEFINED):
        return "the expression is undefined or infinite here (division by zero, log(0), ...)"
    if e is sp.I:
        return "the expression is not real here"
    if e.is_Rational and _bits(e) > MAX_NUMBER_BITS:
        return f"number too large (more than {MAX_NUMBER_BITS} bits)"
    if e.is_Pow:
        return _exponent_problem(e.exp)
    return None


def _exponent_problem(p: sp.Expr) -> str | None:
    # Rational parts of exponents become integer powers when SymPy expands b**(r + ...) or b**(r*...).
    for r in _outer_rationals(p):
        if abs(r) > MAX_EXPONENT or r.q > MAX_ROOT:
            return f"exponent {r} is too large (|exponent| <= {MAX_EXPONENT}, denominator <= {MAX_ROOT})"
    return None


# --------------------------------------------------------------------------------------------- text
class _Builder:
    def __init__(self, text: str, base: int, declared: Mapping[str, float | None]):
        self.text, self.base, self.src = text, base, text[base:]
        self.starts = [0] + [m.end() for m in _NEWLINE.finditer(self.src)]
        self.declared = declared
        self.sizes: dict = {}

    # positions ---------------------------------------------------------------------------
    def offset(self, lineno, col_bytes) -> int | None:
        if lineno is None or col_bytes is None or not 1 <= lineno <= len(self.starts):
            return None
        start = self.starts[lineno - 1]
        line = self.src[start : self.starts[lineno] if lineno < len(self.starts) else len(self.src)]
        return self.base + start + len(line.encode("utf-8")[:col_bytes].decode("utf-8", "ignore"))

    def pos(self, node) -> int | None:
        return self.offset(getattr(node, "lineno", None), getattr(node, "col_offset", None))

    def end(self, node) -> int | None:
        return self.offset(getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None))

    def find(self, token: str, after, before, default) -> int | None:
        lo, hi = self.end(after), self.pos(before) if before is not None else len(self.text)
        i = self.text.find(token, lo, hi) if lo is not None and hi is not None else -1
        return i if i >= 0 else self.pos(default)

    def fail(self, reason: str, where, cls=ActivationSyntaxError):
        pos = where if isinstance(where, int) or where is None else self.pos(where)
        raise cls(reason, pos, self.text)

    def reject(self, node):
        where = node
        if isinstance(node, ast.Attribute):
            dot = self.find(".", node.value, None, None)
            i = self.text.find(node.attr, dot) if dot is not None else -1
            where = i if i >= 0 else dot if dot is not None else node
        elif isinstance(node, ast.Subscript):
            where = self.find("[", node.value, node.slice, node)
        self.fail(_REASONS.get(type(node), f"{type(node).__name__} expressions are not allowed"), where)

    def check(self, r: sp.Expr, where) -> sp.Expr:
        for e in (r, *r.args, *(b for a in r.args for b in a.args)):
            if (problem := _node_problem(e)) is not None:
                self.fail(problem, where)
        size, symbolic, value, _ = self.info(r, where)
        if size > MAX_EXPR_NODES:
            self.fail(f"expression too large (more than {MAX_EXPR_NODES} SymPy nodes)", where)
        if not symbolic and value is None:  # (SymPy's own is_extended_real may take exponential time)
            self.fail("the expression is not real (or not finite) here", where)
        if not symbolic and size > MAX_NUMERIC_NODES:
            self.fail(f"numeric subexpression too large (more than {MAX_NUMERIC_NODES} nodes)", where)
        return r

    def info(self, r: sp.Expr, where):
        try:
            return _tree_info(r, self.sizes)
        except _Reject as exc:
            self.fail(str(exc), where)

    def guarded(self, where, what: str, children, own_denom: int, floats, construct) -> sp.Expr:
        """Construct a node only after checking, without SymPy, that it stays within the limits.

        SymPy evaluates numbers eagerly, and some evaluations never finish or crash the interpreter
        (cosh(10**40) in a comparison, 2**(p/q) with a huge q), so such values are caught in float64 and
        the denominators of fractional exponents are bounded before SymPy sees the node.
        """
        infos = [self.info(c, where) for c in children]
        if any(not i[1] and i[0] > MAX_NUMERIC_NODES for i in infos):  # SymPy's evalf is exponential
            self.fail(f"numeric subexpression too large (more than {MAX_NUMERIC_NODES} nodes)", where)
        if math.lcm(1, *(i[3] for i in infos)) * own_denom > MAX_ROOT:
            self.fail(f"fractional exponents need a common denominator <= {MAX_ROOT}", where)
        vals = [i[2] for i in infos]
        try:
            if None not in vals:
                floats(*vals)
            return construct()
        except _Reject as exc:
            self.fail(str(exc), where)
        except OverflowError:
            self.fail("a numeric value exceeds the float64 range", where)
        except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
            self.fail(f"cannot evaluate {what}: {exc}", where)

    # nodes -------------------------------------------------------------------------------
    def build(self, node, depth: int) -> sp.Expr:
        if depth > MAX_DEPTH:
            self.fail(f"expression nested too deeply (more than {MAX_DEPTH} levels)", node)
        t = type(node)
        if t is ast.Constant:
            return self.constant(node)
        if t is ast.Name:
            return self.name(node)
        if t is ast.UnaryOp:
            if isinstance(node.op, ast.USub):
                return self.check(-self.build(node.operand, depth + 1), node)
            if isinstance(node.op, ast.UAdd):
                return self.build(node.operand, depth + 1)
            self.fail(f"operator '{'not' if isinstance(node.op, ast.Not) else '~'}' is not allowed", node)
        if t is ast.BinOp:
            return self.binop(node, depth)
        if t is ast.Call:
            return self.call(node, depth)
        self.reject(node)

    def constant(self, node) -> sp.Expr:
        v = node.value
        if isinstance(v, bool) or v is None or v is Ellipsis:
            self.fail(f"{v!r} is not allowed", node)
        if isinstance(v, int):
            if abs(v) >= 10**MAX_INT_DIGITS:
                self.fail(f"integer literal longer than {MAX_INT_DIGITS} digits", node)
            return sp.Integer(v)
        if isinstance(v, float):
            seg = (ast.get_source_segment(self.src, node) or "").replace("_", "").lower()
            m = _FLOAT.fullmatch(seg)
            if not m:
                self.fail("malformed number", node)
            digits = ((m[1] or "") + (m[2] or "")).lstrip("0")
            if len(digits) > MAX_INT_DIGITS or abs(int(m[3] or 0)) > 10 * MAX_EXPONENT:
                self.fail(f"number literal too long or too large (at most {MAX_INT_DIGITS} digits)", node)
            return self.check(sp.Rational(Fraction(seg)), node)
        if isinstance(v, complex):
            self.fail("complex numbers are not allowed", node)
        self.fail(f"{type(v).__name__} literals are not allowed", node)

    def name(self, node) -> sp.Expr:
        n = node.id
        if n.startswith("__"):
            self.fail(f"names starting with '__' are not allowed ({n!r})", node)
        if n in _CONSTANTS:
            return _CONSTANTS[n]
        if n in self.declared:
            return _sym.param_symbol(n)
        if n in _FUNCTIONS:
            self.fail(f"{n!r} is a function; call it, e.g. {n}(x)", node)
        where = f"name {n!r} at position {self.pos(node)}"
        if n in _sym.RESERVED_NAMES:
            raise NotAFunctionOfXError(f"{where} is reserved and cannot appear in an activation")
        hint = " (for Euler's number write E)" if n == "e" else _suggest(n, [*_CONSTANTS, *self.declared])
        raise NotAFunctionOfXError(
            f"{where} is not defined{hint}: an activation may only depend on x and declared parameters; "
            f"declare it with params=[{n!r}] or params={{{n!r}: value}}"
        )

    def binop(self, node, depth: int) -> sp.Expr:
        spine = []  # left-associated chains of + - * / count as one level of nesting
        while isinstance(node, ast.BinOp) and type(node.op) in _BINOPS and not isinstance(node.op, ast.Pow):
            spine.append(node)
            node = node.left
        if spine:
            acc = self.build(node, depth + 1)
            for b in reversed(spine):
                acc = self.arith(b, acc, self.build(b.right, depth + 1))
            return acc
        op = type(node.op)
        if op is not ast.Pow:
            sym = _BAD_BINOPS.get(op, "?")
            hint = " ('^' is bitwise XOR in Python; write powers as x**2)" if op is ast.BitXor else ""
            self.fail(f"operator '{sym}' is not allowed{hint}", self.find(sym, node.left, node.right, node))
        return self.arith(node, self.build(node.left, depth + 1), self.build(node.right, depth + 1))

    def arith(self, node, a: sp.Expr, b: sp.Expr) -> sp.Expr:
        sym = _BINOPS[type(node.op)]
        where = self.find(sym, node.left, node.right, node)
        if sym == "/" and b == 0:
            self.fail("division by zero", where)
        if sym == "**" and (problem := _exponent_problem(b)) is not None:
            self.fail(problem, where)
        if sym == "**" and b.is_Rational:
            if a.is_Rational and _bits(a) * -(-abs(b.p) // b.q) > MAX_NUMBER_BITS:
                self.fail(f"number too large (more than {MAX_NUMBER_BITS} bits)", where)
        ops = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
               "**": lambda: a**b}  # fmt: skip
        own = b.q if sym == "**" and b.is_Rational else 1
        r = self.guarded(where, f"'{sym}'", [a, b], own, partial(_float_binop, sym), ops[sym])
        return self.check(r, where)

    def call(self, node, depth: int) -> sp.Expr:
        f = node.func
        if not isinstance(f, ast.Name):
            if type(f) in _REASONS:
                self.reject(f)
            self.fail("only whitelisted functions can be called, by name", f)
        name = f.id
        if name.startswith("__"):
            self.fail(f"names starting with '__' are not allowed ({name!r})", f)
        for kw in node.keywords:
            self.fail("keyword arguments are not allowed" if kw.arg else "'**' arguments are not allowed", kw)
        if name not in _FUNCTIONS:
            if name in _CONSTANTS or name in self.declared:
                self.fail(f"{name!r} is not a function", f)
            self.fail(f"unknown function {name!r}{_suggest(name, _FUNCTIONS)}", f, UnknownFunctionError)
        for a in node.args:
            if isinstance(a, ast.Starred):
                self.reject(a)
        lo, hi, builder = _FUNCTIONS[name]
        n = len(node.args)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi else f"at least {lo}"
            self.fail(f"{name} takes {want} argument{'s' * (want != '1')} ({n} given)", f)
        args = [self.build(a, depth + 1) for a in node.args]
        try:
            dummies, template = _template(name, n)
        except _Reject as exc:
            self.fail(str(exc), f)
        floats = lambda *v: _float_eval(template, dict(zip(dummies, v, strict=True)))
        own = _tree_info(template, {})[3]
        r = self.guarded(f, f"{name}(...)", args, own, floats, lambda: builder(*args))
        return self.check(r, f)


def _parse_text(text: str, declared: Mapping[str, float | None]) -> sp.Expr:
    if len(text) > MAX_LENGTH:
        raise ActivationSyntaxError(f"expression longer than {MAX_LENGTH} characters", MAX_LENGTH, text)
    base = len(text) - len(text.lstrip(" \t\f\r\n"))
    if base == len(text):
        raise ActivationSyntaxError("empty expression", 0, text)
    try:
        with warnings.catch_warnings():  # e.g. invalid escapes in (rejected) string literals
            warnings.simplefilter("ignore")
            tree = ast.parse(text[base:], mode="eval")
    except SyntaxError as exc:
        b = _Builder(text, base, declared)
        pos = b.offset(exc.lineno, 0)
        pos = None if pos is None or exc.offset is None else min(pos + max(exc.offset - 1, 0), len(text))
        if pos is None and "null bytes" in str(exc.msg):
            pos = text.find("\x00")
        raise ActivationSyntaxError(f"not a valid expression: {exc.msg}", pos, text) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, surrogates, deep nesting
        raise ActivationSyntaxError(f"not a valid expression: {exc}", None, text) from None
    b = _Builder(text, base, declared)
    if sum(1 for n in ast.walk(tree) if isinstance(n, ast.expr | ast.keyword)) > MAX_AST_NODES:
        raise ActivationSyntaxError(f"more than {MAX_AST_NODES} syntax nodes", None, text)
    level = 0
    for i, c in enumerate(text):
        level += (c in "([{") - (c in ")]}")
        if level > MAX_DEPTH:
            raise ActivationSyntaxError(f"too many nested brackets (more than {MAX_DEPTH})", i, text)
    return b.build(tree.body, 1)


# --------------------------------------------------------------------------------------------- SymPy
def _validate_sympy(expr: sp.Expr, declared: Mapping[str, float | None], passes: int = 3) -> sp.Expr:
    """Check every node of a SymPy expression against the whitelist; return it in the canonical symbols."""
    seen, stack, swap = set(), [expr], {}
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if len(seen) > MAX_EXPR_NODES:
            raise ActivationSyntaxError(f"expression too large (more than {MAX_EXPR_NODES} SymPy nodes)")
        stack.extend(e.args)
        if isinstance(e, sp.Symbol):
            if e.name not in declared and e.name != "x":
                raise NotAFunctionOfXError(
                    f"free symbol {e.name!r} is neither x nor a declared parameter; declare it with "
                    f"params=[{e.name!r}] or params={{{e.name!r}: value}}"
                )
            canonical = _sym.x if e.name == "x" else _sym.param_symbol(e.name)
            if e != canonical:
                swap[e] = canonical
        elif isinstance(e, sp.Float):
            _, _, ex, bc = e._mpf_
            if not -MAX_NUMBER_BITS <= ex <= MAX_NUMBER_BITS - bc:
                raise ActivationSyntaxError(f"floating-point number {e} is out of range")
            swap[e] = sp.Rational(Fraction(str(e)))
        elif (problem := _node_problem(e)) is not None:
            raise ActivationSyntaxError(problem)
        elif e.is_Rational or e is sp.pi or e is sp.E or e.is_Add or e.is_Mul or e.is_Pow:
            pass
        elif isinstance(e, AppliedUndef):
            raise UnknownFunctionError(f"undefined function {type(e).__name__!r} is not allowed")
        elif isinstance(e, sp.Heaviside):
            if e.args[1:] != (sp.S.Half,):
                swap[e] = sp.Heaviside(e.args[0])  # H(0) is immaterial to the kernels; use 1/2
        elif isinstance(e, Application):
            if not isinstance(e, _SYMPY_FUNCS):
                raise UnknownFunctionError(f"function {type(e).__name__!r} is not supported")
            problem = _exp_problem(e.args[0]) if isinstance(e, sp.exp) else None
            if isinstance(e, sp.Max | sp.Min) and len(e.args) > MAX_MINMAX_ARGS:
                problem = f"{type(e).__name__} of more than {MAX_MINMAX_ARGS} arguments is not allowed"
            if problem:
                raise ActivationSyntaxError(problem)
        else:
            raise ActivationSyntaxError(f"unsupported SymPy object {type(e).__name__!r}")
    memo: dict = {}
    try:
        size = _tree_info(expr, memo)[0]
    except _Reject as exc:
        raise ActivationSyntaxError(str(exc)) from None
    for n, _, value, _ in (i for i in memo.values() if not i[1]):
        if value is None or n > MAX_NUMERIC_NODES:
            problem = (
                "is not real (or not finite)" if value is None else f"has more than {MAX_NUMERIC_NODES} nodes"
            )
            raise ActivationSyntaxError(f"a subexpression free of x and parameters {problem}")
    if size > MAX_EXPR_NODES:
        raise ActivationSyntaxError(f"expression too large (more than {MAX_EXPR_NODES} SymPy nodes)")
    if swap and passes > 1:  # a replaced node's own arguments may need a second pass
        return _validate_sympy(expr.xreplace(swap), declared, passes - 1)
    if swap:
        raise ActivationSyntaxError("could not bring the SymPy expression into canonical form")
    return expr


def _declare(params) -> dict[str, float | None]:
    if params is None:
        return {}
    if isinstance(params, str):
        items = [(params, None)]
    elif isinstance(params, Mapping):
        items = list(params.items())
    elif isinstance(params, Iterable):
        items = [(n, None) for n in params]
    else:
        raise ActivationSyntaxError("params must map names to values (or None), or list names")
    out: dict[str, float | None] = {}
    for name, value in items:
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name) or keyword.iskeyword(name):
            raise ActivationSyntaxError(f"invalid parameter name {name!r} (use letters, digits, _)")
        if name in _sym.RESERVED_NAMES:
            raise ActivationSyntaxError(f"{name!r} is reserved and cannot be a parameter name")
        if name in _FUNCTIONS:
            raise ActivationSyntaxError(f"{name!r} is a function name and cannot be a parameter name")
        if value is not None:
            ok = isinstance(value, numbers.Real | sp.Number) and not isinstance(value, bool)
            if not ok or not math.isfinite(float(value)):
                raise ActivationSyntaxError(f"parameter {name!r}: {value!r} is not a finite real number")
            value = float(value)
        out[name] = value
    return out


def _parse(src, declared: Mapping[str, float | None]) -> tuple[str, sp.Expr]:
    if isinstance(src, str):
        return src, _validate_sympy(_parse_text(src, declared), declared)
    elif isinstance(src, sp.Basic):
        if not isinstance(src, sp.Expr):
            raise ActivationSyntaxError(f"expected a SymPy expression, got {type(src).__name__}")
        expr = _validate_sympy(src, declared)  # before srepr: src may be a huge tree
        return sp.srepr(src), expr
    elif isinstance(src, numbers.Real) and not isinstance(src, bool):
        if isinstance(src, numbers.Integral):
            value = sp.Integer(int(src))
        elif isinstance(src, numbers.Rational):
            value = sp.Rational(Fraction(src))
        elif not math.isfinite(float(src)):
            raise ActivationSyntaxError(f"the constant {src!r} is not finite")
        else:
            value = sp.Rational(Fraction(repr(float(src))))
        return repr(src), _validate_sympy(value, declared)
    raise ActivationSyntaxError(f"expected a string or a SymPy expression, got {type(src).__name__}")


def parse_activation(src: str | sp.Expr, params: Mapping[str, float | None] | Iterable[str] | None = None,
                     ) -> ParsedActivation:  # fmt: skip
    """Parse an activation σ(x) from text (or validate a SymPy expression) without executing anything.

    Args:
      src: e.g. ``"gelu(x)"``, ``"relu(x) + a*sin(x)"``, ``"x*Heaviside(x)"``; or a SymPy expression whose
        free symbols are named ``x`` or a declared parameter; or a plain number (constant activation).
      params: declared parameters: a mapping name -> value (``None``: symbolic) or an iterable of names.

    Hostile input stays cheap: text of at most 2000 characters and 1000 syntax nodes, nesting depth 60,
    integer literals of at most 40 digits, numeric exponents |n| <= 64 with denominators <= 64, numbers
    within float64 range, at most 10,000 SymPy nodes (see the ``MAX_*`` constants).

    Raises:
      ActivationSyntaxError: malformed or disallowed text (with ``.position``), or a limit exceeded.
      UnknownFunctionError: a function that is not on the whitelist.
      NotAFunctionOfXError: a name other than ``x``, ``pi``, ``E`` and the declared parameters.

    >>> p = parse_activation("relu(x) + a*x", params={"a": 0.5})
    >>> p.expr
    a*x + x*Heaviside(x)
    >>> p.params, p.param_values
    (('a',), {'a': 0.5})
    >>> parse_activation("0.1*x").expr
    x/10
    """
    declared = _declare(params)
    try:
        source, expr = _parse(src, declared)
    except DualactError:
        raise
    except (ArithmeticError, AttributeError, RecursionError, TypeError, ValueError) as exc:  # safety net
        raise ActivationSyntaxError(f"cannot process the expression ({type(exc).__name__}: {exc})") from None
    names = tuple(sorted(s.name for s in expr.free_symbols if s != _sym.x))
    values = {n: declared[n] for n in names if declared.get(n) is not None}
    return ParsedActivation(expr=expr, params=names, param_values=values, source=source)
