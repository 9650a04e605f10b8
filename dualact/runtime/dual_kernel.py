"""The :class:`DualKernel`: one activation's infinite-width kernels, backed by a generated module.

A generated module (a file of :mod:`dualact.catalog` or an in-memory module from
:func:`dualact.codegen.emit.load_module`) supplies the JAX functions; the
:class:`~dualact.symbolic.derivation.Derivation` supplies the formulas and provenance.
"""

from __future__ import annotations

import functools
import types
from pathlib import Path
from typing import Any

import numpy as np

from dualact.errors import DualactError, MissingParameterError

__all__ = ["DualKernel", "NotHomogeneousError"]


class NotHomogeneousError(DualactError, ValueError):
    """The kernel is not of the form (q11 q22)^(k/2)·κ(ρ), so it has no Taylor series in ρ alone."""


def _error_bound(accuracy: dict[str, Any] | None) -> float | None:
    if not accuracy:
        return None
    if isinstance(accuracy.get("error_bound"), (int, float)):
        return float(accuracy["error_bound"])
    vals = [
        float(v)
        for k, v in accuracy.items()
        if "err" in k and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return max(vals) if vals else None


class DualKernel:
    """NNGP map T, NTK factor Ṫ and their diagonals for one activation σ.

    For (u, v) ~ N(0, [[q11, q12], [q12, q22]]):

    * ``nngp(q11, q12, q22)`` = T = E[σ(u)σ(v)];
    * ``ntk_factor(q11, q12, q22)`` = Ṫ = E[σ'(u)σ'(v)] (σ' the almost-everywhere derivative);
    * ``diag(q)`` = T(q, q, q), ``ntk_diag(q)`` = Ṫ(q, q, q);
    * ``activation(x)``, ``derivative(x)``: σ and σ' themselves (absent for kernel-only entries).

    All are pure JAX functions (jit, vmap and grad work) that broadcast their array arguments. Parametric
    kernels take their parameters by keyword; :meth:`bind` fixes some of them.

    Example:

    >>> import dualact.catalog
    >>> relu = dualact.catalog.get("relu")
    >>> relu
    DualKernel('relu', method='closed_form', params=())
    >>> round(float(relu.nngp(1.0, 0.0, 1.0)), 6)   # 1/(2π)
    0.159155
    >>> float(relu.diag(2.0))
    1.0
    >>> import jax
    >>> round(float(jax.grad(relu.nngp, argnums=1)(1.0, 0.0, 1.0)), 6)   # ∂T/∂q12 = Ṫ = 1/4
    0.25
    """

    def __init__(
        self,
        module: types.ModuleType,
        derivation,
        *,
        name: str | None = None,
        kind: str | None = None,
        path: str | Path | None = None,
        bound: dict[str, Any] | None = None,
    ):
        self.module = module
        self.derivation = derivation
        self.name = name or getattr(module, "NAME", None) or "derived"
        self.kind = kind or getattr(module, "KIND", None) or (
            "kernel" if derivation.activation is None else "activation"
        )
        self.path = Path(path) if path is not None else None
        self._bound = dict(bound or {})

    @classmethod
    def from_derivation(cls, derivation, name: str | None = None, *, table=None) -> DualKernel:
        """Generate the module in memory (no file written) and wrap it.

        ``table``: the engine's ``HermiteTable`` for method "hermite" (rebuilt from the record if omitted).
        """
        from dualact.codegen.emit import load_module

        module = load_module(derivation, name or "derived", table=table)
        return cls(module, derivation, name=name or "derived")

    # ---- copying and pickling ----------------------------------------------------------------------------
    # A DualKernel is immutable (bind returns a new one), so copies may share it. It holds its generated
    # module, which neither deepcopy nor pickle can handle: deepcopy returns self, and pickling stores what
    # rebuilds it — the catalog name for a catalog entry, else the derivation as JSON — plus the bound
    # parameters. Layers holding one (Activation) can then be cloned by sklearn and pickled.
    def __copy__(self) -> DualKernel:
        return self

    def __deepcopy__(self, memo) -> DualKernel:
        return self

    def __reduce__(self):
        from_catalog = self.path is not None
        return (
            _rebuild,
            (self.name, self.kind, from_catalog, self.derivation.to_json(), dict(self._bound)),
        )

    # ---- metadata --------------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return self.derivation.method

    @property
    def tier(self) -> str:
        return self.derivation.tier

    @property
    def expression(self):
        """T(q11, q12, q22) as a SymPy expression (``None`` for Hermite-table entries)."""
        return self.derivation.nngp

    @property
    def ntk_expression(self):
        return self.derivation.ntk_factor

    @property
    def diag_expression(self):
        return self.derivation.diag

    @property
    def activation_expression(self):
        return self.derivation.activation

    @property
    def params(self) -> tuple[str, ...]:
        """Names of the keyword parameters the kernel functions take."""
        return tuple(getattr(self.module, "PARAMS", self.derivation.params))

    @property
    def defaults(self) -> dict[str, float]:
        """Parameter values used when a call omits them (recorded defaults, then :meth:`bind` values)."""
        out = dict(getattr(self.module, "DEFAULTS", {}))
        out.update(self._bound)
        return out

    @property
    def homogeneity(self) -> int | None:
        return self.derivation.homogeneity

    @property
    def accuracy(self) -> dict[str, Any]:
        return dict(self.derivation.accuracy)

    @property
    def error_bound(self) -> float | None:
        """The headline error figure of :attr:`accuracy` (``None`` if not recorded)."""
        return _error_bound(self.derivation.accuracy)

    @property
    def has_activation(self) -> bool:
        return hasattr(self.module, "activation")

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in sorted(self._bound.items()))
        return f"DualKernel({self.name!r}, method={self.method!r}, params={self.params!r}{extra})"

    # ---- parameters ------------------------------------------------------------------------------------
    def bind(self, **params) -> DualKernel:
        """A copy with some parameters fixed, e.g. ``erf_family.bind(a=1.0, b=2.0, c=0.0)``."""
        self._check_names(params)
        return DualKernel(
            self.module, self.derivation, name=self.name, kind=self.kind, path=self.path,
            bound={**self._bound, **params},
        )

    def _check_names(self, params: dict[str, Any]) -> None:
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            expected = ", ".join(self.params) or "none"
            raise DualactError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}; the kernel's parameters: {expected}"
            )

    def _kw(self, params: dict[str, Any]) -> dict[str, Any]:
        self._check_names(params)
        kw = {**self._bound, **params}
        self._check_convergence(kw)
        return kw

    def _check_convergence(self, kw: dict[str, Any]) -> None:
        """Raise DivergentActivationError for parameter values that make E[σ(u)²] infinite.

        The engine rejects exp(εx²)-type growth when it sees numbers; with a symbolic parameter (``exp(a*x**2)``
        derived with ``params={"a": None}``) the formula is only the analytic continuation for a > 0 (finite
        but wrong, or NaN), so the engine's growth check is repeated here on the parameter-dependent
        exponentials whenever the values are concrete numbers (not under jit tracing).
        """
        if not self._parametric_exponentials:
            return
        values = {**self.defaults, **kw}
        concrete = {k: float(v) for k, v in values.items()
                    if isinstance(v, (int, float, np.number, np.ndarray)) and np.ndim(v) == 0}
        from dualact.symbolic.normalize import check_exp_growth

        for sub in self._parametric_exponentials:
            names = {s.name for s in sub.free_symbols} - {"x"}
            if names <= set(concrete):
                shown = ", ".join(f"{n} = {concrete[n]:g}" for n in sorted(names))
                check_exp_growth(sub.subs({s: concrete[s.name] for s in sub.free_symbols if s.name in names}),
                                 where=f" at {self.name}'s parameter values {shown}")

    @functools.cached_property
    def _parametric_exponentials(self) -> tuple:
        """The exp(P(x)) atoms of σ with a quadratic P whose coefficients depend on parameters (the only ones
        whose growth the engine could not judge; empty for most kernels)."""
        act = self.derivation.activation
        if act is None:
            return ()
        import sympy as sp

        from dualact.symbolic.symbols import x

        return tuple(e for e in act.atoms(sp.exp)
                     if e.free_symbols - {x} and e.args[0].is_polynomial(x) and sp.degree(e.args[0], x) == 2)

    def _numeric_params(self, params: dict[str, Any]) -> dict[str, float]:
        values = {**self.defaults, **params}
        missing = [p for p in self.params if values.get(p) is None]
        if missing:
            raise MissingParameterError(f"{self.name}: pass a value for parameter {missing[0]!r}")
        return {p: float(values[p]) for p in self.params}

    # ---- kernel functions ------------------------------------------------------------------------------
    def nngp(self, q11, q12, q22, **params):
        """T(q11, q12, q22) = E[σ(u)σ(v)]."""
        return self.module.nngp(q11, q12, q22, **self._kw(params))

    def ntk_factor(self, q11, q12, q22, **params):
        """Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)]."""
        return self.module.ntk_factor(q11, q12, q22, **self._kw(params))

    def diag(self, q, **params):
        """T(q, q, q) = E[σ(u)²], u ~ N(0, q)."""
        return self.module.diag(q, **self._kw(params))

    def ntk_diag(self, q, **params):
        """Ṫ(q, q, q) = E[σ'(u)²], u ~ N(0, q)."""
        return self.module.ntk_diag(q, **self._kw(params))

    def activation(self, x, **params):
        """σ(x), elementwise."""
        self._need_activation()
        return self.module.activation(x, **self._kw(params))

    def derivative(self, x, **params):
        """σ'(x), the almost-everywhere derivative."""
        self._need_activation()
        return self.module.derivative(x, **self._kw(params))

    def _need_activation(self) -> None:
        if not self.has_activation:
            raise DualactError(f"{self.name} is a kernel-only entry: it has no activation function σ(x)")

    # ---- series ----------------------------------------------------------------------------------------
    def _activation_numeric(self, params):
        import sympy as sp

        act = self.derivation.activation
        if act is None:
            raise DualactError(f"{self.name} is a kernel-only entry: it has no Hermite coefficients")
        fixed = self.method in ("hermite", "quadrature_1d")
        values = self._fixed_values() if fixed else self._numeric_params(params)
        by_name = {s.name: s for s in act.free_symbols}
        return act.xreplace({by_name[k]: sp.nsimplify(v) for k, v in values.items() if k in by_name})

    def _fixed_values(self) -> dict[str, float]:
        return {k: float(v) for k, v in getattr(self.module, "FIXED", self.derivation.param_values).items()}

    def hermite_coefficients(self, s: float, J: int, *, dps: int = 30, **params) -> np.ndarray:
        """c_j(s) = E[σ(s z) h_j(z)] for j < J (z ~ N(0, 1), h_j = He_j/√j!), as a float64 array."""
        from dualact.symbolic.hermite import hermite_coefficients

        act = self._activation_numeric(params)
        kinks = tuple(self.derivation.kinks) or None
        coeffs = hermite_coefficients(act, s, int(J), kinks, dps)
        return np.array([float(c) for c in coeffs], dtype=np.float64)

    def taylor_coefficients(self, J: int, **params) -> tuple[np.ndarray, np.ndarray]:
        """Taylor coefficients of κ and κ' where T = (q11 q22)^(k/2)·κ(ρ) (k = :attr:`homogeneity`).

        Returns ``(kappa, kappa_prime)``, each of length J: κ_j = c_j(1)² (Mehler), κ'_j = (j+1)·κ_{j+1}.
        Kernel-only entries expand κ(ρ) = T(1, ρ, 1) with ``sympy.series``.
        """
        if self.homogeneity is None:
            raise NotHomogeneousError(
                f"{self.name} is not positively homogeneous, so T is not (q11 q22)^(k/2)·κ(ρ); "
                "use hermite_coefficients(s, J) for its scale-dependent coefficients"
            )
        J = int(J)
        if self.derivation.activation is not None:
            c = self.hermite_coefficients(1.0, J + 1, **params)
            kappa = c**2
        else:
            kappa = self._series_kappa(J + 1, params)
        kprime = np.arange(1, J + 1) * kappa[1 : J + 1]
        return kappa[:J].copy(), kprime

    def _series_kappa(self, n: int, params) -> np.ndarray:
        import sympy as sp

        from dualact.symbolic.symbols import q11, q12, q22

        T = self.derivation.nngp
        values = self._numeric_params(params)
        by_name = {s.name: s for s in T.free_symbols}
        T = T.xreplace({by_name[k]: sp.nsimplify(v) for k, v in values.items() if k in by_name})
        rho = sp.Symbol("rho", real=True)
        kappa = sp.sympify(T).subs({q11: 1, q22: 1}).subs(q12, rho)
        poly = sp.series(kappa, rho, 0, n).removeO()
        return np.array([float(sp.N(poly.coeff(rho, j), 30)) for j in range(n)], dtype=np.float64)


def _rebuild(name, kind, from_catalog, derivation_json, bound) -> DualKernel:
    """Unpickle a :class:`DualKernel` (see ``DualKernel.__reduce__``).

    A catalog entry is looked up again by name, provided the catalog still holds the same derivation;
    otherwise (or for a kernel from :func:`dualact.derive`) the module is generated from the derivation.
    """
    from dualact.symbolic.derivation import Derivation

    derivation = Derivation.from_json(derivation_json)
    kernel = None
    if from_catalog:
        try:
            from dualact import catalog

            found = catalog.get(name)
        except Exception:  # entry gone or catalog unavailable: fall back to the derivation
            found = None
        if found is not None and found.derivation.content_hash() == derivation.content_hash():
            kernel = found
    if kernel is None:
        from dualact.codegen.emit import load_module

        module = load_module(derivation, name)
        kernel = DualKernel(module, derivation, name=name, kind=kind)
    return kernel.bind(**bound) if bound else kernel
