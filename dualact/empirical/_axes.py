"""Kernel-axis semantics shared by every implementation: ``trace_axes``, ``diagonal_axes`` and ``vmap_axes``.

The conventions are those of neural-tangents' ``empirical_kernel_fn``. For one output leaf ``f(x)`` of shape
``s``, the kernel of ``f(x1)`` (shape ``s1``) and ``f(x2)`` (shape ``s2``) has, for every axis ``a`` of ``s``
in order:

* no axis if ``a`` is in ``trace_axes`` (the kernel is *averaged* over it: summed, then divided by its size);
* one axis of size ``s1[a] == s2[a]`` if ``a`` is in ``diagonal_axes`` (only the ``x1[a] == x2[a]`` entries);
* otherwise two consecutive axes ``(s1[a], s2[a])``.

So with the defaults (``trace_axes=(-1,)``) an ``(N, O)`` output gives an ``(N1, N2)`` kernel; with
``trace_axes=()`` it gives ``(N1, N2, O, O)``; with ``diagonal_axes=(0,)`` and ``trace_axes=()``, ``(N, O,
O)``.

``vmap_axes`` certifies that ``f`` treats slices of ``x`` along ``in_axes`` independently and stacks the
results along ``out_axes`` of the output (most networks without batch statistics: ``vmap_axes=0``). It never
changes the value of the kernel, only how it is computed: per-example Jacobians instead of Jacobians of the
whole batch.

Every implementation works on *per-example* arrays with a leading batch axis ``n`` (without ``vmap_axes`` the
whole batch is one "example" behind a batch axis of size one), and writes its result as one ``einsum`` whose
labels this module chooses (:func:`kernel_labels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dualact.errors import DualactError


class EmpiricalKernelError(DualactError, ValueError):
    """An empirical-kernel argument is inconsistent (axes, shapes or implementation name)."""


def _canonical(axes, ndim: int, what: str) -> tuple[int, ...]:
    if axes is None:
        return ()
    if isinstance(axes, int):
        axes = (axes,)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise EmpiricalKernelError(f"{what}={tuple(axes)} is out of range for an output with {ndim} axes")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise EmpiricalKernelError(f"{what}={tuple(axes)} names an axis twice")
    return tuple(sorted(out))


@dataclass(frozen=True)
class VmapSpec:
    """Normalized ``vmap_axes``: ``in_axes`` (for ``x``), ``out_axes`` (for the output) and ``kwargs_axes``.

    ``out_axes is None`` means "no vmap": the whole batch is treated as one example.
    """

    in_axes: Any = 0
    out_axes: Any = None
    kwargs_axes: Any = None

    @property
    def enabled(self) -> bool:
        return self.out_axes is not None


def normalize_vmap_axes(vmap_axes) -> VmapSpec:
    """``None`` | ``int`` | ``(in_axes, out_axes[, kwargs_axes])`` -> :class:`VmapSpec`."""
    if vmap_axes is None:
        return VmapSpec(0, None, None)
    if isinstance(vmap_axes, int):
        return VmapSpec(vmap_axes, vmap_axes, None)
    if isinstance(vmap_axes, tuple) and len(vmap_axes) in (2, 3):
        in_axes, out_axes = vmap_axes[0], vmap_axes[1]
        kw_axes = vmap_axes[2] if len(vmap_axes) == 3 else None
        if out_axes is None:
            raise EmpiricalKernelError(
                "vmap_axes: out_axes must not be None; pass vmap_axes=None to disable vmap"
            )
        return VmapSpec(in_axes, out_axes, kw_axes)
    raise EmpiricalKernelError(
        f"vmap_axes must be None, an int or a tuple (in_axes, out_axes[, kwargs_axes]); got {vmap_axes!r}"
    )


def _leafwise(axes, tree):
    """Broadcast an int (or None) axis spec over the leaves of ``tree``; pass full pytrees through."""
    if axes is None or isinstance(axes, int):
        return jax.tree_util.tree_map(lambda _: axes, tree)
    return axes


def _kw_axes(spec: VmapSpec, kwargs: dict) -> dict:
    axes = spec.kwargs_axes or {}
    return {k: axes.get(k) for k in kwargs}


class PerExample:
    """Per-example view of ``apply_fn`` and of its inputs.

    ``fn(params, x_ex, kw_ex)`` evaluates one example (the batch axis removed); ``batched(x, kwargs)`` returns
    the inputs with the example axis leading, as ``(xs, kws, kw_in_axes)`` for ``jax.vmap(..., in_axes=(0,
    kw_in_axes))``. Without vmap, ``x`` gets a leading axis of size one and ``fn`` is ``apply_fn`` itself.
    """

    def __init__(self, apply_fn, spec: VmapSpec):
        self.apply_fn = apply_fn
        self.spec = spec

    def fn(self, params, x_ex, kw_ex):
        if not self.spec.enabled:
            return self.apply_fn(params, x_ex, **kw_ex)
        in_axes = _leafwise(self.spec.in_axes, x_ex)
        x = jax.tree_util.tree_map(lambda a, ax: jnp.expand_dims(a, ax), x_ex, in_axes)
        kw_axes = _kw_axes(self.spec, kw_ex)
        kw = {}
        for k, v in kw_ex.items():
            ax = kw_axes[k]
            kw[k] = (
                v
                if ax is None
                else jax.tree_util.tree_map(lambda a, ax_: jnp.expand_dims(a, ax_), v, _leafwise(ax, v))
            )
        out = self.apply_fn(params, x, **kw)
        out_axes = _leafwise(self.spec.out_axes, out)
        return jax.tree_util.tree_map(lambda o, ax: jnp.squeeze(o, ax), out, out_axes)

    def batched(self, x, kwargs):
        if not self.spec.enabled:
            xs = jax.tree_util.tree_map(lambda a: jnp.expand_dims(a, 0), x)
            return xs, kwargs, {k: None for k in kwargs}
        in_axes = _leafwise(self.spec.in_axes, x)
        xs = jax.tree_util.tree_map(lambda a, ax: jnp.moveaxis(a, ax, 0), x, in_axes)
        kw_axes = _kw_axes(self.spec, kwargs)
        kws = {}
        for k, v in kwargs.items():
            ax = kw_axes[k]
            kws[k] = (
                v
                if ax is None
                else jax.tree_util.tree_map(lambda a, ax_: jnp.moveaxis(a, ax_, 0), v, _leafwise(ax, v))
            )
        return xs, kws, {k: (None if kw_axes[k] is None else 0) for k in kwargs}

    def out_axis(self, out_leaf_index: int, out_tree_example) -> int | None:
        """Position of the batch axis in the full output leaf (``None`` without vmap)."""
        if not self.spec.enabled:
            return None
        axes = jax.tree_util.tree_leaves(_leafwise(self.spec.out_axes, out_tree_example))
        return axes[out_leaf_index]

    def vmapped(self, fn, kw_in_axes):
        """``jax.vmap`` of ``fn(x_ex, kw_ex)`` over the leading example axis."""
        return jax.vmap(fn, in_axes=(0, kw_in_axes))


# Label ranges used by every einsum in this package (sublist form; only the ints' identity matters).
BATCH1, BATCH2 = 0, 1
EXT1, EXT2 = 100, 200  # per-example output axes: EXT1 + k labels axis k of f_ex on side 1


@dataclass(frozen=True)
class KernelLabels:
    """How one output leaf's per-example arrays map onto kernel axes.

    ``ext1``/``ext2``: pair labels for the per-example axes ``(n, *f_ex.shape)`` of side 1 and side 2;
    ``out``: labels of the kernel; ``trace_size``: size of the traced axes (the kernel is divided by it).
    """

    ext1: tuple[int, ...]
    ext2: tuple[int, ...]
    out: tuple[int, ...]
    trace_size: int
    shape: tuple[int, ...]


def kernel_labels(shape1, shape2, batch_axis, trace_axes, diagonal_axes) -> KernelLabels:
    """Labels for the kernel of two full output leaves of shapes ``shape1`` and ``shape2``.

    ``batch_axis`` is the position of the vmapped axis in the full output (``None`` without vmap).

    >>> lab = kernel_labels((4, 3), (5, 3), 0, (-1,), ())
    >>> lab.shape, lab.trace_size
    ((4, 5), 3)
    """
    ndim = len(shape1)
    if len(shape2) != ndim:
        raise EmpiricalKernelError(f"outputs have different ranks: {tuple(shape1)} vs {tuple(shape2)}")
    trace = _canonical(trace_axes, ndim, "trace_axes")
    diag = _canonical(diagonal_axes, ndim, "diagonal_axes")
    if set(trace) & set(diag):
        raise EmpiricalKernelError(f"trace_axes {trace} and diagonal_axes {diag} must not share an axis")
    fresh = iter(range(1000, 10_000))
    lab1, lab2, out, shape = [], [], [], []
    trace_size = 1
    for a in range(ndim):
        if a in trace or a in diag:
            if shape1[a] != shape2[a]:
                kind = "trace_axes" if a in trace else "diagonal_axes"
                raise EmpiricalKernelError(
                    f"axis {a} is in {kind} but the outputs differ there: {shape1[a]} vs {shape2[a]}"
                )
            label = next(fresh)
            lab1.append(label)
            lab2.append(label)
            if a in trace:
                trace_size *= shape1[a]
            else:
                out.append(label)
                shape.append(shape1[a])
        else:
            l1, l2 = next(fresh), next(fresh)
            lab1.append(l1)
            lab2.append(l2)
            out += [l1, l2]
            shape += [shape1[a], shape2[a]]
    if batch_axis is None:
        ext1 = (next(fresh), *lab1)  # the size-one pseudo batch axis is summed away
        ext2 = (next(fresh), *lab2)
    else:
        b = batch_axis % ndim
        ext1 = (lab1[b], *lab1[:b], *lab1[b + 1 :])
        ext2 = (lab2[b], *lab2[:b], *lab2[b + 1 :])
    return KernelLabels(tuple(ext1), tuple(ext2), tuple(out), trace_size, tuple(shape))


def full_shape(ex_shape, n: int, batch_axis) -> tuple[int, ...]:
    """Full output-leaf shape from the per-example shape, the number of examples and the batch position."""
    if batch_axis is None:
        return tuple(ex_shape)
    b = batch_axis % (len(ex_shape) + 1)
    return (*ex_shape[:b], n, *ex_shape[b:])


def compact_einsum(*operands_and_labels, out, optimize="optimal", precision=None):
    """``jnp.einsum`` in sublist form with arbitrary hashable labels, renumbered compactly.

    ``operands_and_labels`` alternates arrays and label sequences. Returns the contraction.
    """
    arrays = operands_and_labels[0::2]
    labels = operands_and_labels[1::2]
    ids: dict = {}
    args = []
    for arr, lab in zip(arrays, labels, strict=True):
        args += [arr, [ids.setdefault(lab_, len(ids)) for lab_ in lab]]
    out_ids = [ids[lab_] for lab_ in out]
    return jnp.einsum(*args, out_ids, optimize=optimize, precision=precision)


def prod(shape) -> int:
    return int(math.prod(shape))


def split_params(params):
    """Split ``params`` into its differentiable (inexact) leaves and a function rebuilding the full pytree.

    Integer or boolean leaves (step counters, keys) are held fixed: they have no tangent space.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    idx = [i for i, leaf in enumerate(leaves) if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]

    def rebuild(diff_leaves):
        full = list(leaves)
        for i, v in zip(idx, diff_leaves, strict=True):
            full[i] = v
        return jax.tree_util.tree_unflatten(treedef, full)

    return [leaves[i] for i in idx], rebuild


def split_kwargs(kwargs: dict):
    """Split keyword arguments into array-valued ones (traced) and the rest (held static)."""

    def is_arrays(v):
        leaves = jax.tree_util.tree_leaves(v)
        return bool(leaves) and all(isinstance(a, (jax.Array, np.ndarray)) for a in leaves)

    arrays = {k: v for k, v in kwargs.items() if is_arrays(v)}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    return arrays, static


def batch_placement(ndim: int, batch_axis: int, trace_axes, diagonal_axes):
    """Where the example axis ``batch_axis`` of the output lands in the kernel.

    Returns ``("pair", p1, p2)`` (two kernel axes), ``("diagonal", p)`` or ``("trace",)``.
    """
    trace = _canonical(trace_axes, ndim, "trace_axes")
    diag = _canonical(diagonal_axes, ndim, "diagonal_axes")
    b = batch_axis % ndim
    pos = 0
    for a in range(ndim):
        if a == b:
            if a in trace:
                return ("trace",)
            if a in diag:
                return ("diagonal", pos)
            return ("pair", pos, pos + 1)
        pos += 0 if a in trace else 1 if a in diag else 2
    raise AssertionError("unreachable")
