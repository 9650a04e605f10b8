"""Layer normalisation."""

from __future__ import annotations

import jax.numpy as jnp

from dualact.layers.base import Layer
from dualact.layers.kernel import outer_variances


class LayerNorm(Layer):
    """``(x − mean) / √(eps + var)`` over ``axis`` (which must include the channel axis, -1).

    In the infinite-width limit the channel mean vanishes and the channel variance of input ``i`` at
    pixel ``p`` is its NNGP variance ``v_i(p)``; the kernels become
    ``K_ij(p, p') / √((eps + v_i(p))(eps + v_j(p')))``
    (with ``v`` averaged over any spatial axes also listed in ``axis``). Zero inputs stay finite thanks to
    ``eps``.

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> k = L.serial(L.Dense(8, W_std=3.0), L.LayerNorm())(jnp.array([[1.0, 2.0]]), None, "nngp")
    >>> round(float(k[0, 0]), 6)
    1.0
    """

    _hyper = ("axis", "eps")

    def __init__(self, axis=-1, eps: float = 1e-12):
        self.axis = axis
        self.eps = eps

    def _axes(self, ndim):
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        axes = sorted({a % ndim for a in axes})
        if ndim - 1 not in axes:
            raise ValueError(
                "LayerNorm must normalise over the channel axis (-1) to have an infinite-width limit"
            )
        if 0 in axes:
            raise ValueError("LayerNorm over the batch axis is not supported")
        return axes

    def _apply(self, params, inputs, **kwargs):
        axes = tuple(self._axes(inputs.ndim))
        mean = inputs.mean(axis=axes, keepdims=True)
        var = ((inputs - mean) ** 2).mean(axis=axes, keepdims=True)
        return (inputs - mean) / jnp.sqrt(self.eps + var)

    def _kernel(self, k):
        ndim = len(k.shape1)
        spatial_axes = [a for a in self._axes(ndim) if a != ndim - 1]  # positions 1..S of the inputs

        def prep(var):
            if spatial_axes:
                var = jnp.broadcast_to(var.mean(axis=tuple(spatial_axes), keepdims=True), var.shape)
            return self.eps + var

        var1, var2 = k.variances()
        v1 = prep(var1)
        v2 = prep(var2)
        nngp = ntk = None
        if k.nngp is not None:
            a, b = outer_variances(v1, v2, 2)
            inv12 = 1.0 / (jnp.sqrt(a) * jnp.sqrt(b))  # √a·√b: a·b over/underflows beyond ~1e±154
            nngp = k.nngp * inv12
            ntk = None if k.ntk is None else k.ntk * inv12

        def self_norm(cov, v):
            if cov is None:
                return None
            p, q = outer_variances(v, v, 1)
            return cov / (jnp.sqrt(p) * jnp.sqrt(q)) if k.n_spatial else cov / v

        cov1 = self_norm(k.cov1, v1)
        cov2 = self_norm(k.cov2, v2)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2, is_input=False)
