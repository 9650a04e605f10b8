"""Fully connected layer (acts on the trailing channel axis, also per pixel of an image)."""

from __future__ import annotations

import jax

from dualact.layers.base import Layer

PARAMETERIZATIONS = ("ntk", "standard")


def check_parameterization(p: str) -> str:
    p = p.lower()
    if p not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be 'ntk' or 'standard'; got {p!r}")
    return p


class Dense(Layer):
    """Dense layer ``z = W_std/√fan_in · x W + b_std · b`` (``"ntk"``) or ``z = x W + b`` (``"standard"``).

    Kernel map (neural-tangents conventions), with ``K`` the incoming NNGP and ``Θ`` the incoming NTK:

    * ``"ntk"``:      ``nngp' = W_std² K + b_std²``,  ``ntk' = nngp' + W_std² Θ``
    * ``"standard"``: ``nngp' = W_std² K + b_std²``,  ``ntk' = fan_in · K + W_std² Θ (+ 1 with a bias)``

    ``out_dim`` only matters for the finite network, for the ``"standard"`` NTK of the next layer and for
    ``FanInConcat`` weights.

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> k = L.Dense(8, W_std=1.5, b_std=0.1)(jnp.eye(2), None, ("nngp", "ntk"))
    >>> [round(float(v), 4) for v in (k.nngp[0, 0], k.nngp[0, 1], k.ntk[0, 0])]
    [1.135, 0.01, 1.135]
    """

    _hyper = ("out_dim", "W_std", "b_std", "parameterization")

    def __init__(self, out_dim: int, W_std=1.0, b_std=None, parameterization: str = "ntk"):
        self.out_dim = int(out_dim)
        self.W_std = W_std
        self.b_std = b_std
        self.parameterization = check_parameterization(parameterization)

    def _init(self, rng, input_shape):
        fan_in = input_shape[-1]
        k1, k2 = jax.random.split(rng)
        W = jax.random.normal(k1, (fan_in, self.out_dim))
        b = None if self.b_std is None else jax.random.normal(k2, (self.out_dim,))
        if self.parameterization == "standard":
            W = W * (self.W_std / fan_in**0.5)
            b = None if b is None else b * self.b_std
        return tuple(input_shape[:-1]) + (self.out_dim,), (W, b)

    def _apply(self, params, inputs, **kwargs):
        W, b = params
        W = W.astype(inputs.dtype)
        out = inputs @ W
        if self.parameterization == "ntk":
            out = out * (self.W_std / inputs.shape[-1] ** 0.5)
            if b is not None:
                out = out + self.b_std * b.astype(inputs.dtype)
        elif b is not None:
            out = out + b.astype(inputs.dtype)
        return out

    def _kernel(self, k):
        w2 = self.W_std**2
        b2 = 0.0 if self.b_std is None else self.b_std**2
        fan_in = k.channels

        def aff(x):
            return None if x is None else w2 * x + b2

        nngp = aff(k.nngp)
        ntk = None
        if k.track_ntk and k.nngp is not None:
            prev = 0.0 if k.ntk is None else w2 * k.ntk
            if self.parameterization == "ntk":
                ntk = nngp if k.ntk is None else nngp + prev
            else:
                ntk = fan_in * k.nngp + prev + (0.0 if self.b_std is None else 1.0)
        shape1 = tuple(k.shape1[:-1]) + (self.out_dim,)
        shape2 = tuple(k.shape2[:-1]) + (self.out_dim,)
        return k.replace(
            nngp=nngp,
            ntk=ntk,
            cov1=aff(k.cov1),
            cov2=aff(k.cov2),
            shape1=shape1,
            shape2=shape2,
            is_gaussian=True,
            is_input=False,
        )
