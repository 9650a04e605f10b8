"""Public constructors :func:`ntk_fn` and :func:`nngp_fn` of empirical (finite-width) kernels."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from dualact.empirical._axes import (
    EmpiricalKernelError,
    PerExample,
    compact_einsum,
    full_shape,
    kernel_labels,
    normalize_vmap_axes,
    split_kwargs,
)
from dualact.empirical.batching import blocked
from dualact.empirical.jacobian import jacobian_kernel
from dualact.empirical.ntk_vector import ntk_vector_kernel
from dualact.empirical.structured import structured_kernel

IMPLEMENTATIONS: dict[str, Callable] = {
    "jacobian": jacobian_kernel,
    "ntk_vector": ntk_vector_kernel,
    "structured": structured_kernel,
}


def _hashable(items) -> bool:
    try:
        hash(items)
        return True
    except TypeError:
        return False


class _Compiled:
    """``jax.jit`` of a kernel computation, one compiled function per set of static keyword arguments."""

    def __init__(self, compute: Callable, jit: bool):
        self.compute = compute
        self.jit = jit
        self.cache: dict = {}

    def __call__(self, x1, x2, params, **kwargs):
        arrays, static = split_kwargs(kwargs)
        key = tuple(sorted(static.items()))
        if not self.jit or not _hashable(key):
            return self.compute(x1, x2, params, arrays, static)
        fn = self.cache.get(key)
        if fn is None:
            fn = self.cache[key] = jax.jit(lambda a, b, p, kw: self.compute(a, b, p, kw, dict(key)))
        return fn(x1, x2, params, arrays)


def ntk_fn(
    apply_fn: Callable,
    implementation: str = "auto",
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    batch_size: int | None = None,
    jit: bool = True,
) -> Callable:
    """Empirical (finite-width) neural tangent kernel ``Θ(x1, x2) = J(x1) J(x2)ᵀ`` of ``apply_fn``.

    Args:
      apply_fn: any JAX function ``apply_fn(params, x, **kwargs)`` with a pytree of ``params`` (dualact or
        neural-tangents ``apply_fn``, Flax/Equinox models through :mod:`dualact.empirical.adapters`, plain
        functions). Only inexact (floating) parameter leaves are differentiated.
      implementation: ``"jacobian"`` (Jacobian contraction), ``"ntk_vector"`` (NTK-vector products),
        ``"structured"`` (structured derivatives) or ``"auto"`` (the cheapest by
        :mod:`dualact.empirical.auto`'s cost model). All give the same kernel up to rounding.
      trace_axes: output axes averaged over (the default ``(-1,)`` averages over logits, as neural-tangents).
      diagonal_axes: output axes on which only ``x1[a] == x2[a]`` entries are computed.
      vmap_axes: ``None``, an int, or ``(in_axes, out_axes[, kwargs_axes])`` certifying that examples are
        independent along these axes (no batch statistics); makes every implementation work per example.
      batch_size: if given, the kernel is computed in blocks of this many examples (bounded memory; assumes
        independent examples along ``vmap_axes``, or axis 0).
      jit: compile the computation with ``jax.jit`` (one compilation per shape and static kwargs).

    Returns:
      ``kernel(x1, x2, params, **apply_fn_kwargs)``; ``x2=None`` means ``x2 = x1``. For a pytree-valued
      ``apply_fn`` the result is the pytree of the kernels of its leaves.

    Example:

    >>> import jax, jax.numpy as jnp
    >>> from dualact import empirical
    >>> def f(p, x):
    ...     return jnp.tanh(x @ p["w1"]) @ p["w2"]
    >>> k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    >>> params = {"w1": jax.random.normal(k1, (3, 8)), "w2": jax.random.normal(k2, (8, 2))}
    >>> x = jnp.ones((4, 3))
    >>> theta = empirical.ntk_fn(f, implementation="structured", vmap_axes=0)(x, None, params)
    >>> theta.shape
    (4, 4)
    >>> ref = empirical.ntk_fn(f, implementation="jacobian")(x, None, params)
    >>> bool(jnp.allclose(theta, ref, rtol=1e-5))
    True
    """
    spec = normalize_vmap_axes(vmap_axes)
    if implementation != "auto" and implementation not in IMPLEMENTATIONS:
        raise EmpiricalKernelError(
            f"implementation={implementation!r}; use one of 'auto', {', '.join(map(repr, IMPLEMENTATIONS))}"
        )
    trace_axes = tuple(trace_axes) if not isinstance(trace_axes, int) else (trace_axes,)
    diagonal_axes = tuple(diagonal_axes) if not isinstance(diagonal_axes, int) else (diagonal_axes,)

    def compute_with(name):
        impl = IMPLEMENTATIONS[name]

        def compute(x1, x2, params, arrays, static):
            return impl(apply_fn, x1, x2, params, {**arrays, **static}, trace_axes, diagonal_axes, spec)

        return _Compiled(compute, jit)

    compiled = {name: compute_with(name) for name in IMPLEMENTATIONS}
    chosen: dict = {}

    def pick(x1, x2, params, kwargs) -> str:
        if implementation != "auto":
            return implementation
        from dualact.empirical.auto import choose_implementation

        key = (
            jax.tree_util.tree_structure((x1, x2, params)),
            tuple((jnp.shape(a), jnp.result_type(a)) for a in jax.tree_util.tree_leaves((x1, x2, params))),
        )
        if key not in chosen:
            chosen[key] = choose_implementation(
                apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, vmap_axes
            )
        return chosen[key]

    def kernel(x1, x2, params, **apply_fn_kwargs):
        name = pick(x1, x2, params, apply_fn_kwargs)
        fn = compiled[name]
        if batch_size is None:
            return fn(x1, x2, params, **apply_fn_kwargs)
        return blocked(
            fn, apply_fn, x1, x2, params, apply_fn_kwargs, batch_size, spec, trace_axes, diagonal_axes
        )

    kernel.implementation = implementation
    return kernel


def nngp_kernel(apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, spec):
    """``f(x1) f(x2)ᵀ`` with the same axis semantics as the NTK."""
    pe = PerExample(apply_fn, spec)
    arrays, static = split_kwargs(kwargs)

    def outputs(x):
        xs, kws, kw_in = pe.batched(x, arrays)
        out = jax.vmap(lambda x_ex, kw: pe.fn(params, x_ex, {**kw, **static}), in_axes=(0, kw_in))(xs, kws)
        return out, jax.tree_util.tree_leaves(xs)[0].shape[0]

    f1, n1 = outputs(x1)
    f2, n2 = (f1, n1) if x2 is None else outputs(x2)
    leaves1, tree = jax.tree_util.tree_flatten(f1)
    leaves2 = jax.tree_util.tree_leaves(f2)
    ex = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), f1)
    kernels = []
    for k, (a1, a2) in enumerate(zip(leaves1, leaves2, strict=True)):
        b = pe.out_axis(k, ex)
        lab = kernel_labels(
            full_shape(a1.shape[1:], n1, b), full_shape(a2.shape[1:], n2, b), b, trace_axes, diagonal_axes
        )
        kernels.append(compact_einsum(a1, lab.ext1, a2, lab.ext2, out=lab.out) / lab.trace_size)
    return jax.tree_util.tree_unflatten(tree, kernels)


def nngp_fn(
    apply_fn: Callable,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    batch_size: int | None = None,
    jit: bool = True,
) -> Callable:
    """Empirical NNGP kernel ``f(x1) f(x2)ᵀ`` (output covariance of one network), with :func:`ntk_fn`'s axes.

    >>> import jax.numpy as jnp
    >>> from dualact import empirical
    >>> f = lambda p, x: x @ p
    >>> empirical.nngp_fn(f)(jnp.eye(2), None, jnp.ones((2, 3))).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    spec = normalize_vmap_axes(vmap_axes)
    trace_axes = tuple(trace_axes) if not isinstance(trace_axes, int) else (trace_axes,)
    diagonal_axes = tuple(diagonal_axes) if not isinstance(diagonal_axes, int) else (diagonal_axes,)

    def compute(x1, x2, params, arrays, static):
        return nngp_kernel(apply_fn, x1, x2, params, {**arrays, **static}, trace_axes, diagonal_axes, spec)

    compiled = _Compiled(compute, jit)

    def kernel(x1, x2, params, **apply_fn_kwargs):
        if batch_size is None:
            return compiled(x1, x2, params, **apply_fn_kwargs)
        return blocked(
            compiled, apply_fn, x1, x2, params, apply_fn_kwargs, batch_size, spec, trace_axes, diagonal_axes
        )

    return kernel
