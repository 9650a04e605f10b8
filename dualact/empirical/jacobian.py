"""Jacobian contraction (Novak et al. 2022, method 1): ``Θ = J(x1) J(x2)ᵀ`` from materialized Jacobians.

Reverse-mode Jacobians of the per-example outputs with respect to every parameter leaf (``jax.jacrev``,
vmapped over examples), contracted leaf by leaf over the parameter axes and the traced output axes with one
einsum per leaf. Time ``N·O·[FP] + N²·O²·P``, memory ``N·O·P`` (``P`` parameters, ``O`` outputs per example);
the simplest and most general method and the reference for the other two.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dualact.empirical._axes import (
    PerExample,
    compact_einsum,
    full_shape,
    kernel_labels,
    split_kwargs,
    split_params,
)


def per_example_setup(apply_fn, params, kwargs, spec):
    """Per-example ``fn(leaves, x_ex, kw_ex)`` of the differentiable leaves, and the batching helper."""
    pe = PerExample(apply_fn, spec)
    diff, rebuild = split_params(params)
    kw_arr, kw_static = split_kwargs(kwargs)

    def fn(p_leaves, x_ex, kw_ex):
        return pe.fn(rebuild(p_leaves), x_ex, {**kw_ex, **kw_static})

    return pe, diff, kw_arr, fn


def output_structure(fn, diff, xs, kws, kw_in):
    """Per-example output pytree (of ``ShapeDtypeStruct``) of ``fn``."""

    def one(x, kw):
        return fn(diff, x, kw)

    out = jax.eval_shape(jax.vmap(one, in_axes=(0, kw_in)), xs, kws)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), out)


def jacobian_kernel(apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, spec, stats=None):
    """Empirical NTK by Jacobian contraction; returns a pytree (over outputs) of kernels."""
    pe, diff, kw_arr, fn = per_example_setup(apply_fn, params, kwargs, spec)

    def jacobians(x):
        xs, kws, kw_in = pe.batched(x, kw_arr)
        out = output_structure(fn, diff, xs, kws, kw_in)
        jac = jax.vmap(lambda x_ex, kw_ex: jax.jacrev(fn)(diff, x_ex, kw_ex), in_axes=(0, kw_in))(xs, kws)
        tree = jax.tree_util.tree_structure(out)
        n = jax.tree_util.tree_leaves(xs)[0].shape[0]
        return tree.flatten_up_to(jac), jax.tree_util.tree_leaves(out), tree, out, n

    j1, o1, tree, out1, n1 = jacobians(x1)
    j2, o2, _, _, n2 = (j1, o1, tree, out1, n1) if x2 is None else jacobians(x2)
    kernels = []
    for k in range(len(o1)):
        b = pe.out_axis(k, out1)
        lab = kernel_labels(
            full_shape(o1[k].shape, n1, b), full_shape(o2[k].shape, n2, b), b, trace_axes, diagonal_axes
        )
        theta = jnp.zeros(lab.shape, jnp.result_type(o1[k].dtype, *diff))
        for w, a1, a2 in zip(diff, j1[k], j2[k], strict=True):
            wl = tuple(range(10**6, 10**6 + w.ndim))
            theta = theta + compact_einsum(a1, (*lab.ext1, *wl), a2, (*lab.ext2, *wl), out=lab.out)
            if stats is not None:
                kept = math.prod(lab.shape)
                stats["einsum_flops"] = stats.get("einsum_flops", 0) + 2 * kept * lab.trace_size * int(w.size)
        kernels.append(theta / lab.trace_size)
    return jax.tree_util.tree_unflatten(tree, kernels)
