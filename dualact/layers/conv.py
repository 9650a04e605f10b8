"""Convolution (channel-last, e.g. NHWC) on the full spatial covariance.

For a filter of shape ``(k_1, …, k_S)`` the output covariance between pixels ``p`` and ``p'`` is the mean
of the input covariance over the *same* shift applied to both pixels,

    K'(p, p') = W_std² / Π k_d · Σ_δ K(s·p + δ, s·p' + δ) + b_std²,

i.e. a sum of Π k_d diagonal shifts of the 2S-dimensional covariance (zero padding for ``"SAME"``).
It is computed one spatial dimension at a time (k_1 + … + k_S shifted slices instead of a float64 XLA
convolution), which is what makes the Myrtle CNTK fast on CPU.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from dualact.layers.base import Layer
from dualact.layers.dense import check_parameterization
from dualact.layers.kernel import materialize

PADDINGS = ("VALID", "SAME")


def check_padding(padding: str) -> str:
    p = padding.upper()
    if p not in PADDINGS:
        raise NotImplementedError(f"padding must be 'VALID' or 'SAME'; got {padding!r}")
    return p


def output_size(size: int, window: int, stride: int, padding: str) -> tuple[int, tuple[int, int]]:
    """Output length and (low, high) zero padding of a window sweep, as ``lax.padtype_to_pads``."""
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + window - size, 0)
        return out, (total // 2, total - total // 2)
    out = (size - window) // stride + 1
    if out < 1:
        raise ValueError(f"window {window} larger than the input ({size}) with VALID padding")
    return out, (0, 0)


def shift_sum(K, filter_shape, strides, padding, batch_ndim):
    """Σ_δ K(s·p + δ, s·p' + δ) / Π k over the spatial axes of a covariance ``(*batch, *sp, *sp)``."""
    n_sp = len(filter_shape)
    if any(k > s for k, s in zip(filter_shape, strides, strict=True)):
        # overlapping windows read every entry several times: materialise the input, or XLA would fuse the
        # producer (typically an activation's long formula) into each shifted read and evaluate it k times
        K = materialize(K)
    for d in range(n_sp):
        a, b = batch_ndim + d, batch_ndim + n_sp + d
        k, s = filter_shape[d], strides[d]
        if k == 1 and s == 1:
            continue
        out, (lo, hi) = output_size(K.shape[a], k, s, padding)
        if lo or hi:
            pads = [(0, 0)] * K.ndim
            pads[a] = pads[b] = (lo, hi)
            K = jnp.pad(K, pads)
        acc = None
        for delta in range(k):
            idx = [slice(None)] * K.ndim
            idx[a] = idx[b] = slice(delta, delta + s * (out - 1) + 1, s)
            piece = K[tuple(idx)]
            acc = piece if acc is None else acc + piece
        K = acc
    return K * (1.0 / math.prod(filter_shape))


class Conv(Layer):
    """Convolution with shared weights, neural-tangents conventions (NTK parameterization by default).

    Args:
      out_chan: output channels (finite network only, and the standard parameterization).
      filter_shape: e.g. ``(3, 3)``.
      strides: e.g. ``(2, 2)``; ``None`` means 1.
      padding: ``"VALID"`` or ``"SAME"`` (zero padding).
      W_std, b_std: weight and bias standard deviations (``b_std=None``: no bias).
      parameterization: ``"ntk"`` or ``"standard"``.

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> x = jnp.ones((2, 5, 5, 3))
    >>> k = L.Conv(16, (3, 3), padding="SAME", W_std=2.0)(x, None, "nngp")
    >>> k.shape, round(float(k[0, 0, 2, 2, 2, 2]), 6)                 # interior: W² · 1
    ((2, 2, 5, 5, 5, 5), 4.0)
    """

    _hyper = ("out_chan", "filter_shape", "strides", "padding", "W_std", "b_std", "parameterization")

    def __init__(
        self,
        out_chan: int,
        filter_shape,
        strides=None,
        padding: str = "VALID",
        W_std=1.0,
        b_std=None,
        parameterization: str = "ntk",
    ):
        self.out_chan = int(out_chan)
        self.filter_shape = tuple(int(f) for f in filter_shape)
        self.strides = (1,) * len(self.filter_shape) if strides is None else tuple(int(s) for s in strides)
        if len(self.strides) != len(self.filter_shape):
            raise ValueError("strides and filter_shape must have the same length")
        self.padding = check_padding(padding)
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = check_parameterization(parameterization)

    def _out_spatial(self, spatial):
        return tuple(
            output_size(n, k, s, self.padding)[0]
            for n, k, s in zip(spatial, self.filter_shape, self.strides, strict=True)
        )

    def _check(self, shape):
        if len(shape) - 2 != len(self.filter_shape):
            raise ValueError(
                f"Conv with a {len(self.filter_shape)}-D filter needs inputs (batch, "
                f"{len(self.filter_shape)} spatial axes, channels); got shape {tuple(shape)}"
            )

    def _init(self, rng, input_shape):
        self._check(input_shape)
        cin = input_shape[-1]
        k1, k2 = jax.random.split(rng)
        W = jax.random.normal(k1, self.filter_shape + (cin, self.out_chan))
        b = None if self.b_std is None else jax.random.normal(k2, (self.out_chan,))
        if self.parameterization == "standard":
            W = W * (self.W_std / (cin * math.prod(self.filter_shape)) ** 0.5)
            b = None if b is None else b * self.b_std
        out = (input_shape[0],) + self._out_spatial(input_shape[1:-1]) + (self.out_chan,)
        return out, (W, b)

    def _apply(self, params, inputs, **kwargs):
        self._check(inputs.shape)
        W, b = params
        n_sp = len(self.filter_shape)
        sp = "DHW"[-n_sp:] if n_sp <= 3 else None
        if sp is None:
            raise NotImplementedError("Conv supports 1, 2 or 3 spatial dimensions")
        dn = lax.conv_dimension_numbers(inputs.shape, W.shape, ("N" + sp + "C", sp + "IO", "N" + sp + "C"))
        out = lax.conv_general_dilated(
            inputs, W.astype(inputs.dtype), self.strides, self.padding, dimension_numbers=dn
        )
        if self.parameterization == "ntk":
            fan_in = inputs.shape[-1] * math.prod(self.filter_shape)
            out = out * (self.W_std / fan_in**0.5)
            if b is not None:
                out = out + self.b_std * b.astype(inputs.dtype)
        elif b is not None:
            out = out + b.astype(inputs.dtype)
        return out

    def _kernel(self, k):
        self._check(k.shape1)
        w2 = self.W_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2

        def conv(x, batch_ndim):
            return (
                None if x is None else shift_sum(x, self.filter_shape, self.strides, self.padding, batch_ndim)
            )

        def aff(x):
            return None if x is None else w2 * x + b2

        nngp_unscaled = conv(k.nngp, 2)
        nngp = aff(nngp_unscaled)
        ntk = None
        if k.track_ntk and k.nngp is not None:
            prev = 0.0 if k.ntk is None else w2 * conv(k.ntk, 2)
            if self.parameterization == "ntk":
                ntk = nngp if k.ntk is None else nngp + prev
            else:
                fan_in = k.channels * math.prod(self.filter_shape)
                ntk = fan_in * nngp_unscaled + prev + (0.0 if self.b_std is None else 1.0)
        cov1 = aff(conv(k.cov1, 1))
        cov2 = aff(conv(k.cov2, 1))
        shape1 = (k.shape1[0],) + self._out_spatial(k.spatial1) + (self.out_chan,)
        shape2 = (k.shape2[0],) + self._out_spatial(k.spatial2) + (self.out_chan,)
        return k.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=cov1,
            cov2=cov2,
            shape1=shape1,
            shape2=shape2,
            is_gaussian=True,
            is_input=False,
        )
