"""Pooling and reshaping layers: AvgPool, GlobalAvgPool, Flatten.

Average pooling acts on each pixel of a pair independently, so on the covariance it is a separable window
sum over all 2S spatial axes, divided by the window size squared (``normalize_edges=False``, the
neural-tangents default: zero-padded pixels count) or by the product of the actual window counts.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from dualact.layers.base import Layer
from dualact.layers.conv import check_padding, output_size
from dualact.layers.kernel import materialize, spatial_diagonal


def _window_sum(x, axes, window, strides, padding):
    """Sum over sliding windows along ``axes`` (window/stride/padding per axis)."""
    if any(w > s for w, s in zip(window, strides, strict=True)):
        x = materialize(x)  # overlapping windows: see conv.shift_sum
    fast = padding == "VALID" and all(
        w == s and x.shape[a] % w == 0 for a, w, s in zip(axes, window, strides, strict=True)
    )
    if fast:  # non-overlapping windows: a reshape and a sum
        shape, sum_axes = [], []
        for ax, n in enumerate(x.shape):
            if ax in axes:
                w = window[axes.index(ax)]
                shape += [n // w, w]
                sum_axes.append(len(shape) - 1)
            else:
                shape.append(n)
        return x.reshape(shape).sum(axis=tuple(sum_axes))
    dims = [1] * x.ndim
    strd = [1] * x.ndim
    pads = [(0, 0)] * x.ndim
    for a, w, s in zip(axes, window, strides, strict=True):
        dims[a], strd[a] = w, s
        pads[a] = output_size(x.shape[a], w, s, padding)[1]
    # The init value must be a concrete (NumPy) zero: a jnp constant becomes a tracer under jit, JAX then
    # does not recognise the sum monoid and binds the generic reduce_window, which has no transpose rule
    # (jit(grad) fails). With a NumPy zero it binds reduce_window_sum (differentiable, and the primitive
    # dualact.empirical's structure rules know).
    zero = np.zeros((), dtype=x.dtype)
    return lax.reduce_window(x, zero, lax.add, tuple(dims), tuple(strd), tuple(pads))


class AvgPool(Layer):
    """Average pooling over spatial windows (neural-tangents semantics; ``strides=None`` means 1).

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> L.AvgPool((2, 2), strides=(2, 2))(jnp.ones((1, 4, 4, 3)), None, "nngp").shape
    (1, 1, 2, 2, 2, 2)
    """

    _hyper = ("window_shape", "strides", "padding", "normalize_edges")

    def __init__(self, window_shape, strides=None, padding: str = "VALID", normalize_edges: bool = False):
        self.window_shape = tuple(int(w) for w in window_shape)
        self.strides = (1,) * len(self.window_shape) if strides is None else tuple(int(s) for s in strides)
        self.padding = check_padding(padding)
        self.normalize_edges = bool(normalize_edges)

    def _out_spatial(self, spatial):
        return tuple(
            output_size(n, w, s, self.padding)[0]
            for n, w, s in zip(spatial, self.window_shape, self.strides, strict=True)
        )

    def _check(self, shape):
        if len(shape) - 2 != len(self.window_shape):
            raise ValueError(
                f"AvgPool with a {len(self.window_shape)}-D window needs inputs with as many "
                f"spatial axes; got shape {tuple(shape)}"
            )

    def _init(self, rng, input_shape):
        self._check(input_shape)
        return (input_shape[0],) + self._out_spatial(input_shape[1:-1]) + (input_shape[-1],), ()

    def _counts(self, spatial, dtype):
        """Number of real (unpadded) pixels in each window, shape ``out_spatial``."""
        ones = jnp.ones(spatial, dtype)
        axes = list(range(len(spatial)))
        return _window_sum(ones, axes, self.window_shape, self.strides, self.padding)

    def _apply(self, params, inputs, **kwargs):
        self._check(inputs.shape)
        axes = list(range(1, inputs.ndim - 1))
        out = _window_sum(inputs, axes, self.window_shape, self.strides, self.padding)
        if self.normalize_edges:
            return out / self._counts(inputs.shape[1:-1], inputs.dtype)[None, ..., None]
        return out / math.prod(self.window_shape)

    def _kernel(self, k):
        self._check(k.shape1)
        n_sp = k.n_spatial

        def pool(x, batch_ndim):
            axes = list(range(batch_ndim, batch_ndim + 2 * n_sp))
            out = _window_sum(x, axes, self.window_shape * 2, self.strides * 2, self.padding)
            if not self.normalize_edges:
                return out / math.prod(self.window_shape) ** 2
            c = self._counts(x.shape[batch_ndim : batch_ndim + n_sp], x.dtype)
            c2 = c.reshape(c.shape + (1,) * n_sp) * c.reshape((1,) * n_sp + c.shape)
            return out / c2

        shape1 = (k.shape1[0],) + self._out_spatial(k.spatial1) + (k.shape1[-1],)
        shape2 = (k.shape2[0],) + self._out_spatial(k.spatial2) + (k.shape2[-1],)
        return k.map_covariances(pool).replace(shape1=shape1, shape2=shape2, is_input=False)


class GlobalAvgPool(Layer):
    """Mean over all spatial positions ``(n, *spatial, C) -> (n, C)``; kernel: mean of all pixel pairs."""

    def _init(self, rng, input_shape):
        return (input_shape[0], input_shape[-1]), ()

    def _apply(self, params, inputs, **kwargs):
        return inputs.mean(axis=tuple(range(1, inputs.ndim - 1)))

    def _kernel(self, k):
        n_sp = k.n_spatial

        def pool(x, batch_ndim):
            return x.mean(axis=tuple(range(batch_ndim, batch_ndim + 2 * n_sp))) if n_sp else x

        return k.map_covariances(pool).replace(
            shape1=(k.shape1[0], k.shape1[-1]), shape2=(k.shape2[0], k.shape2[-1]), is_input=False
        )


class Flatten(Layer):
    """Flatten all non-batch axes. The kernel is the mean over the spatial diagonal (same pixel pairs)."""

    def _init(self, rng, input_shape):
        return (input_shape[0], math.prod(input_shape[1:])), ()

    def _apply(self, params, inputs, **kwargs):
        return inputs.reshape(inputs.shape[0], -1)

    def _kernel(self, k):
        n_sp = k.n_spatial

        def flat(x, batch_ndim):
            if n_sp == 0:
                return x
            return spatial_diagonal(x, batch_ndim).mean(axis=tuple(range(batch_ndim, batch_ndim + n_sp)))

        s1 = (k.shape1[0], math.prod(k.shape1[1:]))
        s2 = (k.shape2[0], math.prod(k.shape2[1:]))
        return k.map_covariances(flat).replace(
            shape1=s1, shape2=s2, is_gaussian=False if n_sp else k.is_gaussian, is_input=False
        )
