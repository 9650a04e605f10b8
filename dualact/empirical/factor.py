"""The :class:`Factor`: a Jacobian kept as an einsum of a few operands, never materialized.

For one side of the kernel, a factor on a jaxpr variable ``v`` stands for

    J_v[n, o..., v...] = scale * einsum(operands -> (n, o..., v...)),

the Jacobian of the network's per-example outputs (axes ``o...``, example axis ``n``: together the "ext"
labels) with respect to ``v`` (axes labelled ``Factor.labels``). Operands are ``(array, labels)`` pairs;
batched arrays (per-example values) carry the example label first. :func:`materialize` forms ``J_v``;
:func:`dense_rule` is the generic (unstructured, exact) rule every primitive falls back to. The structured
rules live in :mod:`dualact.empirical.structure_rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dualact.empirical._axes import compact_einsum


@dataclass(frozen=True)
class Val:
    """A value of the jaxpr for one side: ``batched`` values carry a leading example axis."""

    array: Any
    batched: bool

    def ex_shape(self):
        shape = np.shape(self.array)
        return tuple(shape[1:]) if self.batched else tuple(shape)


@dataclass(frozen=True)
class Factor:
    """``J_v = scale * einsum(operands -> ext + labels)`` (see the module docstring)."""

    operands: tuple[tuple[Any, tuple[int, ...]], ...]
    labels: tuple[int, ...]
    scale: float = 1.0

    def with_operand(self, array, labels, labels_out, scale=1.0) -> Factor:
        return Factor((*self.operands, (array, tuple(labels))), tuple(labels_out), self.scale * scale)


class RuleContext:
    """What a rule needs besides the factor: fresh labels, the ext labels, and an equation evaluator."""

    def __init__(self, fresh: Callable[[], int], ext: tuple[int, ...], ext_shape, evaluate, stats=None):
        self.fresh = fresh
        self.ext = tuple(ext)
        self.ext_shape = tuple(ext_shape)
        self.evaluate = evaluate  # evaluate(eqn, list_of_arrays) -> list of outputs (one example)
        self.stats = stats  # optional dict: stats["rules"][(primitive, rule)] counts rule applications

    @property
    def batch_label(self) -> int:
        return self.ext[0]

    def operand(self, val: Val, labels) -> tuple[Any, tuple[int, ...]]:
        labels = tuple(labels)
        return (val.array, (self.batch_label, *labels) if val.batched else labels)

    def ones(self, size: int, dtype) -> tuple[tuple[Any, tuple[int, ...]], int]:
        label = self.fresh()
        return (jnp.ones((size,), dtype), (label,)), label


def materialize(factor: Factor, ctx: RuleContext):
    """The Jacobian as one array of shape ``ext_shape + var_shape`` (example axis first)."""
    args = []
    for arr, lab in factor.operands:
        args += [arr, lab]
    dense = compact_einsum(*args, out=(*ctx.ext, *factor.labels))
    return dense * factor.scale if factor.scale != 1.0 else dense


def _vmap_examples(fn, vals: list[Val], *extra):
    """Apply ``fn(arrays, *extra)`` per example; ``extra`` arrays are always batched."""
    in_axes = ([0 if v.batched else None for v in vals], *[0 for _ in extra])
    return jax.vmap(fn, in_axes=in_axes)([v.array for v in vals], *extra)


def dense_rule(factor: Factor, eqn, k: int, j: int, vals: list[Val], ctx: RuleContext) -> Factor:
    """Generic rule for any primitive: materialize ``J_y``, pull it back with ``jax.vjp`` (exact)."""
    _record(ctx, eqn.name, "dense")
    dense = materialize(factor, ctx)
    y_shape = tuple(eqn.out_shapes[j])
    x_shape = vals[k].ex_shape()
    n_ext = len(ctx.ext) - 1

    def per_example(arrays, cot):
        def fk(xk):
            args = list(arrays)
            args[k] = xk
            return ctx.evaluate(eqn, args)[j]

        _, vjp = jax.vjp(fk, arrays[k])
        flat = cot.reshape((-1, *y_shape))
        pulled = jax.vmap(lambda c: vjp(c)[0])(flat)
        return pulled.reshape((*cot.shape[:n_ext], *x_shape))

    out = _vmap_examples(per_example, vals, dense)
    labels = tuple(ctx.fresh() for _ in x_shape)
    return Factor(((out, (*ctx.ext, *labels)),), labels, 1.0)


def _record(ctx: RuleContext, name: str, rule: str):
    if ctx.stats is not None:
        counts = ctx.stats.setdefault("rules", {})
        counts[name, rule] = counts.get((name, rule), 0) + 1
