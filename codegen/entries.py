"""The declarative list of built-in catalog entries.

``dualact catalog regenerate --rederive`` builds the whole catalog from this list: each :class:`Entry` is
derived with :func:`dualact.symbolic.derive.derive` (or, for kernel-only entries, built directly) and
emitted by :mod:`dualact.codegen.emit`.

Parameters map a name to its default value, or to ``None`` when the caller must always pass it.
Expressions are written in the engine's input syntax (SymPy function names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import factorial

import sympy as sp

from dualact.symbolic.derivation import Derivation

__all__ = ["ENTRIES", "Entry", "by_name", "names"]


@dataclass(frozen=True)
class Entry:
    """One built-in catalog entry."""

    name: str
    expression: str | None
    params: dict[str, float | None] = field(default_factory=dict)
    kind: str = "activation"  # "activation" or "kernel" (kernel-only: no σ)
    note: str = ""
    build: Callable[[], Derivation] | None = None  # kernel-only entries build their Derivation directly

    def derive(self, *, use_cache: bool = True) -> Derivation:
        """The entry's Derivation (from the engine, or from :attr:`build`)."""
        if self.build is not None:
            return self.build()
        from dualact.symbolic.derive import derive

        return derive(
            self.expression, dict(self.params) or None, name=self.name, use_cache=use_cache, time_budget=240.0
        )


# ---------------------------------------------------------------------------------------------------------
# kernel-only entries


def _normalized_gaussian() -> Derivation:
    """Shankar et al.'s normalised Gaussian kernel (neural-tangents ``ExpNormalized(gamma, shift=-1)``).

    T = √(q11 q22)·exp(γ(ρ − 1)), Ṫ = γ·exp(γ(ρ − 1)), T(q, q, q) = q. There is no finite-width σ; the
    "means" below factorise T and Ṫ at ρ = 0 (T(a, 0, b) = m(a)·m(b)), which is what the zero-variance
    branch of the generated module uses.
    """
    from dualact.symbolic.symbols import param_symbol, q, q11, q12, q22

    g = param_symbol("gamma")
    rho = q12 / sp.sqrt(q11 * q22)
    return Derivation(
        source="normalized_gaussian(gamma): sqrt(q11*q22)*exp(gamma*(rho - 1))",
        method="kernel_only",
        tier="kernel",
        nngp=sp.sqrt(q11 * q22) * sp.exp(g * (rho - 1)),
        ntk_factor=g * sp.exp(g * (rho - 1)),
        diag=q,
        ntk_diag=g,
        mean=sp.sqrt(q) * sp.exp(-g / 2),
        ntk_mean=sp.sqrt(g) * sp.exp(-g / 2),
        params=("gamma",),
        param_values={"gamma": 1.0},
        homogeneity=1,
        accuracy={"error_bound": 0.0, "note": "exact by definition"},
    )


# ---------------------------------------------------------------------------------------------------------
# the list


def _hermite_poly(k: int) -> str:
    x = sp.Symbol("x")
    return sp.sstr(sp.expand(sp.hermite_prob(k, x) / sp.sqrt(factorial(k))))


_SELU_LAMBDA = "1.0507009873554804934193349852946"
_SELU_ALPHA = "1.6732632423543772848170429916717"

ENTRIES: tuple[Entry, ...] = (
    # piecewise-linear and homogeneous
    Entry("relu", "Max(x, 0)"),
    Entry("leaky_relu", "Max(x, 0) + alpha*Min(x, 0)", {"alpha": 0.01}),
    Entry("abrelu", "a*Min(x, 0) + b*Max(x, 0)", {"a": None, "b": None}),
    Entry("abs", "Abs(x)"),
    Entry("step", "Heaviside(x)", note="NTK factor uses the a.e. derivative 0 (no δ·δ term)"),
    Entry("sign", "sign(x)", note="NTK factor uses the a.e. derivative 0 (no δ·δ term)"),
    Entry("relu_shifted", "Max(x - 1/2, 0)"),
    # erf family
    Entry("erf", "erf(x)"),
    Entry("erf_family", "a*erf(b*x) + c", {"a": None, "b": None, "c": None}),
    Entry(
        "sigmoid_like",
        "erf(10000000000000000*x/24020563531719796)/2 + 1/2",
        note="neural-tangents Sigmoid_like: erf with a = 1/2, b = 1/2.4020563531719796, c = 1/2",
    ),
    Entry("gelu", "x*erf(x/sqrt(2))/2 + x/2"),
    # trigonometric / exponential
    Entry("sin", "sin(x)"),
    Entry("sin_family", "a*sin(b*x + c)", {"a": None, "b": None, "c": None}),
    Entry("cos", "cos(x)"),
    Entry("exp_family", "a*exp(b*x)", {"a": None, "b": None}),
    Entry("gaussian", "exp(-x**2/2)"),
    Entry("gaussian_family", "a*exp(b*x**2)", {"a": None, "b": None}, note="requires b < 0"),
    Entry("rbf", "sqrt(2)*sin(sqrt(2*gamma)*x + pi/4)", {"gamma": 1.0}),
    Entry("gabor", "exp(-x**2)*sin(x)"),
    # polynomials
    *(Entry(f"monomial_{k}", f"x**{k}" if k else "1") for k in range(6)),
    *(Entry(f"rectified_monomial_{k}", f"x**{k}*Heaviside(x)" if k else "Heaviside(x)") for k in range(4)),
    Entry("polynomial", "c0 + c1*x + c2*x**2 + c3*x**3", {"c0": None, "c1": None, "c2": None, "c3": None}),
    *(Entry(f"hermite_{k}", _hermite_poly(k), note=f"He_{k}(x)/sqrt({k}!)") for k in range(6)),
    # kernel-only
    Entry("normalized_gaussian", None, {"gamma": 1.0}, kind="kernel", build=_normalized_gaussian),
    # Hermite fallback (no closed form)
    Entry("tanh", "tanh(x)"),
    Entry("sigmoid", "1/(1 + exp(-x))"),
    Entry("softplus", "log(1 + exp(x))"),
    Entry("silu", "x/(1 + exp(-x))"),
    Entry("swish", "x/(1 + exp(-b*x))", {"b": 1.0}),
    Entry("mish", "x*tanh(log(1 + exp(x)))"),
    Entry("elu", "Max(x, 0) + Min(exp(x) - 1, 0)"),
    Entry("selu", f"{_SELU_LAMBDA}*(Max(x, 0) + {_SELU_ALPHA}*Min(exp(x) - 1, 0))"),
    Entry("gelu_tanh", "x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3)))/2"),
)

_BY_NAME = {e.name: e for e in ENTRIES}


def by_name(name: str) -> Entry | None:
    return _BY_NAME.get(name)


def names() -> list[str]:
    return [e.name for e in ENTRIES]
