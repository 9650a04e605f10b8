"""Shared helpers of the engine tests (``tests/test_engine_*.py``) and of ``benchmarks/derive.py``.

Kernels are derived by the engine (``dualact.derive``) once per process and memoised here, so several test
modules can share them. Reference values come from :mod:`dualact.symbolic.quadrature`, which shares no code
with the engine.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

import dualact
from dualact.symbolic import quadrature as quad


@dataclass(frozen=True)
class Spec:
    """An activation to derive, the parameter values to evaluate it at, and what we know about it."""

    source: str
    params: Mapping[str, float | None] | None = None
    call: Mapping[str, float] = field(default_factory=dict)  # keyword parameters at evaluation
    continuous: bool = True  # σ continuous ⇒ Ṫ = ∂T/∂q12 (Price)
    method: str = "closed_form"
    # ∂Ṫ/∂q12 at ρ = ±1: "inf" (σ' jumps, so Ṫ has the step's arcsine singularity), "finite" or "zero"
    ntk_edge: str = "finite"


SPECS: dict[str, Spec] = {
    "relu": Spec("relu(x)", ntk_edge="inf"),
    "step": Spec("step(x)", continuous=False, ntk_edge="zero"),
    "sign": Spec("sign(x)", continuous=False, ntk_edge="zero"),
    "abs": Spec("Abs(x)", ntk_edge="inf"),
    "erf": Spec("erf(x)"),
    "sin": Spec("sin(x)"),
    "gaussian": Spec("exp(-x**2/2)"),
    "cubic": Spec("x**3"),
    "leaky": Spec("Max(x, x/10)", ntk_edge="inf"),
    "affine_relu": Spec("3*relu(2*x)+1", ntk_edge="inf"),
    "relu_plus_erf": Spec("relu(x)+erf(x)/2", ntk_edge="inf"),
    "rect_square": Spec("x**2*Heaviside(x)"),
    "erf_family": Spec("a*erf(b*x)+c", {"a": None, "b": None, "c": None}, {"a": 1.5, "b": 0.7, "c": -0.3}),
    "tanh": Spec("tanh(x)", method="hermite"),
}


@functools.cache
def kernel(name: str):
    """The engine's DualKernel of ``SPECS[name]`` (fresh derivation, no cache), parameters bound."""
    spec = SPECS[name]
    k = dualact.derive(spec.source, dict(spec.params) if spec.params else None, use_cache=False)
    assert k.method == spec.method, (name, k.method)
    return k.bind(**spec.call) if spec.call else k


def numeric_activation(k, call: Mapping[str, float] | None = None) -> sp.Expr:
    """σ(x) of a DualKernel with its parameters replaced by exact rationals."""
    act = k.derivation.activation
    values = {**k.derivation.param_values, **(call or {})}
    by_name = {s.name: s for s in act.free_symbols}
    return act.xreplace({by_name[n]: sp.nsimplify(v, rational=True) for n, v in values.items() if n in by_name})


def reference(expr: sp.Expr, a: float, b: float, c: float, derivative: bool = False) -> float:
    return quad.dual_reference(expr, a, b, c, derivative=derivative)


def reference_1d(expr: sp.Expr, q: float) -> float:
    """E[σ(u)²], u ~ N(0, q), by kink-aware quadrature."""
    f = quad.lambdify_numpy(expr)
    return quad.expectation_1d(lambda t: f(t) ** 2, q, quad.find_kinks(expr))


def pair_1d(expr: sp.Expr, a: float, b: float, sign: float) -> float:
    """E[σ(√a z)σ(±√b z)] (the dual at ρ = ±1) by kink-aware quadrature."""
    f = quad.lambdify_numpy(expr)
    kinks = quad.find_kinks(expr)
    sa, sb = math.sqrt(a), sign * math.sqrt(b)
    zk = sorted({k / sa for k in kinks} | {k / sb for k in kinks})
    return quad.expectation_1d(lambda z: f(sa * z) * f(sb * z), 1.0, zk)


# ---------------------------------------------------------------------------------------------------------
# Hermite accuracy (coverage test and benchmark)

Q_GRID = tuple(2.0**e for e in (-4, -2, 0, 2, 4))  # variances in [1/16, 16]
RHO_GRID = (-0.99, -0.7, -0.3, 0.0, 0.4, 0.8, 0.95, 0.99)


def hermite_accuracy(k, qs=Q_GRID, rhos=RHO_GRID) -> dict[str, float]:
    """Measured normalised errors of a Hermite DualKernel against kink-aware quadrature.

    ``nngp``/``ntk``: max |ΔT| / √(T(a,a,a) T(b,b,b)) over q11, q22 ∈ ``qs`` and |ρ| ≤ 0.99 (``rhos``);
    ``diag``/``ntk_diag``: max relative error of T(q,q,q), Ṫ(q,q,q); ``edge``: max normalised error of T and Ṫ
    at ρ = ±1 (q11 ≠ q22 included).
    """
    act = numeric_activation(k)
    der = quad.ae_derivative(act)
    err = {"nngp": 0.0, "ntk": 0.0, "diag": 0.0, "ntk_diag": 0.0, "edge": 0.0}
    dref = {q: reference_1d(act, q) for q in qs}
    ndref = {q: reference_1d(der, q) for q in qs}
    for q in qs:
        err["diag"] = max(err["diag"], abs(float(k.diag(q)) - dref[q]) / dref[q])
        err["ntk_diag"] = max(err["ntk_diag"], abs(float(k.ntk_diag(q)) - ndref[q]) / ndref[q])
    pairs = [(a, b) for i, a in enumerate(qs) for b in qs[i:]]
    a_arr = np.array([a for a, b in pairs for _ in rhos])
    b_arr = np.array([b for a, b in pairs for _ in rhos])
    r_arr = np.array([r for _ in pairs for r in rhos])
    c_arr = r_arr * np.sqrt(a_arr * b_arr)
    T = np.asarray(k.nngp(a_arr, c_arr, b_arr))
    Td = np.asarray(k.ntk_factor(a_arr, c_arr, b_arr))
    for i, (a, b, c) in enumerate(zip(a_arr, b_arr, c_arr, strict=True)):
        rT = reference(act, a, b, c)
        rD = reference(act, a, b, c, derivative=True)
        err["nngp"] = max(err["nngp"], abs(T[i] - rT) / math.sqrt(dref[a] * dref[b]))
        err["ntk"] = max(err["ntk"], abs(Td[i] - rD) / math.sqrt(ndref[a] * ndref[b]))
    for a, b in pairs:
        for s in (1.0, -1.0):
            c = s * math.sqrt(a * b)
            e1 = abs(float(k.nngp(a, c, b)) - pair_1d(act, a, b, s)) / math.sqrt(dref[a] * dref[b])
            e2 = abs(float(k.ntk_factor(a, c, b)) - pair_1d(der, a, b, s)) / math.sqrt(ndref[a] * ndref[b])
            err["edge"] = max(err["edge"], e1, e2)
    return err


# ---------------------------------------------------------------------------------------------------------
# jitted, fixed-shape evaluation (hypothesis draws batches of varying length; padding to a few bucket sizes
# keeps the number of compilations small)


def _bucket(n: int) -> int:
    return max(256, 1 << (n - 1).bit_length())


class Fast:
    """Jitted evaluation of a DualKernel on padded 1-D batches; two compiled functions per kernel.

    ``values(a, c, b)``: dict with nngp, ntk, dT (= ∂T/∂q12), diag_a, diag_b, ntk_diag_a, ntk_diag_b;
    ``grads(a, c, b)``: dict with gT, gTd (gradients of T and Ṫ w.r.t. (q11, q12, q22)), dTd (= ∂Ṫ/∂q12),
    gdiag_a, gntk_diag_a (derivatives of the diagonals at q = a).
    """

    def __init__(self, k):
        import jax
        import jax.numpy as jnp

        self.k = k

        def values(a, c, b):
            T, dT = jax.value_and_grad(lambda cc: jnp.sum(k.nngp(a, cc, b)))(c)
            return {
                "nngp": k.nngp(a, c, b), "ntk": k.ntk_factor(a, c, b), "dT": dT,
                "diag_a": k.diag(a), "diag_b": k.diag(b), "ntk_diag_a": k.ntk_diag(a), "ntk_diag_b": k.ntk_diag(b),
            }

        def grads(a, c, b):
            gT = jax.grad(lambda *v: jnp.sum(k.nngp(*v)), argnums=(0, 1, 2))(a, c, b)
            gTd = jax.grad(lambda *v: jnp.sum(k.ntk_factor(*v)), argnums=(0, 1, 2))(a, c, b)
            return {
                "gT": jnp.stack(gT), "gTd": jnp.stack(gTd), "dTd": gTd[1],
                "gdiag_a": jax.grad(lambda q: jnp.sum(k.diag(q)))(a),
                "gntk_diag_a": jax.grad(lambda q: jnp.sum(k.ntk_diag(q)))(a),
            }

        self._fns = {"values": jax.jit(values), "grads": jax.jit(grads)}

    def _call(self, what, a, c, b):
        arrays = [np.asarray(v, dtype=np.float64) for v in (a, c, b)]
        arrays = np.broadcast_arrays(*arrays)
        shape = arrays[0].shape
        flat = [v.ravel() for v in arrays]
        n = flat[0].size
        m = _bucket(n)
        padded = [np.concatenate([v, np.full(m - n, v[0])]) for v in flat]
        out = self._fns[what](*padded)
        return {
            key: np.asarray(v, dtype=np.float64)[..., :n].reshape(v.shape[:-1] + shape) for key, v in out.items()
        }

    def values(self, a, c, b) -> dict[str, np.ndarray]:
        return self._call("values", a, c, b)

    def grads(self, a, c, b) -> dict[str, np.ndarray]:
        return self._call("grads", a, c, b)


@functools.cache
def fast(name: str) -> Fast:
    return Fast(kernel(name))
