"""Monte Carlo estimates of the infinite-width kernels: average empirical kernels over random initializations.

For a network in the NTK parameterization the empirical NNGP ``f(x1) f(x2)ᵀ`` and NTK ``J(x1) J(x2)ᵀ`` of a
random initialization are unbiased-in-the-limit estimates of the infinite-width ``kernel_fn``'s NNGP and NTK:
their mean over samples converges as the width grows (the finite-width bias is ``O(1/width)``, the sampling
error ``O(1/√(n_samples · width))``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dualact.empirical._axes import EmpiricalKernelError, normalize_vmap_axes, split_kwargs
from dualact.empirical.kernel_fns import IMPLEMENTATIONS, nngp_kernel


class MonteCarloKernel(NamedTuple):
    """Monte Carlo NNGP and NTK estimates (``None`` for the one not requested)."""

    nngp: jax.Array | None
    ntk: jax.Array | None


def _get_tuple(get):
    if get is None:
        return ("nngp", "ntk"), "kernel"
    if isinstance(get, str):
        names = (get,)
        kind = "single"
    else:
        names = tuple(get)
        kind = "tuple"
    bad = [g for g in names if g not in ("nngp", "ntk")]
    if bad:
        raise EmpiricalKernelError(f"get={get!r}: Monte Carlo estimates exist for 'nngp' and 'ntk' only")
    return names, kind


def monte_carlo_kernel_fn(
    init_fn: Callable,
    apply_fn: Callable,
    key,
    n_samples: int | Iterable[int],
    batch_size: int = 8,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    implementation: str = "auto",
) -> Callable:
    """Monte Carlo estimate of the infinite-width NNGP/NTK of ``(init_fn, apply_fn)``.

    Args:
      init_fn: ``init_fn(key, input_shape) -> (output_shape, params)`` (neural-tangents convention; adapters
        in :mod:`dualact.empirical.adapters` build one for Flax and Equinox models).
      apply_fn: ``apply_fn(params, x, **kwargs)``.
      key: PRNG key; sample ``s`` uses ``jax.random.split(key, max(n_samples))[s]``.
      n_samples: number of random initializations, or an increasing sequence of them, in which case
        ``kernel_fn`` returns a generator of the running estimates (each reusing the previous samples).
      batch_size: samples evaluated together (``jax.lax.map`` in vmapped chunks: bounded memory).
      trace_axes, diagonal_axes, vmap_axes, implementation: as in :func:`dualact.empirical.ntk_fn`.

    Returns:
      ``kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs)``: ``get=None`` gives a :class:`MonteCarloKernel`,
      ``"nngp"``/``"ntk"`` one array, a tuple of names a tuple.

    >>> import jax, jax.numpy as jnp
    >>> def init_fn(key, shape):
    ...     return (shape[0], 1), jax.random.normal(key, (shape[-1], 1))
    >>> apply_fn = lambda w, x: x @ w
    >>> kfn = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(0), 256)
    >>> x = jnp.eye(2)
    >>> kfn(x, get="ntk").tolist()  # linear model: NTK = x x^T exactly
    [[1.0, 0.0], [0.0, 1.0]]
    """
    spec = normalize_vmap_axes(vmap_axes)
    counts = [n_samples] if isinstance(n_samples, int) else list(n_samples)
    if not counts or any(b <= a for a, b in zip([0, *counts], counts, strict=False)):
        raise EmpiricalKernelError(
            f"n_samples must be a positive int or an increasing sequence, got {n_samples!r}"
        )
    keys = jax.random.split(key, counts[-1])
    trace_axes = (trace_axes,) if isinstance(trace_axes, int) else tuple(trace_axes)
    diagonal_axes = (diagonal_axes,) if isinstance(diagonal_axes, int) else tuple(diagonal_axes)

    def estimates(x1, x2, names, kwargs):
        arrays, static = split_kwargs(kwargs)
        shape = jax.tree_util.tree_map(jnp.shape, x1) if not hasattr(x1, "shape") else x1.shape
        impl = implementation
        if "ntk" in names and impl == "auto":
            from dualact.empirical.auto import choose_implementation

            params0 = init_fn(keys[0], shape)[1]
            impl = choose_implementation(
                apply_fn, x1, x2, params0, kwargs, trace_axes, diagonal_axes, vmap_axes
            )

        def one(k, arrays):
            params = init_fn(k, shape)[1]
            kw = {**arrays, **static}
            out = {}
            if "nngp" in names:
                out["nngp"] = nngp_kernel(apply_fn, x1, x2, params, kw, trace_axes, diagonal_axes, spec)
            if "ntk" in names:
                out["ntk"] = IMPLEMENTATIONS[impl](
                    apply_fn, x1, x2, params, kw, trace_axes, diagonal_axes, spec
                )
            return out

        @jax.jit
        def chunk_sum(ks, arrays):
            per = jax.lax.map(lambda k: one(k, arrays), ks, batch_size=min(batch_size, ks.shape[0]))
            return jax.tree_util.tree_map(lambda a: a.sum(0), per)

        total, done = None, 0
        for n in counts:
            part = chunk_sum(keys[done:n], arrays)
            total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
            done = n
            yield jax.tree_util.tree_map(lambda a, n=n: a / n, total)

    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        names, kind = _get_tuple(get)

        def pack(est):
            if kind == "kernel":
                return MonteCarloKernel(est.get("nngp"), est.get("ntk"))
            if kind == "single":
                return est[names[0]]
            return tuple(est[g] for g in names)

        gen = (pack(e) for e in estimates(x1, x2, names, apply_fn_kwargs))
        return gen if not isinstance(n_samples, int) else next(gen)

    return kernel_fn
