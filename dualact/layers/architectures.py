"""Ready-made architectures: fully connected networks and the Myrtle CNNs."""

from __future__ import annotations

import math

from dualact.layers.activation import Activation
from dualact.layers.base import Layer
from dualact.layers.combinators import serial
from dualact.layers.conv import Conv
from dualact.layers.dense import Dense
from dualact.layers.pooling import AvgPool, Flatten


def _act(act, act_params) -> Layer:
    return act if isinstance(act, Layer) else Activation(act, **act_params)


def fully_connected(
    depth: int,
    width: int = 512,
    act="relu",
    W_std=1.0,
    b_std=None,
    out_dim: int = 1,
    parameterization: str = "ntk",
    W_std_out=None,
    b_std_out=None,
    **act_params,
) -> Layer:
    """``depth`` hidden layers ``[Dense(width), Activation(act)]`` followed by a ``Dense(out_dim)`` readout.

    ``act`` is a catalog name, an expression, a DualKernel or an activation ``Layer``; ``act_params`` are
    passed to :class:`Activation`. ``W_std_out``/``b_std_out`` default to ``W_std``/``b_std``.

    >>> from dualact import layers as L
    >>> net = L.fully_connected(2, 512, "relu", W_std=1.5, b_std=0.05)
    >>> [type(layer).__name__ for layer in net.layers]
    ['Dense', 'Activation', 'Dense', 'Activation', 'Dense']
    """
    if depth < 0:
        raise ValueError("depth must be non-negative")
    layers: list[Layer] = []
    for _ in range(depth):
        layers += [Dense(width, W_std, b_std, parameterization), _act(act, act_params)]
    layers.append(
        Dense(
            out_dim,
            W_std if W_std_out is None else W_std_out,
            b_std if b_std_out is None else b_std_out,
            parameterization,
        )
    )
    return serial(*layers)


_MYRTLE = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}
_SQRT2 = math.sqrt(2.0)


def myrtle(
    depth: int = 5,
    act="relu",
    width: int = 128,
    W_std=_SQRT2,
    b_std=None,
    out_dim: int = 10,
    **act_params,
) -> Layer:
    """The Myrtle CNN of Shankar et al. (2020), as in neural-tangents' example and Paper A.

    ``[Conv3×3 SAME, act] × k1 → AvgPool 2×2 → [Conv, act] × k2 → AvgPool → [Conv, act] × k3 →
    AvgPool × 3 → Flatten → Dense(out_dim)``, with ``(k1, k2, k3) = (2, 1, 1)``, ``(2, 2, 2)``, ``(3, 3, 3)``
    for depth 5, 7, 10. Designed for 32×32 inputs (the last three pools take 8×8 to 1×1).
    """
    if depth not in _MYRTLE:
        raise ValueError(f"Myrtle depth must be one of {sorted(_MYRTLE)}; got {depth}")
    k1, k2, k3 = _MYRTLE[depth]

    def block(n):
        out: list[Layer] = []
        for _ in range(n):
            out += [Conv(width, (3, 3), padding="SAME", W_std=W_std, b_std=b_std), _act(act, act_params)]
        return out

    pool = AvgPool((2, 2), strides=(2, 2))
    layers = block(k1) + [pool] + block(k2) + [pool] + block(k3) + [pool] * 3
    layers += [Flatten(), Dense(out_dim, W_std, b_std)]
    return serial(*layers)
