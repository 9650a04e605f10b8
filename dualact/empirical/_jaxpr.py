"""A flat, inlined view of a jaxpr for the structured-derivatives interpreter (public JAX APIs only).

:func:`flatten` traces ``fn(param_leaves, *inputs)`` with :func:`jax.make_jaxpr` and inlines call-like
equations (``jit``/``pjit``, ``closed_call``, ``remat``/``checkpoint``) recursively, so a jitted or
rematerialized model keeps its per-primitive structure. ``custom_jvp_call``/``custom_vjp_call`` are inlined
only when they consume a parameter-only value (their primal is then differentiated; elsewhere their custom
rule is kept by evaluating the equation as is). Everything else (``scan``, ``while``, ``cond``, ``gather``...)
stays one opaque equation.

The result also records a taint analysis: which variables depend on the inputs ``x`` (per example) and which
on the parameters only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, DebugInfo, DropVar, Jaxpr, Literal, Var, jaxpr_as_fun

_ALWAYS_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint"})
_INLINE_IF_PARAMS = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})


@dataclass(frozen=True)
class Const:
    """A literal or closed-over constant."""

    value: Any


@dataclass
class Eqn:
    """One flattened equation: inputs are variable ids (ints) or :class:`Const`; outputs are variable ids."""

    name: str
    primitive: Any
    params: dict
    inputs: list
    outputs: list[int]
    out_shapes: list[tuple[int, ...]]
    out_dtypes: list[Any]
    source: Any  # the original JaxprEqn
    _fn: Any = None

    def evaluate(self, args: list) -> list:
        """Evaluate on concrete (or traced) arrays, in the order of ``inputs``."""
        if not _has_subjaxpr(self.params):
            out = self.primitive.bind(*args, **self.params)
            return list(out) if self.primitive.multiple_results else [out]
        if self._fn is None:
            src = self.source
            uniq = list(dict.fromkeys(v for v in src.invars if isinstance(v, Var)))
            outs = [Var(v.aval) if isinstance(v, DropVar) else v for v in src.outvars]
            info = DebugInfo(
                "dualact.empirical",
                self.name,
                tuple(f"a{t}" for t in range(len(uniq))),
                tuple(f"r{t}" for t in range(len(outs))),
            )
            jaxpr = Jaxpr([], uniq, outs, [src.replace(outvars=outs)], src.effects, info)
            fn = jaxpr_as_fun(ClosedJaxpr(jaxpr, []))
            pos = [src.invars.index(v) for v in uniq]
            self._fn = (fn, pos)
        fn, pos = self._fn
        return list(fn(*[args[p] for p in pos]))


def _has_subjaxpr(params) -> bool:
    for v in params.values():
        if isinstance(v, (ClosedJaxpr, Jaxpr)):
            return True
        if isinstance(v, (tuple, list)) and any(isinstance(u, (ClosedJaxpr, Jaxpr)) for u in v):
            return True
    return False


@dataclass
class Program:
    """Flattened program: ``param_ids`` and ``input_ids`` are the leading variables, then ``eqns``."""

    param_ids: list[int]
    input_ids: list[int]
    eqns: list[Eqn]
    outputs: list  # ids or Const
    out_tree: Any
    shapes: dict[int, tuple[int, ...]] = field(default_factory=dict)
    dtypes: dict[int, Any] = field(default_factory=dict)
    x_dep: set[int] = field(default_factory=set)
    param_only: set[int] = field(default_factory=set)

    def is_param_only(self, node) -> bool:
        return not isinstance(node, Const) and node in self.param_only

    def is_x_dep(self, node) -> bool:
        return not isinstance(node, Const) and node in self.x_dep

    def run(self, param_vals, input_vals, perturb=None, record=()):
        """Evaluate; ``perturb[id]`` is added to variable ``id`` when produced -> (outputs, recorded)."""
        env = dict(zip(self.param_ids, param_vals, strict=True))
        env.update(zip(self.input_ids, input_vals, strict=True))
        perturb = perturb or {}

        def read(node):
            return node.value if isinstance(node, Const) else env[node]

        for eqn in self.eqns:
            outs = eqn.evaluate([read(v) for v in eqn.inputs])
            for v, o in zip(eqn.outputs, outs, strict=True):
                env[v] = o + perturb[v] if v in perturb else o
        outs = [read(v) for v in self.outputs]
        return jax.tree_util.tree_unflatten(self.out_tree, outs), {i: env[i] for i in record}


def flatten(fn, param_leaves, *inputs) -> Program:
    """Trace ``fn(param_leaves, *inputs)`` and return the inlined :class:`Program` with its taint analysis."""
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(param_leaves, *inputs)
    out_tree = jax.tree_util.tree_structure(out_shape)
    counter = itertools.count()
    prog = Program([], [], [], [], out_tree)
    n_params = len(jax.tree_util.tree_leaves(param_leaves))

    def new_var(aval):
        i = next(counter)
        prog.shapes[i] = tuple(aval.shape)
        prog.dtypes[i] = aval.dtype
        return i

    env: dict = {}
    for t, v in enumerate(closed.jaxpr.invars):
        i = new_var(v.aval)
        env[v] = i
        (prog.param_ids if t < n_params else prog.input_ids).append(i)
        if t < n_params:
            prog.param_only.add(i)
        else:
            prog.x_dep.add(i)
    for v, c in zip(closed.jaxpr.constvars, closed.consts, strict=True):
        env[v] = Const(c)
    _inline(prog, closed.jaxpr, env, new_var)
    prog.outputs = [_read(env, v) for v in closed.jaxpr.outvars]
    return prog


def _read(env, atom):
    if isinstance(atom, Literal):
        return Const(atom.val)
    return env[atom]


def _sub_jaxpr(eqn):
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    if isinstance(sub, ClosedJaxpr):
        return sub.jaxpr, sub.consts
    if isinstance(sub, Jaxpr):
        return sub, []
    return None


def _inline(prog: Program, jaxpr, env, new_var):
    for eqn in jaxpr.eqns:
        ins = [_read(env, v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _sub_jaxpr(eqn)
        inline = sub is not None and (
            name in _ALWAYS_INLINE or (name in _INLINE_IF_PARAMS and any(prog.is_param_only(v) for v in ins))
        )
        if inline:
            jx, consts = sub
            inner = {}
            for v, c in zip(jx.constvars, consts, strict=True):
                inner[v] = Const(c)
            for v, node in zip(jx.invars, ins, strict=True):
                inner[v] = node
            _inline(prog, jx, inner, new_var)
            for v, inner_out in zip(eqn.outvars, jx.outvars, strict=True):
                if not isinstance(v, DropVar):
                    env[v] = _read(inner, inner_out)
            continue
        outs = []
        for v in eqn.outvars:
            i = new_var(v.aval)
            if not isinstance(v, DropVar):
                env[v] = i
            outs.append(i)
        e = Eqn(
            name,
            eqn.primitive,
            dict(eqn.params),
            ins,
            outs,
            [tuple(v.aval.shape) for v in eqn.outvars],
            [v.aval.dtype for v in eqn.outvars],
            eqn,
        )
        prog.eqns.append(e)
        x_dep = any(prog.is_x_dep(v) for v in ins) or bool(getattr(eqn, "effects", None))
        p_dep = any(prog.is_param_only(v) for v in ins)
        for i in outs:
            if x_dep:
                prog.x_dep.add(i)
            elif p_dep:
                prog.param_only.add(i)


def is_inexact(dtype) -> bool:
    return bool(np.issubdtype(dtype, np.inexact))
