"""Infinite-width layer API, shaped like ``neural_tangents.stax``.

Every constructor returns a :class:`Layer` that unpacks as ``(init_fn, apply_fn, kernel_fn)``:

>>> import jax.numpy as jnp
>>> from dualact import layers as L
>>> init_fn, apply_fn, kernel_fn = L.serial(
...     L.Dense(512, W_std=1.5, b_std=0.05), L.Activation("relu"), L.Dense(1, W_std=1.5, b_std=0.05))
>>> k = kernel_fn(jnp.ones((3, 8)), None, ("nngp", "ntk"))
>>> k.nngp.shape, k.ntk.shape
((3, 3), (3, 3))

Conventions (neural-tangents): input kernel ``X Xᵀ / d``; Dense ``nngp' = W²·nngp + b²``,
``ntk' = nngp' + W²·ntk``; activations map ``nngp → T`` and ``ntk → ntk·Ṫ`` on the pre-activation
covariances; Conv/AvgPool act on the full spatial covariance.
"""

from dualact.layers.activation import Activation, Elementwise
from dualact.layers.architectures import fully_connected, myrtle
from dualact.layers.base import Layer
from dualact.layers.blocking import compute_kernel
from dualact.layers.combinators import FanInConcat, FanInSum, FanOut, Identity, parallel, serial
from dualact.layers.conv import Conv
from dualact.layers.dense import Dense
from dualact.layers.kernel import Kernel
from dualact.layers.normalization import LayerNorm
from dualact.layers.planning import estimate_cost
from dualact.layers.pooling import AvgPool, Flatten, GlobalAvgPool

__all__ = [
    "Activation",
    "AvgPool",
    "Conv",
    "Dense",
    "Elementwise",
    "FanInConcat",
    "FanInSum",
    "FanOut",
    "Flatten",
    "GlobalAvgPool",
    "Identity",
    "Kernel",
    "Layer",
    "LayerNorm",
    "compute_kernel",
    "estimate_cost",
    "fully_connected",
    "myrtle",
    "parallel",
    "serial",
]
