"""Bounded-memory evaluation of an empirical kernel in blocks of examples.

Valid when the model treats examples independently along the batch axis (the ``vmap_axes`` certificate; ``0``
when none is given): the kernel of two blocks of examples is then the corresponding block of the full kernel.
Blocks of ``batch_size`` examples are computed one at a time by the jitted kernel function (the last, smaller
block costs one more compilation) and assembled: concatenated along the kernel's example axes, only the
matching blocks for a diagonal example axis, and a size-weighted mean for a traced one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dualact.empirical._axes import EmpiricalKernelError, VmapSpec, _leafwise, batch_placement


def _chunks(x, axis_tree, batch_size):
    n = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, ax: a.shape[ax], x, axis_tree))[0]
    starts = list(range(0, n, batch_size))
    blocks = [
        jax.tree_util.tree_map(
            lambda a, ax, s=s: jax.lax.slice_in_dim(a, s, min(s + batch_size, n), axis=ax), x, axis_tree
        )
        for s in starts
    ]
    sizes = [min(s + batch_size, n) - s for s in starts]
    return blocks, sizes, n


def _slice_kwargs(kwargs, spec: VmapSpec, batch_size):
    axes = spec.kwargs_axes or {}
    out = {}
    for k, v in kwargs.items():
        ax = axes.get(k)
        out[k] = None if ax is None else _chunks(v, _leafwise(ax, v), batch_size)[0]
    return out


def blocked(
    kernel, apply_fn, x1, x2, params, kwargs, batch_size: int, spec: VmapSpec, trace_axes, diagonal_axes
):
    """Evaluate ``kernel(x1, x2, params, **kwargs)`` block by block (see the module docstring).

    ``apply_fn`` is only used to find the output shapes (``jax.eval_shape``).
    """
    in_axes = spec.in_axes if spec.enabled else 0
    out_axes = spec.out_axes if spec.enabled else 0
    b1, sizes1, n1 = _chunks(x1, _leafwise(in_axes, x1), batch_size)
    same = x2 is None
    b2, sizes2, n2 = (b1, sizes1, n1) if same else _chunks(x2, _leafwise(in_axes, x2), batch_size)
    kw_blocks = _slice_kwargs(kwargs, spec, batch_size)

    def kw_for(a):
        return {k: (kwargs[k] if kw_blocks[k] is None else kw_blocks[k][a]) for k in kwargs}

    if kw_blocks and not same and any(v is not None for v in kw_blocks.values()):
        raise EmpiricalKernelError(
            "batch_size with batched keyword arguments (kwargs_axes) needs x2=None: pass the kwargs' x2 "
            "values by calling the kernel on the concatenated inputs"
        )

    out_struct = jax.eval_shape(lambda p, x: apply_fn(p, x, **kw_for(0)), params, b1[0])
    out_leaves, tree = jax.tree_util.tree_flatten(out_struct)
    out_ax = jax.tree_util.tree_leaves(_leafwise(out_axes, out_struct))
    placements = [
        batch_placement(len(o.shape), ax, trace_axes, diagonal_axes)
        for o, ax in zip(out_leaves, out_ax, strict=True)
    ]
    kinds = {p[0] for p in placements}
    pairs = [(a, c) for a in range(len(b1)) for c in range(len(b2))] if "pair" in kinds else []
    diag_pairs = [(a, a) for a in range(min(len(b1), len(b2)))]
    if kinds & {"diagonal", "trace"} and n1 != n2:
        raise EmpiricalKernelError(
            f"a diagonal or traced example axis needs as many x1 as x2 examples ({n1} vs {n2})"
        )
    results = {}
    for a, c in dict.fromkeys(pairs + diag_pairs if kinds & {"diagonal", "trace"} else pairs):
        x2_block = None if same and a == c else b2[c]
        results[a, c] = jax.tree_util.tree_leaves(kernel(b1[a], x2_block, params, **kw_for(a)))
    out = []
    for k, place in enumerate(placements):
        if place[0] == "pair":
            rows = [
                jnp.concatenate([results[a, c][k] for c in range(len(b2))], axis=place[2])
                for a in range(len(b1))
            ]
            out.append(jnp.concatenate(rows, axis=place[1]))
        elif place[0] == "diagonal":
            out.append(jnp.concatenate([results[a, a][k] for a in range(len(b1))], axis=place[1]))
        else:
            out.append(sum(results[a, a][k] * (sizes1[a] / n1) for a in range(len(b1))))
    return jax.tree_util.tree_unflatten(tree, out)
