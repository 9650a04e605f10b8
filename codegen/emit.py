"""Derivation → source text of a generated catalog module (and its in-memory counterpart).

The pipeline is SymPy expression → :func:`~dualact.codegen.stabilize.stabilize` → ``sympy.cse`` →
:class:`~dualact.codegen.printer.JaxCodePrinter` → the fixed text of :mod:`dualact.codegen.template`.
Emission is deterministic: the same :class:`~dualact.symbolic.derivation.Derivation` always gives the same
bytes.

>>> import sympy as sp
>>> from dualact.symbolic.derivation import Derivation
>>> from dualact.symbolic.symbols import q, q11, q12, q22, x
>>> d = Derivation(source="x", method="closed_form", tier="gaussian_class", activation=x,
...                derivative=sp.S.One, nngp=q12, ntk_factor=sp.S.One, diag=q, ntk_diag=sp.S.One,
...                mean=sp.S.Zero, ntk_mean=sp.S.One, homogeneity=1)
>>> mod = load_module(d, "identity")
>>> float(mod.nngp(2.0, 0.5, 1.0)), float(mod.ntk_factor(2.0, 0.5, 1.0))
(0.5, 1.0)
"""

from __future__ import annotations

import keyword
import re
import textwrap
import types
from dataclasses import dataclass

import sympy as sp
from sympy.printing.codeprinter import PrintMethodNotImplementedError

from dualact.errors import CatalogError
from dualact.symbolic.derivation import Derivation
from dualact.symbolic.symbols import q, q11, q12, q22, x

from .balance import balance_constants
from .exponentials import merge_exponentials, pair_exponentials
from .printer import JaxCodePrinter
from .scaling import RECIPROCAL, SCALE, rescale_all
from .stabilize import exact_gram, needs_custom_jvp, partials, stabilize, stabilize_pointwise
from .template import (
    CONVENTION_AE,
    CONVENTIONS_CLOSED,
    CONVENTIONS_HERMITE,
    HEADER,
    HELPER_FLOATS,
    HELPER_REQUIRE,
    HELPER_TANGENT,
    HERMITE_TABLE,
)

GENERATOR_VERSION = "7"
"""Bumped whenever the emitted text changes; ``dualact catalog check`` reports older modules as stale."""

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")  # used with fullmatch (``$`` would accept a trailing newline)
# names that dualact.catalog's own module namespace already binds (its functions and imports): an entry of
# that name would be shadowed by them under ``from dualact.catalog import NAME``
_RESERVED_NAMES = frozenset({"get", "names", "catalog_dirs", "user_catalog_dir", "annotations", "importlib", "sys"})
_RESERVED_LOCALS = frozenset(
    {"jax", "jnp", "jsp", "os", "zero", "value", "pos", "partials", "primals", "tangents", "dtype", "args"}
    | {"activation", "derivative", "nngp", "ntk_factor", "diag", "ntk_diag", "x", "q", "q11", "q12", "q22"}
    | {"NAME", "KIND", "METHOD", "SOURCE", "PARAMS", "DEFAULTS", "FIXED", "KINKS", "SymbolicZero"}
)


@dataclass(frozen=True)
class EmittedModule:
    """What the writer puts on disk for one catalog entry."""

    name: str
    kind: str  # "activation" or "kernel"
    source: str  # the module text
    npz: bytes | None = None  # Hermite coefficient table (method "hermite")

    @property
    def files(self) -> dict[str, bytes]:
        out = {f"{self.name}.py": self.source.encode("utf-8")}
        if self.npz is not None:
            out[f"{self.name}.npz"] = self.npz
        return out


def check_name(name: str) -> str:
    """Validate a catalog entry name (a short snake_case Python identifier)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or keyword.iskeyword(name) or len(name) > 64:
        raise CatalogError(
            f"invalid catalog name {name!r}: use lower-case letters, digits and '_', starting with a letter"
        )
    if name in _RESERVED_NAMES:
        raise CatalogError(f"invalid catalog name {name!r}: it is reserved by dualact.catalog")
    return name


def kind_of(derivation: Derivation) -> str:
    return "kernel" if derivation.activation is None else "activation"


# ---------------------------------------------------------------------------------------------------------
# small printing helpers


class _Code:
    def __init__(self, param_names: tuple[str, ...]):
        self.printer = JaxCodePrinter()
        prefix = "t"
        if any(re.fullmatch(r"t\d+", p) for p in param_names):
            prefix = "_t"
        self.prefix = prefix

    def expr(self, e) -> str:
        try:
            return self.printer.doprint(sp.sympify(e))
        except PrintMethodNotImplementedError as exc:
            missing = str(exc).split(":", 1)[-1].split("\n", 1)[0].strip()
            raise CatalogError(f"cannot emit JAX code: {missing} has no JAX equivalent") from None

    def cse(self, exprs: list[sp.Expr]) -> tuple[list[tuple[sp.Symbol, sp.Expr]], list[sp.Expr]]:
        temps, reduced = sp.cse(
            [balance_constants(e) for e in exprs], symbols=sp.numbered_symbols(self.prefix), order="canonical"
        )
        return temps, reduced

    def body(self, exprs: list[sp.Expr], like: str, array_syms: tuple) -> tuple[list[str], list[str]]:
        """cse'd assignment lines and the printed results (constants broadcast like ``like``)."""
        temps, reduced = self.cse(exprs)
        lines = [f"    {s} = {self.expr(e)}" for s, e in temps]
        temp_syms = {s for s, _ in temps}
        depends = {}
        for s, e in temps:
            free = e.free_symbols
            depends[s] = bool(free & set(array_syms)) or any(depends.get(t, False) for t in free & temp_syms)
        outs = []
        for r in reduced:
            free = r.free_symbols
            arr = bool(free & set(array_syms)) or any(depends.get(t, False) for t in free & temp_syms)
            outs.append(self.expr(r) if arr else f"jnp.full_like({like}, {self.expr(r)})")
        return lines, outs


def _wrap(label: str, e) -> str:
    text = f"{label} = {sp.sstr(e)}"
    return textwrap.fill(
        text, width=110, initial_indent="  ", subsequent_indent="      ", break_long_words=False,
        break_on_hyphens=False,
    )


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _accuracy_text(acc: dict) -> str:
    if not acc:
        return "not recorded"
    return ", ".join(f"{k} = {_fmt_value(acc[k])}" for k in sorted(acc))


def _finite(v) -> bool:
    v = sp.sympify(v)
    return not v.has(sp.nan, sp.zoo, sp.oo, -sp.oo)


def _value_at_zero(mean, act):
    """E[σ(u)] at zero variance: σ(0), or the q → 0⁺ limit of the mean where σ(0) is not available."""
    if act is not None:
        v = sp.sympify(act).subs(x, 0)
        if _finite(v) and not v.has(x):
            return v
    if mean is None:
        return None
    v = sp.sympify(mean).subs(q, 0)
    if _finite(v):
        return v
    try:
        v = sp.limit(mean, q, 0, "+")
    except Exception:  # noqa: BLE001 - SymPy limit failures are heterogeneous
        return None
    return v if _finite(v) else None


def _param_symbols(d: Derivation) -> list[sp.Symbol]:
    """The parameter symbols as they occur in the record's expressions (matched by name)."""
    found: dict[str, sp.Symbol] = {}
    for e in (d.activation, d.derivative, d.nngp, d.ntk_factor, d.diag, d.ntk_diag, d.mean, d.ntk_mean):
        if e is not None:
            for s in sp.sympify(e).free_symbols:
                found.setdefault(s.name, s)
    return [found.get(p, sp.Symbol(p, real=True)) for p in d.params]


def _check_params(d: Derivation) -> None:
    for p in d.params:
        if not p.isidentifier() or keyword.iskeyword(p) or p in _RESERVED_LOCALS or p.startswith("_"):
            raise CatalogError(f"parameter name {p!r} cannot be used in a generated module")


def _emittable(e, what: str) -> None:
    if e is not None and sp.sympify(e).has(sp.Integral, sp.Sum, sp.Derivative, sp.DiracDelta):
        raise CatalogError(f"cannot emit {what}: the formula contains an unevaluated integral, sum or delta")


# ---------------------------------------------------------------------------------------------------------
# closed-form modules


def _kw_signature(d: Derivation) -> str:
    parts = []
    for p in d.params:
        default = d.param_values.get(p)
        parts.append(f"{p}={float(default)!r}" if default is not None else f"{p}=None")
    return ", *, " + ", ".join(parts) if parts else ""


def _require_lines(d: Derivation) -> list[str]:
    return [f"    {p} = _require({p!r}, {p})" for p in d.params if d.param_values.get(p) is None]


class _ClosedFormEmitter:
    def __init__(self, d: Derivation, name: str):
        self.d = d
        self.name = name
        self.psyms = _param_symbols(d)
        self.pnames = tuple(d.params)
        self.code = _Code(self.pnames)
        self.blocks: list[str] = []
        self.uses_tangent = False
        self.kw = _kw_signature(d)
        self.require = _require_lines(d)
        self.pargs = "".join(f", {p}" for p in self.pnames)

    # -- one-variable functions of x ---------------------------------------------------------------------
    def activation_fn(self, fname: str, expr, doc: str) -> None:
        lines, (out,) = self.code.body([stabilize_pointwise(expr)], "x", (x,))
        self.blocks.append(
            "\n".join(
                [f"def {fname}(x{self.kw}):", f'    """{doc}"""', *self.require, "    (x,) = _floats(x)"]
                + lines
                + [f"    return {out}"]
            )
        )

    # -- E[σ(u)] helpers for zero variance ---------------------------------------------------------------
    def mean_fn(self, fname: str, expr, at_zero, doc: str) -> None:
        lines, (out,) = self.code.body([pair_exponentials(merge_exponentials(expr))], "q", (q,))
        zero = self.code.expr(at_zero)
        self.blocks.append(
            "\n".join(
                [
                    f"def {fname}(q{self.pargs}):",
                    f'    """{doc}"""',
                    "    pos = q > 0",
                    "    q = jnp.where(pos, q, 1.0)",
                ]
                + lines
                + [f"    return jnp.where(pos, {out}, {zero})"]
            )
        )

    # -- kernel functions --------------------------------------------------------------------------------
    def _rescaled(self, exprs: list, variables: tuple) -> tuple[list, list[str], tuple]:
        """The expressions in rescaled variances where their degrees call for it (see scaling.py): the
        expressions, the lines that rebind the variances, and the array symbols."""
        rescaled = rescale_all(exprs, variables)
        if rescaled is None:
            return exprs, [], variables
        scaled, top = rescaled
        names = ", ".join(v.name for v in variables)
        diag = variables[::2] if len(variables) == 3 else variables
        lines = [
            f"    _s = _num.variance_scale({', '.join(v.name for v in diag)}, degree={top})",
            "    _r = 1/_s",
            f"    {names} = {', '.join(f'_r*{v.name}' for v in variables)}",
        ]
        return scaled, lines, (*variables, SCALE, RECIPROCAL)

    def inner(self, fname: str, expr, variables: tuple) -> None:
        vnames = ", ".join(v.name for v in variables)
        stab = stabilize(pair_exponentials(merge_exponentials(expr)))
        like = variables[1].name if len(variables) == 3 else variables[0].name
        (value_expr,), prefix, arrays = self._rescaled([exact_gram(stab)], variables)
        lines, (out,) = self.code.body([value_expr], like, arrays)
        lines = prefix + lines
        head = [f"def {fname}({vnames}{self.pargs}):"]
        if len(variables) == 3 and needs_custom_jvp(stab, self.psyms):
            wrt = list(variables) + list(self.psyms)
            derivs, _ = partials(stab, wrt, self.psyms)
            all_exprs, jprefix, jarrays = self._rescaled([exact_gram(e) for e in (stab, *derivs)], variables)
            jlines, outs = self.code.body(all_exprs, like, jarrays)
            jlines = jprefix + jlines
            value, *douts = outs
            self.uses_tangent = True
            self.blocks.append("\n".join(["@jax.custom_jvp", *head, *lines, f"    return {out}"]))
            self.blocks.append(
                "\n".join(
                    [
                        f"def {fname}_jvp(primals, tangents):",
                        f"    {vnames}{self.pargs}{',' if len(wrt) == 1 else ''} = primals",
                        *jlines,
                        f"    value = {value}",
                        "    partials = (",
                        *[f"        {o}," for o in douts],
                        "    )",
                        "    return value, _tangent(value, partials, tangents)",
                        "",
                        "",
                        f"{fname}.defjvp({fname}_jvp, symbolic_zeros=True)",
                    ]
                )
            )
        else:
            self.blocks.append("\n".join([*head, *lines, f"    return {out}"]))

    def kernel_fn(self, fname: str, doc: str, mean_fn: str | None) -> None:
        body = [f"def {fname}(q11, q12, q22{self.kw}):", f'    """{doc}"""', *self.require]
        body.append("    q11, q12, q22 = _floats(q11, q12, q22)")
        if mean_fn is None:
            body.append(f"    return _{fname}(q11, q12, q22{self.pargs})")
        else:
            body += [
                "    zero = (q11 <= 0) | (q22 <= 0)",
                f"    value = _{fname}(jnp.where(zero, 1.0, q11), jnp.where(zero, 0.0, q12), "
                f"jnp.where(zero, 1.0, q22){self.pargs})",
                f"    return jnp.where(zero, {mean_fn}(q11{self.pargs}) * {mean_fn}(q22{self.pargs}), value)",
            ]
        self.blocks.append("\n".join(body))

    def diag_fn(self, fname: str, doc: str, at_zero) -> None:
        body = [f"def {fname}(q{self.kw}):", f'    """{doc}"""', *self.require, "    (q,) = _floats(q)"]
        if at_zero is None:
            body.append(f"    return _{fname}(q{self.pargs})")
        else:
            inner = f"_{fname}(jnp.where(zero, 1.0, q){self.pargs})"
            body += ["    zero = q <= 0", f"    return jnp.where(zero, {self.code.expr(at_zero)}, {inner})"]
        self.blocks.append("\n".join(body))

    def emit(self) -> str:
        d = self.d
        for what in ("nngp", "ntk_factor", "diag", "ntk_diag"):
            if getattr(d, what) is None:
                raise CatalogError(f"cannot emit {self.name!r}: the derivation has no {what} formula")
            _emittable(getattr(d, what), what)
        _emittable(d.activation, "activation")
        _emittable(d.derivative, "derivative")

        if d.activation is not None:
            self.activation_fn("activation", d.activation, "σ(x), elementwise.")
            if d.derivative is not None:
                self.activation_fn("derivative", d.derivative, "σ'(x), the almost-everywhere derivative.")

        m0 = _value_at_zero(d.mean, d.activation) if d.mean is not None else None
        dm0 = _value_at_zero(d.ntk_mean, d.derivative) if d.ntk_mean is not None else None
        if m0 is not None:
            self.mean_fn("_mean", d.mean, m0, "E[σ(u)] for u ~ N(0, q); σ(0) at q = 0.")
        if dm0 is not None:
            self.mean_fn("_ntk_mean", d.ntk_mean, dm0, "E[σ'(u)] for u ~ N(0, q); σ'(0) at q = 0.")

        kv = (q11, q12, q22)
        self.inner("_nngp", d.nngp, kv)
        self.kernel_fn(
            "nngp",
            "NNGP dual kernel T(q11, q12, q22) = E[σ(u)σ(v)].",
            "_mean" if m0 is not None else None,
        )
        self.inner("_ntk_factor", d.ntk_factor, kv)
        self.kernel_fn(
            "ntk_factor",
            "NTK factor Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)].",
            "_ntk_mean" if dm0 is not None else None,
        )
        self.inner("_diag", d.diag, (q,))
        self.diag_fn("diag", "T(q, q, q) = E[σ(u)²] for u ~ N(0, q).", None if m0 is None else m0**2)
        self.inner("_ntk_diag", d.ntk_diag, (q,))
        self.diag_fn("ntk_diag", "Ṫ(q, q, q) = E[σ'(u)²] for u ~ N(0, q).", None if dm0 is None else dm0**2)

        body = "\n\n\n".join(self.blocks)
        helpers = [HELPER_FLOATS]
        if "_require(" in body:
            helpers.append(HELPER_REQUIRE)
        if self.uses_tangent:
            helpers.append(HELPER_TANGENT)
        imports = []
        if self.uses_tangent:
            imports.append("import jax")
        imports.append("import jax.numpy as jnp")
        if "jsp." in body:
            imports.append("import jax.scipy.special as jsp")
        if self.uses_tangent:
            imports.append("from jax.custom_derivatives import SymbolicZero")
        imports.append("")
        if "_require(" in body:
            imports.append("from dualact.errors import MissingParameterError")
        if "_num." in body:
            imports.append("from dualact.runtime import numerics as _num")
        if imports[-1] == "":
            imports.pop()
        head = _header(d, self.name, "\n".join(imports), CONVENTIONS_CLOSED)
        return head + "".join(helpers) + "\n\n" + body + "\n"


def _conventions(d: Derivation, base: str) -> str:
    text = base
    if d.activation is not None and d.derivative is not None:
        text += "\n" + CONVENTION_AE
    return text


def _header(d: Derivation, name: str, imports: str, conventions: str, extra_formulas=()) -> str:
    kind = kind_of(d)
    if kind == "activation":
        title = f"{name}: dual kernel of σ(x) = {sp.sstr(d.activation)}"
    else:
        title = f"{name}: kernel-only dual kernel (no finite-width activation)"
    if len(title) > 110:
        title = f"{name}: dual kernel (NNGP and NTK factor)"
    summary = [f"Source:      {d.source!r}"]
    if kind == "activation":
        summary.append(f"Activation:  σ(x) = {sp.sstr(d.activation)}")
    else:
        summary.append("Kind:        kernel-only (no activation(x) or derivative(x))")
    if d.params:
        ps = ", ".join(
            f"{p} (default {d.param_values[p]!r})" if d.param_values.get(p) is not None else f"{p} (required)"
            for p in d.params
        )
        summary.append(f"Parameters:  {ps} (keyword-only)")
    method = f"{d.method} (tier: {d.tier})"
    if d.homogeneity is not None:
        method += f"; positively homogeneous of degree {d.homogeneity}"
    if d.kinks:
        method += f"; kinks at {', '.join(repr(float(k)) for k in d.kinks)}"
    summary.append(f"Method:      {method}")
    summary.append(f"Accuracy:    {_accuracy_text(d.accuracy)}")
    summary = [textwrap.fill(t, 110, subsequent_indent=" " * 13, break_long_words=False) for t in summary]
    formulas = list(extra_formulas)
    tabled = d.method in ("hermite", "quadrature_1d")  # parameters fixed, no closed-form T
    if not tabled:
        formulas += [
            _wrap("T(q11, q12, q22)", d.nngp),
            _wrap("Ṫ(q11, q12, q22)", d.ntk_factor),
            _wrap("T(q, q, q)", d.diag),
            _wrap("Ṫ(q, q, q)", d.ntk_diag),
        ]
    if d.activation is not None:
        formulas.append(_wrap("σ(x)", d.activation))
        if d.derivative is not None:
            formulas.append(_wrap("σ'(x)", d.derivative))
    if d.mean is not None:
        formulas.append(_wrap("E[σ(u)]", d.mean))
    if d.ntk_mean is not None:
        formulas.append(_wrap("E[σ'(u)]", d.ntk_mean))
    if d.method == "hermite":
        formulas.append("  T and Ṫ: truncated Hermite series Σ_j c_j(√q11) c_j(√q22) ρ^j (see Conventions).")
    params = tuple(d.params) if not tabled else ()
    defaults = (
        {p: float(d.param_values[p]) for p in d.params if d.param_values.get(p) is not None}
        if not tabled
        else {}
    )
    text = HEADER.substitute(
        title=title,
        summary="\n".join(summary),
        formulas="\n".join(formulas),
        conventions=_conventions(d, conventions),
        generator_version=GENERATOR_VERSION,
        sympy_version=sp.__version__,
        content_hash=d.content_hash(),
        imports=imports,
        name=repr(name),
        kind=repr(kind_of(d)),
        method=repr(d.method),
        source=repr(d.source),
        params=repr(params),
        defaults=repr(defaults),
    )
    if "\\" in text.split('"""', 2)[1]:
        # keep the docstring a plain (non-raw) string without escape surprises
        text = text.replace('"""', 'r"""', 1)
    return text


# ---------------------------------------------------------------------------------------------------------
# Hermite-fallback modules


def _fixed_params(d: Derivation) -> dict:
    missing = [p for p in d.params if d.param_values.get(p) is None]
    if missing:
        raise CatalogError(
            f"a Hermite-table kernel needs numeric values for all parameters; missing {', '.join(missing)}"
        )
    return {p: d.param_values[p] for p in d.params}


def _substituted(e, d: Derivation):
    if e is None:
        return None
    e = sp.sympify(e)
    by_name = {s.name: s for s in e.free_symbols}
    return e.xreplace({by_name[p]: sp.nsimplify(v) for p, v in _fixed_params(d).items() if p in by_name})


def hermite_table(d: Derivation):
    """The :class:`dualact.symbolic.hermite.HermiteTable` of a hermite-method derivation.

    The record stores only the table's metadata; the arrays come from the engine (if it exposes
    ``dualact.symbolic.derive.hermite_table(derivation)``) or are rebuilt with the recorded settings.
    """
    if d.hermite is None:
        raise CatalogError("a hermite-method derivation must carry its table metadata (field 'hermite')")
    try:
        from dualact.symbolic import derive as _derive

        hook = getattr(_derive, "hermite_table", None)
    except ImportError:
        hook = None
    if hook is not None:
        return hook(d)
    from dualact.symbolic.hermite import build_table

    meta = d.hermite
    act = _substituted(d.activation, d)
    der = _substituted(d.derivative, d) if d.derivative is not None else None
    kw = {}
    if meta.get("s_range"):
        kw["s_range"] = tuple(meta["s_range"])
    if meta.get("max_terms"):
        kw["max_terms"] = int(meta["max_terms"])
    if meta.get("tol"):
        kw["tol"] = float(meta["tol"])
    kinks = meta.get("kinks", list(d.kinks))
    return build_table(act, der, kinks=kinks, **kw)


def table_npz(table) -> bytes:
    """The ``.npz`` bytes of a Hermite table (``HermiteTable.save`` is deterministic)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "table.npz"
        table.save(path)
        return path.read_bytes()


def _pointwise_blocks(d: Derivation) -> list[str]:
    """Source of ``activation(x)`` and ``derivative(x)`` with the parameter values substituted (the modules
    of the tabulated methods, whose parameters are fixed)."""
    act = _substituted(d.activation, d)
    der = _substituted(d.derivative, d) if d.derivative is not None else sp.diff(act, x)
    code = _Code(())
    blocks = []
    for fname, e, doc in (
        ("activation", act, "σ(x), elementwise."),
        ("derivative", der, "σ'(x), the almost-everywhere derivative."),
    ):
        lines, (out,) = code.body([stabilize_pointwise(e)], "x", (x,))
        head = [f"def {fname}(x):", f'    """{doc}"""', "    (x,) = _floats(x)"]
        blocks.append("\n".join([*head, *lines, f"    return {out}"]))
    return blocks


def _emit_hermite(d: Derivation, name: str, table=None, npz: bytes | None = None) -> tuple[str, bytes]:
    if d.activation is None:
        raise CatalogError("a hermite-method entry needs its activation")
    fixed = _fixed_params(d)
    blocks = _pointwise_blocks(d)
    blocks.append(
        "def nngp(q11, q12, q22):\n"
        '    """NNGP dual kernel T(q11, q12, q22) = E[σ(u)σ(v)] (Hermite series)."""\n'
        "    return hermite_series.nngp(_table(), activation, KINKS, q11, q12, q22)"
    )
    blocks.append(
        "def ntk_factor(q11, q12, q22):\n"
        '    """NTK factor Ṫ(q11, q12, q22) = E[σ\'(u)σ\'(v)] (Hermite series)."""\n'
        "    return hermite_series.ntk_factor(_table(), derivative, KINKS, q11, q12, q22)"
    )
    blocks.append(
        "def diag(q):\n"
        '    """T(q, q, q) = E[σ(u)²] for u ~ N(0, q) (quadrature)."""\n'
        "    return hermite_series.diag(activation, KINKS, q, radii=_table().radii)"
    )
    blocks.append(
        "def ntk_diag(q):\n"
        '    """Ṫ(q, q, q) = E[σ\'(u)²] for u ~ N(0, q) (quadrature)."""\n'
        "    return hermite_series.ntk_diag(derivative, KINKS, q, radii=_table().radii)"
    )
    body = "\n\n\n".join(blocks)
    npz_name = f"{name}.npz"
    imports = ["import os", "", "import jax.numpy as jnp"]
    if "jsp." in body:
        imports.append("import jax.scipy.special as jsp")
    imports += ["", "from dualact.runtime import hermite_series"]
    imports += ["from dualact.symbolic.hermite import HermiteTable"]
    if "_num." in body:
        imports.append("from dualact.runtime import numerics as _num")
    fixed_text = ", ".join(f"{k} = {v!r}" for k, v in sorted(fixed.items())) or "none (no parameters)"
    conv = CONVENTIONS_HERMITE.replace("$npz", npz_name).replace("$fixed", fixed_text)
    head = _header(d, name, "\n".join(imports), conv)
    head += f"FIXED = {fixed!r}\nKINKS = {tuple(float(k) for k in d.kinks)!r}\n"
    loader = HERMITE_TABLE.replace("$npz_literal", repr(npz_name)).replace("$npz", npz_name)
    src = head + HELPER_FLOATS + loader + "\n\n" + body + "\n"
    if npz is None:
        npz = table_npz(table if table is not None else hermite_table(d))
    return src, npz


# ---------------------------------------------------------------------------------------------------------
# public API


def emit(derivation: Derivation, name: str, *, table=None, npz: bytes | None = None) -> EmittedModule:
    """Generate the module (and, for Hermite entries, its ``.npz`` table) for one catalog entry.

    For method "hermite" pass the engine's ``HermiteTable`` as ``table`` or the existing file's bytes as
    ``npz`` (regeneration keeps the table); otherwise the table is rebuilt from the recorded settings.
    """
    check_name(name)
    # emit from the stored (JSON) form, so that a module generated right after derivation is byte-identical
    # to one regenerated later from the registry record (srepr round trips re-evaluate products)
    derivation = Derivation.from_json_dict(derivation.to_json_dict())
    _check_params(derivation)
    if derivation.method == "hermite":
        src, npz = _emit_hermite(derivation, name, table, npz)
        return EmittedModule(name=name, kind=kind_of(derivation), source=src, npz=npz)
    if derivation.method == "quadrature_1d":
        from .emit_1d import emit_1d

        return EmittedModule(name=name, kind=kind_of(derivation), source=emit_1d(derivation, name))
    src = _ClosedFormEmitter(derivation, name).emit()
    return EmittedModule(name=name, kind=kind_of(derivation), source=src)


def module_source(derivation: Derivation, name: str) -> str:
    """The text of the generated module (see :func:`emit`)."""
    return emit(derivation, name).source


def load_module(derivation: Derivation, name: str = "derived", *, table=None) -> types.ModuleType:
    """Emit and execute the module in memory (no file is written).

    Used by :func:`dualact.derive` so that derived-but-not-catalogued kernels run exactly the code a catalog
    entry would. Only our own generated text is executed.
    """
    if derivation.method == "hermite" and table is None:
        table = hermite_table(derivation)
    emitted = emit(derivation, name, table=table, npz=b"" if table is not None else None)
    modname = f"dualact.catalog._derived.{name}"
    module = types.ModuleType(modname)
    module.__file__ = f"<dualact generated: {name}>"
    code = compile(emitted.source, module.__file__, "exec")
    exec(code, module.__dict__)  # noqa: S102 - text generated by dualact.codegen itself
    if derivation.method == "hermite":
        module._TABLE = table
    module.__dualact_derivation__ = derivation
    return module
