"""Combinators: serial, parallel, FanOut, FanInSum, FanInConcat, Identity.

``parallel``/``FanOut`` produce lists of kernels, ``FanInSum``/``FanInConcat`` merge them, as in
neural-tangents. Branches are treated as uncorrelated when merged (true whenever each branch but one
contains a layer with fresh zero-mean weights, e.g. residual blocks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dualact.layers.base import Layer


class Serial(Layer):
    """Layers applied one after another (see :func:`serial`)."""

    def __init__(self, *layers: Layer):
        flat: list[Layer] = []
        for layer in layers:
            if isinstance(layer, (list, tuple)) and not isinstance(layer, Layer):
                flat.extend(layer)
            else:
                flat.append(layer)
        for layer in flat:
            if not isinstance(layer, Layer):
                raise TypeError(f"serial() takes dualact layers; got {type(layer).__name__}")
        self._layers = tuple(flat)

    @property
    def layers(self):
        return self._layers

    def _init(self, rng, input_shape):
        params = []
        shape = input_shape
        for layer in self._layers:
            rng, sub = jax.random.split(rng)
            shape, p = layer.init_fn(sub, shape)
            params.append(p)
        return shape, tuple(params)

    def _apply(self, params, inputs, **kwargs):
        for layer, p in zip(self._layers, params, strict=True):
            inputs = layer.apply_fn(p, inputs, **kwargs)
        return inputs

    def _kernel(self, k):
        for layer in self._layers:
            k = layer._kernel(k)
        return k

    def _kernel_eager(self, k):
        for layer in self._layers:
            k = layer._kernel_eager(k)
        return k


def serial(*layers: Layer) -> Serial:
    """Compose layers in sequence.

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Dense(1, W_std=1.5, b_std=0.05))
    >>> [type(layer).__name__ for layer in net.layers]
    ['Dense', 'Dense']
    >>> k = net.kernel_fn(jnp.ones((3, 4)), None, ("nngp", "ntk"))
    >>> k.nngp.shape, k.ntk.shape
    ((3, 3), (3, 3))
    """
    return Serial(*layers)


class Parallel(Layer):
    """Apply the i-th layer to the i-th input (see :func:`parallel`)."""

    def __init__(self, *layers: Layer):
        self._layers = tuple(layers)

    @property
    def layers(self):
        return self._layers

    def _init(self, rng, input_shape):
        rngs = jax.random.split(rng, len(self._layers))
        out = [layer.init_fn(r, s) for layer, r, s in zip(self._layers, rngs, input_shape, strict=True)]
        return [o[0] for o in out], tuple(o[1] for o in out)

    def _apply(self, params, inputs, **kwargs):
        return [
            layer.apply_fn(p, x, **kwargs) for layer, p, x in zip(self._layers, params, inputs, strict=True)
        ]

    def _kernel(self, ks):
        if not isinstance(ks, (list, tuple)):
            raise ValueError("parallel() expects a list of inputs (use FanOut(n) before it)")
        return [layer._kernel(k) for layer, k in zip(self._layers, ks, strict=True)]

    def _kernel_eager(self, ks):
        if not isinstance(ks, (list, tuple)):
            raise ValueError("parallel() expects a list of inputs (use FanOut(n) before it)")
        return [layer._kernel_eager(k) for layer, k in zip(self._layers, ks, strict=True)]


def parallel(*layers: Layer) -> Parallel:
    """Apply layers side by side to a list of inputs (a list of kernels in kernel_fn)."""
    return Parallel(*layers)


class FanOut(Layer):
    """Duplicate the input into ``num`` branches."""

    _hyper = ("num",)

    def __init__(self, num: int):
        self.num = int(num)

    def _init(self, rng, input_shape):
        return [input_shape] * self.num, ()

    def _apply(self, params, inputs, **kwargs):
        return [inputs] * self.num

    def _kernel(self, k):
        return [k] * self.num


def _merge_ntk(ntks, weights):
    if all(t is None for t in ntks):
        return None
    return sum(w * t for w, t in zip(weights, ntks, strict=True) if t is not None)


class FanInSum(Layer):
    """Sum of the branches (kernels add; branches assumed uncorrelated)."""

    def _init(self, rng, input_shape):
        shapes = list(input_shape)
        if any(tuple(s) != tuple(shapes[0]) for s in shapes):
            raise ValueError(f"FanInSum needs branches of equal shapes; got {shapes}")
        return shapes[0], ()

    def _apply(self, params, inputs, **kwargs):
        return sum(inputs[1:], inputs[0])

    def _kernel(self, ks):
        ks = _check_list(ks, "FanInSum")
        ones = [1.0] * len(ks)
        return _combine(ks, ones, ks[0].shape1, ks[0].shape2, all(k.is_gaussian for k in ks))


class FanInConcat(Layer):
    """Concatenate the branches along the channel axis.

    The kernel is the channel-weighted mean ``Σ C_i K_i / Σ C_i`` (``C_i`` the branch widths, as in
    neural-tangents). The result is not Gaussian per channel, so an affine layer must follow before an
    activation.
    """

    _hyper = ("axis",)

    def __init__(self, axis: int = -1):
        self.axis = axis

    def _check_axis(self, ndim):
        if self.axis % ndim != ndim - 1:
            raise NotImplementedError(
                "FanInConcat: only concatenation along the channel (last) axis is supported"
            )

    def _init(self, rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        self._check_axis(len(shapes[0]))
        chans = sum(s[-1] for s in shapes)
        return shapes[0][:-1] + (chans,), ()

    def _apply(self, params, inputs, **kwargs):
        self._check_axis(inputs[0].ndim)
        return jnp.concatenate(inputs, axis=-1)

    def _kernel(self, ks):
        ks = _check_list(ks, "FanInConcat")
        self._check_axis(len(ks[0].shape1))
        chans = [k.channels for k in ks]
        total = sum(chans)
        weights = [c / total for c in chans]
        shape1 = tuple(ks[0].shape1[:-1]) + (total,)
        shape2 = tuple(ks[0].shape2[:-1]) + (total,)
        return _combine(ks, weights, shape1, shape2, len(ks) == 1 and ks[0].is_gaussian)


def _check_list(ks, name):
    if not isinstance(ks, (list, tuple)) or not ks:
        raise ValueError(f"{name} expects several branches (use FanOut/parallel before it)")
    s = ks[0]
    for k in ks[1:]:
        if k.shape1[:-1] != s.shape1[:-1] or k.shape2[:-1] != s.shape2[:-1]:
            raise ValueError(f"{name}: branches have different shapes {s.shape1} vs {k.shape1}")
    return list(ks)


def _combine(ks, weights, shape1, shape2, is_gaussian):
    k0 = ks[0]

    def wsum(field):
        if getattr(k0, field) is None:
            return None
        return sum(w * getattr(k, field) for w, k in zip(weights, ks, strict=True))

    nngp, cov1, cov2 = wsum("nngp"), wsum("cov1"), wsum("cov2")
    ntk = _merge_ntk([k.ntk for k in ks], weights) if k0.track_ntk else None
    return k0.replace(
        nngp=nngp,
        ntk=ntk,
        cov1=cov1,
        cov2=cov2,
        shape1=shape1,
        shape2=shape2,
        is_gaussian=is_gaussian,
        is_input=all(k.is_input for k in ks),
    )


class Identity(Layer):
    """The identity map."""

    def _apply(self, params, inputs, **kwargs):
        return inputs

    def _kernel(self, k):
        return k
