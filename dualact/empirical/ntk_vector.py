"""NTK-vector products (Novak et al. 2022, method 2): ``Θ v = J(x1) (J(x2)ᵀ v)`` without contracting
Jacobians.

For every standard-basis cotangent ``e`` on the outputs of ``x2`` (one per example and output entry), one VJP
of the per-example model gives the parameter-space vector ``J(x2)ᵀ e`` and one JVP of the model on ``x1``
pushes it forward; the columns are stacked into the full kernel, then the traced / diagonal output axes are
reduced by one einsum. Time ``N²·O·[FP]`` (no ``O²·P`` contraction), memory of the ``N·O`` parameter-shaped
vectors (like Jacobian contraction). Best when the forward pass is cheap relative to ``O·P`` (fully-connected
networks, many outputs).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from dualact.empirical._axes import compact_einsum, full_shape, kernel_labels
from dualact.empirical.jacobian import output_structure, per_example_setup


def ntk_vector_kernel(apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, spec, stats=None):
    """Empirical NTK by NTK-vector products; returns a pytree (over outputs) of kernels."""
    pe, diff, kw_arr, fn = per_example_setup(apply_fn, params, kwargs, spec)
    xs1, kws1, kw_in1 = pe.batched(x1, kw_arr)
    xs2, kws2, kw_in2 = (xs1, kws1, kw_in1) if x2 is None else pe.batched(x2, kw_arr)
    out1 = output_structure(fn, diff, xs1, kws1, kw_in1)
    out2 = output_structure(fn, diff, xs2, kws2, kw_in2)
    tree = jax.tree_util.tree_structure(out1)
    o1, o2 = jax.tree_util.tree_leaves(out1), jax.tree_util.tree_leaves(out2)
    n1 = jax.tree_util.tree_leaves(xs1)[0].shape[0]
    n2 = jax.tree_util.tree_leaves(xs2)[0].shape[0]

    def forward1(p_leaves):
        return jax.vmap(lambda x, kw: fn(p_leaves, x, kw), in_axes=(0, kw_in1))(xs1, kws1)

    kernels = []
    for k in range(len(o1)):
        size2 = math.prod(o2[k].shape)

        def cotangent_vectors(x_ex, kw_ex, k=k, size2=size2):
            out, vjp = jax.vjp(lambda p: fn(p, x_ex, kw_ex), diff)
            leaves, otree = jax.tree_util.tree_flatten(out)

            def pull(e):
                cots = [jnp.zeros_like(leaf) for leaf in leaves]
                cots[k] = e.reshape(leaves[k].shape).astype(leaves[k].dtype)
                return vjp(jax.tree_util.tree_unflatten(otree, cots))[0]

            return jax.vmap(pull)(jnp.eye(size2, dtype=leaves[k].dtype))

        # J(x2)ᵀ e for every example and output entry of x2: leaves of shape (N2, size2, *w).
        vecs = jax.vmap(cotangent_vectors, in_axes=(0, kw_in2))(xs2, kws2)

        def push(v, k=k):
            return jax.tree_util.tree_leaves(jax.jvp(forward1, (diff,), (v,))[1])[k]

        cols = jax.vmap(jax.vmap(push))(vecs)  # (N2, size2, N1, *f1_ex)
        cols = cols.reshape((n2, *o2[k].shape, n1, *o1[k].shape))
        if stats is not None:
            stats["einsum_flops"] = stats.get("einsum_flops", 0) + int(cols.size)
        b = pe.out_axis(k, out1)
        lab = kernel_labels(
            full_shape(o1[k].shape, n1, b), full_shape(o2[k].shape, n2, b), b, trace_axes, diagonal_axes
        )
        theta = compact_einsum(cols, (*lab.ext2, *lab.ext1), out=lab.out)
        kernels.append(theta / lab.trace_size)
    return jax.tree_util.tree_unflatten(tree, kernels)
