"""CNTK sketch (Zandieh et al. 2021; Han et al. 2022, Myrtle): per-pixel features for convolutional networks.

The linear layers of a CNN act on per-pixel features exactly, so the cost is linear in the number of pixels:

* :class:`ConvStep`: the kernel's patch sum K'(p, p') = W²/|k|·Σ_δ K(p+δ, p'+δ) + b² is realised exactly by
  concatenating the |k| shifted feature maps (zero padding for ``"SAME"``, strides by slicing), scaled by
  W/√|k|; the NTK branch is ``[phi', W·patches(psi)]`` as for a dense layer;
* :class:`AvgPoolStep`, :class:`GlobalAvgPoolStep`: average the features over the window (linear, exact);
* :class:`FlattenStep`: concatenate the pixels and divide by √(#pixels) (the kernel's spatial-diagonal mean).

The activations are the per-pixel sketches of :class:`~dualact.sketch.arccos.HomogeneousStep` (PolySketch
input dimension = |k|·(feature dimension)); the steps record the segments the patch concatenations are made
of, so those sketches use segment-aligned padding (:mod:`dualact.sketch.block_layout`).
:func:`myrtle_features` builds the features of :func:`dualact.layers.myrtle`.

>>> import jax, jax.numpy as jnp
>>> from dualact import layers as L
>>> from dualact.sketch import ntk_features
>>> net = L.serial(L.Conv(1, (3, 3), padding="SAME", W_std=1.4), L.Activation("relu"),
...                L.GlobalAvgPool(), L.Dense(1, W_std=1.4))
>>> x = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 6, 2))
>>> phi = ntk_features(net, feature_dim=1024, degree=4, key=jax.random.PRNGKey(1))(x)
>>> exact = net.kernel_fn(x, None, "ntk")
>>> bool(jnp.linalg.norm(phi @ phi.T - exact) / jnp.linalg.norm(exact) < 0.25)
True
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dualact.sketch.arccos import DenseStep, Dims, FeatureState, Step

__all__ = ["AvgPoolStep", "ConvStep", "FlattenStep", "GlobalAvgPoolStep", "myrtle_features", "patches"]


def _pads(size: int, window: int, stride: int, padding: str) -> tuple[int, tuple[int, int]]:
    from dualact.layers.conv import output_size

    return output_size(size, window, stride, padding)


def patches(x, filter_shape, strides, padding):
    """Concatenate the shifted windows of ``x`` (n, *spatial, d) → (n, *out_spatial, |k|·d), zero padded."""
    n_sp = len(filter_shape)
    pads = [(0, 0)]
    outs = []
    for d in range(n_sp):
        out, lohi = _pads(x.shape[1 + d], filter_shape[d], strides[d], padding)
        pads.append(lohi)
        outs.append(out)
    pads.append((0, 0))
    if any(p != (0, 0) for p in pads):
        x = jnp.pad(x, pads)
    pieces = []
    for delta in itertools.product(*(range(k) for k in filter_shape)):
        idx = [slice(None)]
        for d in range(n_sp):
            idx.append(slice(delta[d], delta[d] + strides[d] * (outs[d] - 1) + 1, strides[d]))
        pieces.append(x[tuple(idx)])
    return jnp.concatenate(pieces, axis=-1)


class ConvStep(Step):
    """Exact feature map of ``Conv``: patch concatenation followed by a :class:`DenseStep`."""

    def __init__(self, filter_shape, strides, padding, W_std, b_std=None, parameterization="ntk"):
        self.filter_shape, self.strides, self.padding = tuple(filter_shape), tuple(strides), padding
        self.size = math.prod(self.filter_shape)
        self.dense = DenseStep(W_std, b_std, parameterization)

    def _key(self):
        return (self.filter_shape, self.strides, self.padding, self.dense._key())

    def _out_spatial(self, spatial):
        sizes = zip(spatial, self.filter_shape, self.strides, strict=True)
        return tuple(_pads(n, k, s, self.padding)[0] for n, k, s in sizes)

    def init(self, key, dims: Dims, out_channels: int):
        if len(dims.spatial) != len(self.filter_shape):
            raise ValueError(f"Conv with a {len(self.filter_shape)}-D filter needs as many spatial axes")
        inner = dataclasses.replace(
            dims, phi=dims.phi * self.size, psi=None if dims.psi is None else dims.psi * self.size,
            channels=dims.channels * self.size, phi_segments=dims.segments("phi") * self.size,
            psi_segments=None if dims.psi is None else dims.segments("psi") * self.size,
        )
        _, out = self.dense.init(key, inner, out_channels)
        return None, dataclasses.replace(out, spatial=self._out_spatial(dims.spatial))

    def _patch(self, x):
        return None if x is None else patches(x, self.filter_shape, self.strides, self.padding) / math.sqrt(self.size)

    def apply(self, params, s: FeatureState, dims: Dims) -> FeatureState:
        var = None
        if s.var is not None:
            var = patches(s.var[..., None], self.filter_shape, self.strides, self.padding).mean(-1)
        inner_dims = dataclasses.replace(dims, channels=dims.channels * self.size)
        return self.dense.apply(None, FeatureState(self._patch(s.phi), self._patch(s.psi), var), inner_dims)


class AvgPoolStep(Step):
    """Average pooling of the features (exact); the exact variances are dropped (they need cross-pixel terms)."""

    def __init__(self, window_shape, strides, padding, normalize_edges=False):
        self.window, self.strides, self.padding = tuple(window_shape), tuple(strides), padding
        self.normalize_edges = normalize_edges

    def _key(self):
        return (self.window, self.strides, self.padding, self.normalize_edges)

    def init(self, key, dims: Dims):
        sizes = zip(dims.spatial, self.window, self.strides, strict=True)
        spatial = tuple(_pads(n, w, s, self.padding)[0] for n, w, s in sizes)
        return None, dataclasses.replace(dims, spatial=spatial, exact_var=False)

    def _pool(self, x):
        if x is None:
            return None
        n_sp = x.ndim - 2
        dims = (1,) + self.window + (1,)
        strd = (1,) + self.strides + (1,)
        pads = [(0, 0)] + [_pads(x.shape[1 + d], self.window[d], self.strides[d], self.padding)[1]
                           for d in range(n_sp)] + [(0, 0)]
        # a concrete (NumPy) zero: JAX then uses its window sum, which reverse-mode autodiff can transpose under jit
        out = lax.reduce_window(x, np.zeros((), x.dtype), lax.add, dims, strd, pads)
        if not self.normalize_edges:
            return out / math.prod(self.window)
        ones = jnp.ones((1,) + x.shape[1:-1] + (1,), x.dtype)
        return out / lax.reduce_window(ones, np.zeros((), x.dtype), lax.add, dims, strd, pads)

    def apply(self, params, s: FeatureState, dims: Dims) -> FeatureState:
        return FeatureState(self._pool(s.phi), self._pool(s.psi), None)


class GlobalAvgPoolStep(Step):
    """Mean of the features over all pixels (exact)."""

    def _key(self):
        return ()

    def init(self, key, dims: Dims):
        return None, dataclasses.replace(dims, spatial=(), exact_var=False)

    def apply(self, params, s: FeatureState, dims: Dims) -> FeatureState:
        def mean(x):
            return None if x is None else x.mean(axis=tuple(range(1, x.ndim - 1)))

        return FeatureState(mean(s.phi), mean(s.psi), None)


class FlattenStep(Step):
    """Concatenate the pixels' features, divided by √(#pixels); the variance becomes the mean variance."""

    def _key(self):
        return ()

    def init(self, key, dims: Dims):
        p = math.prod(dims.spatial)
        return None, dataclasses.replace(
            dims, spatial=(), phi=dims.phi * p, psi=None if dims.psi is None else dims.psi * p,
            channels=dims.channels * p, gaussian=dims.gaussian and p == 1, phi_segments=dims.segments("phi") * p,
            psi_segments=None if dims.psi is None else dims.segments("psi") * p,
        )

    def apply(self, params, s: FeatureState, dims: Dims) -> FeatureState:
        def flat(x):
            if x is None:
                return None
            p = math.prod(x.shape[1:-1])
            return x.reshape(x.shape[0], -1) / math.sqrt(p)

        var = None if s.var is None else s.var.reshape(s.var.shape[0], -1).mean(-1)
        return FeatureState(flat(s.phi), flat(s.psi), var)


def myrtle_features(depth: int = 5, feature_dim: int = 1024, degree: int = 8, key=None, *, act="relu",
                    kind: str = "ntk", **options):
    """Features of the Myrtle CNN :func:`dualact.layers.myrtle` (``kind`` ``"ntk"`` or ``"nngp"``).

    ``act`` and activation parameters as in :func:`dualact.layers.myrtle`; ``options`` go to
    :func:`dualact.sketch.ntk_features` (``sketch_dim``, ``method``). Returns ``(fmap, arch)``.
    """
    from dualact.layers import myrtle
    from dualact.sketch.features import nngp_features, ntk_features

    act_params = options.pop("act_params", {})
    arch = myrtle(depth, act, **act_params)
    key = jax.random.PRNGKey(0) if key is None else key
    build = ntk_features if kind == "ntk" else nngp_features
    return build(arch, feature_dim=feature_dim, degree=degree, key=key, **options), arch
