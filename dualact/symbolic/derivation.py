"""The record the engine produces and every consumer (codegen, catalog, runtime, cache) reads.

A :class:`Derivation` is plain data: SymPy expressions in the canonical symbols of
:mod:`dualact.symbolic.symbols`, plus provenance and accuracy figures. It serialises to JSON
(expressions as ``srepr``) so that the disk cache and the catalog registry can store it losslessly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import sympy as sp

METHODS = ("closed_form", "one_dimensional", "quadrature_1d", "hermite", "kernel_only")

_EXPR_FIELDS = (
    "activation",
    "derivative",
    "nngp",
    "ntk_factor",
    "diag",
    "ntk_diag",
    "mean",
    "ntk_mean",
)

_OPTIONAL_FIELDS = ("conditional",)  # left out of the JSON when None, so older content hashes stay valid


@dataclass(frozen=True)
class Derivation:
    """Everything known about one dual kernel.

    Expressions (any may be ``None`` where it does not apply):
      activation: σ(x), a SymPy expression in ``x`` and the parameters (``None`` for kernel-only entries).
      derivative: the almost-everywhere derivative σ'(x) (Dirac deltas dropped).
      nngp: T(q11, q12, q22) = E[σ(u)σ(v)].
      ntk_factor: Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)] with σ' the a.e. derivative.
      diag, ntk_diag: T(q, q, q) and Ṫ(q, q, q) by their own formulas.
      mean, ntk_mean: E[σ(u)] and E[σ'(u)] for u ~ N(0, q) (used for zero-variance inputs).

    Metadata:
      source: the text (or ``srepr``) the user gave.
      params: names of the activation's free parameters, sorted.
      param_values: default values given at derivation time (may be empty).
      method: one of ``METHODS``.
      tier: which engine tier produced it ("gaussian_class", "price", "polar", "kernel", "hermite", ...).
      homogeneity: k if σ is positively homogeneous of degree k, else ``None``.
      kinks: sorted real points where σ or σ' is not smooth (for quadrature panel edges).
      accuracy: verification figures (e.g. {"max_rel_err_nngp": 3e-15, "points": 6}).
      hermite: for method "hermite", a dict describing the coefficient table (see ``dualact.symbolic.hermite``).
      ntk_singular: True when ∂Ṫ/∂q12 is genuinely infinite at ρ = ±1 (codegen emits a custom_jvp).
      conditional: for method "quadrature_1d", the pieces of σ, σ', σ², σ'² and the closed forms of
      g(μ, s) = E[σ(μ + s z)] and gd(μ, s) = E[σ'(μ + s z)] (srepr), see ``dualact.symbolic.conditional``;
      omitted from the JSON when ``None`` (older records and hashes are unchanged).
    """

    source: str
    method: str
    tier: str
    activation: sp.Expr | None = None
    derivative: sp.Expr | None = None
    nngp: sp.Expr | None = None
    ntk_factor: sp.Expr | None = None
    diag: sp.Expr | None = None
    ntk_diag: sp.Expr | None = None
    mean: sp.Expr | None = None
    ntk_mean: sp.Expr | None = None
    params: tuple[str, ...] = ()
    param_values: dict[str, float] = field(default_factory=dict)
    homogeneity: int | None = None
    kinks: tuple[float, ...] = ()
    accuracy: dict[str, Any] = field(default_factory=dict)
    hermite: dict[str, Any] | None = None
    ntk_singular: bool = False
    conditional: dict[str, Any] | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")

    # ---- serialisation -------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name in _OPTIONAL_FIELDS and v is None:
                continue
            if f.name in _EXPR_FIELDS:
                d[f.name] = None if v is None else sp.srepr(v)
            elif f.name in ("params", "kinks"):
                d[f.name] = list(v)
            else:
                d[f.name] = v
        return d

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> Derivation:
        kw = dict(d)
        for name in _EXPR_FIELDS:
            if kw.get(name) is not None:
                kw[name] = _from_srepr(kw[name])
        kw["params"] = tuple(kw.get("params", ()))
        kw["kinks"] = tuple(kw.get("kinks", ()))
        return cls(**kw)

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Derivation:
        return cls.from_json_dict(json.loads(text))

    def content_hash(self) -> str:
        """sha256 of the canonical JSON (stable across runs and machines)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def replace(self, **changes) -> Derivation:
        return dataclasses.replace(self, **changes)


def _from_srepr(text: str) -> sp.Expr:
    """Inverse of ``sp.srepr`` (trusted input: only our own cache/registry files)."""
    return eval(text, _SREPR_NAMESPACE)  # noqa: S307 - round-trip of files dualact wrote itself


_SREPR_NAMESPACE: dict[str, Any] = {name: getattr(sp, name) for name in dir(sp) if not name.startswith("_")}
