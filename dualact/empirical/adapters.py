"""Adapters from Flax (linen, nnx) and Equinox models to the ``(init_fn, apply_fn)`` convention.

``apply_fn(params, x, **kwargs)`` takes only the *trainable* parameters as ``params`` (what the NTK
differentiates); non-trainable state (Flax ``batch_stats``, Equinox static fields, nnx non-``Param``
variables) is held fixed. ``init_fn(key, input_shape) -> (output_shape, params)`` is what
:func:`~dualact.empirical.monte_carlo_kernel_fn` samples. Flax and Equinox are optional dependencies (``pip
install dualact[interop]``); they are imported lazily.

>>> import jax.numpy as jnp
>>> from dualact import empirical
>>> def apply(p, x):  # any plain function already fits: nothing to adapt
...     return x @ p
>>> empirical.ntk_fn(apply)(jnp.ones((2, 3)), None, jnp.ones((3, 1))).tolist()
[[3.0, 3.0], [3.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def from_flax_linen(
    module, *, extra_variables: dict | None = None, input_dtype=None, method=None
) -> tuple[Callable, Callable]:
    """``(init_fn, apply_fn)`` for a ``flax.linen.Module``.

    ``params`` is the ``"params"`` collection; ``extra_variables`` (e.g. ``{"batch_stats": ...}``) are passed
    to every call unchanged. ``method`` selects a module method other than ``__call__``.
    """
    extra = dict(extra_variables or {})

    def init_fn(key, input_shape):
        x = jnp.zeros(input_shape, input_dtype or jnp.result_type(float))
        variables = module.init(key, x, method=method)
        params = variables["params"]
        out = jax.eval_shape(lambda p: apply_fn(p, x), params)
        return jax.tree_util.tree_map(lambda s: s.shape, out), params

    def apply_fn(params, x, **kwargs):
        return module.apply({"params": params, **extra}, x, method=method, **kwargs)

    return init_fn, apply_fn


def from_flax_nnx(model) -> tuple[object, Callable]:
    """``(params, apply_fn)`` for a ``flax.nnx.Module`` instance: its ``nnx.Param`` state and a pure apply.

    >>> # params, apply_fn = from_flax_nnx(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply_fn(params, x, **kwargs):
        return nnx.merge(graphdef, params, rest)(x, **kwargs)

    return params, apply_fn


def flax_nnx_init_fn(make_model: Callable) -> tuple[Callable, Callable]:
    """``(init_fn, apply_fn)`` from ``make_model(rngs: nnx.Rngs) -> nnx.Module`` (for Monte Carlo)."""
    from flax import nnx

    _, apply_fn = from_flax_nnx(make_model(nnx.Rngs(0)))

    def init_fn(key, input_shape):
        _, params, _ = nnx.split(make_model(nnx.Rngs(key)), nnx.Param, ...)
        out = jax.eval_shape(lambda p: apply_fn(p, jnp.zeros(input_shape)), params)
        return jax.tree_util.tree_map(lambda s: s.shape, out), params

    return init_fn, apply_fn


def from_equinox(model, *, per_example: bool = True) -> tuple[object, Callable]:
    """``(params, apply_fn)`` for an Equinox module: its inexact arrays and a pure apply.

    Equinox layers act on one example, so by default ``apply_fn`` maps the model over the leading batch axis
    (``jax.vmap``); pass ``per_example=False`` for a model that already takes a batch.
    """
    import equinox as eqx

    params, static = eqx.partition(model, eqx.is_inexact_array)

    def apply_fn(params, x, **kwargs):
        m = eqx.combine(params, static)
        if per_example:
            return jax.vmap(lambda xi: m(xi, **kwargs))(x)
        return m(x, **kwargs)

    return params, apply_fn


def equinox_init_fn(make_model: Callable, *, per_example: bool = True) -> tuple[Callable, Callable]:
    """``(init_fn, apply_fn)`` from ``make_model(key) -> eqx.Module`` (for Monte Carlo sampling)."""
    import equinox as eqx

    _, apply_fn = from_equinox(make_model(jax.random.PRNGKey(0)), per_example=per_example)

    def init_fn(key, input_shape):
        params = eqx.filter(make_model(key), eqx.is_inexact_array)
        out = jax.eval_shape(lambda p: apply_fn(p, jnp.zeros(input_shape)), params)
        return jax.tree_util.tree_map(lambda s: s.shape, out), params

    return init_fn, apply_fn
