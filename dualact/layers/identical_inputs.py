"""Which inputs of ``kernel_fn(x1, x2)`` are the same input: pairs of rows equal bit for bit.

Two equal inputs give the same random variable at every layer, so their kernel entries are variances, and an
activation layer evaluates them with its exact diagonal formula T(q, q, q) (see
:meth:`~dualact.layers.kernel.Kernel.coincident_mask`). The generic formula at ρ = 1 is not enough: the
cross covariance x1ᵢ·x2ⱼ and the variance x1ᵢ·x1ᵢ are summed in different orders, so in float32 they differ in
the last bits; that puts ρ at 1 − 1e-7 instead of 1, a kink's √(1 − ρ) turns it into 3e-4 per layer, and
after 100 layers ``kernel_fn(x, x)`` was 0.6% (ReLU NTK) to 46% (tanh) off ``kernel_fn(x, None)``; GeLU and
Gabor gave NaN at the large variances of a deep network even in float64.

Rows are compared through two 32-bit hashes of their bit patterns (−0 counted as +0): each word is combined
with a key for its position and scrambled by an integer mixing function, and the results are summed modulo
2³². Integer sums do not depend on the order of summation, so equal rows get equal hashes however the rows are
laid out; unequal rows collide with probability about 2⁻⁶⁴ per pair.

>>> import jax.numpy as jnp
>>> x = jnp.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
>>> identical_rows(x, x[:2]).tolist()
[[True, False], [False, True], [True, False]]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["identical_rows"]

_SEEDS = (0x5EED1, 0x5EED2)


def identical_rows(x1, x2) -> jax.Array:
    """Boolean ``(n1, n2)``: whether row i of ``x1`` equals row j of ``x2`` (all trailing axes; no gradient)."""
    h1 = _row_hashes(x1)
    h2 = h1 if x2 is x1 else _row_hashes(x2)  # kernel_fn(x, None): hash once
    return jnp.all(h1[:, None, :] == h2[None, :, :], axis=-1)


def _row_hashes(x) -> jax.Array:
    """``(n, 2)`` uint32 hashes of the rows of ``x``."""
    x = jax.lax.stop_gradient(jnp.asarray(x))
    x = jnp.where(x == 0, jnp.zeros((), x.dtype), x)  # −0 and +0 are the same input
    size = jnp.dtype(x.dtype).itemsize
    if size >= 4:
        words = jax.lax.bitcast_convert_type(x, jnp.uint32)  # float64: a trailing axis of two words
    else:
        words = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * size}")).astype(jnp.uint32)
    words = jnp.reshape(words, (x.shape[0], -1))
    m = words.shape[1]
    hashes = []
    for seed in _SEEDS:
        keys = jnp.asarray(np.random.default_rng(seed).integers(0, 2**32, size=m, dtype=np.uint32))
        hashes.append(jnp.sum(_mix(words ^ keys[None, :]), axis=1, dtype=jnp.uint32))
    return jnp.stack(hashes, axis=-1)


def _mix(v):
    """A bijective scrambling of uint32 words (the "lowbias32" finaliser: xor-shifts and odd multipliers)."""
    v = v ^ (v >> 16)
    v = v * jnp.uint32(0x7FEB352D)
    v = v ^ (v >> 15)
    v = v * jnp.uint32(0x846CA68B)
    return v ^ (v >> 16)
