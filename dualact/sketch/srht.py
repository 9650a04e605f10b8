"""Subsampled randomized Hadamard transform (SRHT) and the fast Walsh–Hadamard transform it rests on.

The SRHT of x ∈ R^d into R^m is

    S x = √(1/m) · P H D x,

with D a diagonal of independent random signs, x zero-padded to d' = 2^⌈log₂ d⌉, H the *unnormalised*
d'×d' Walsh–Hadamard matrix (entries ±1, H² = d'·I, Sylvester order) and P a selection of m rows (without
replacement when m ≤ d', with replacement otherwise). Because every entry of H is ±1,
E_D[(HDx)_i (HDy)_i] = ⟨x, y⟩ for *every* row i, so E⟨Sx, Sy⟩ = ⟨x, y⟩ exactly (unbiased). Applying S costs
O(d' log d') per input through :func:`fwht`.

For inputs that are concatenations of pieces (conv patches, [φ, ψ] feature blocks) ``srht_init(...,
segments=...)`` pads every piece to a block boundary instead of padding once at the end: the same guarantees,
with the transform split into short per-block transforms (:mod:`dualact.sketch.block_layout`).

Everything is a pure JAX function of a pytree of random parameters (jit / vmap compatible); any leading
batch shape is allowed: x of shape (..., d) maps to (..., m).

>>> import jax, jax.numpy as jnp
>>> s = srht_init(jax.random.PRNGKey(0), input_dim=3, sketch_dim=4)
>>> srht_apply(s, jnp.ones((2, 3))).shape
(2, 4)
>>> fwht(jnp.array([1.0, 0.0, 0.0, 0.0])).tolist()   # first column of H
[1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

from dualact.errors import DualactError
from dualact.sketch.block_layout import BlockLayout, block_layout, next_power_of_two, to_blocks

__all__ = ["SRHT", "SketchArgumentError", "fwht", "next_power_of_two", "srht", "srht_apply", "srht_init"]


class SketchArgumentError(DualactError, ValueError):
    """A sketch was asked for with invalid sizes (non-positive dimension, negative degree, shape mismatch)."""


def check_dim(name: str, value) -> int:
    """``value`` as a positive ``int``, or :class:`SketchArgumentError` naming ``name``."""
    try:
        v = operator.index(value)
    except TypeError:
        raise SketchArgumentError(f"{name} must be a positive integer, got {value!r}") from None
    if v <= 0:
        raise SketchArgumentError(f"{name} must be a positive integer, got {v}")
    return v


def check_last_axis(x, dim: int, what: str = "x"):
    """``x`` as an array whose last axis has length ``dim`` (floating dtype), else :class:`SketchArgumentError`."""
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise SketchArgumentError(
            f"{what} must have shape (..., {dim}) to match the sketch's input_dim, got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def fwht(x):
    """Unnormalised fast Walsh–Hadamard transform along the last axis: H x with H Sylvester's ±1 matrix.

    The last axis must have length 2^k; cost O(2^k · k) per vector (radix-16 butterflies).
    H is symmetric and H·H = 2^k·I.

    >>> fwht(jnp.array([1.0, 2.0, 3.0, 4.0])).tolist()
    [10.0, -2.0, -4.0, 0.0]
    """
    x = jnp.asarray(x)
    d = x.shape[-1]
    if d & (d - 1):
        raise SketchArgumentError(f"fwht needs a power-of-two length on the last axis, got {d}")
    batch = x.shape[:-1]
    h = 1
    while h < d:
        # radix-b Sylvester step (b ≤ 16): H_{b·h·r} = H_r ⊗ H_b ⊗ H_h applied to the middle factor
        b = min(_RADIX, d // h)
        y = x.reshape(batch + (d // (b * h), b, h))
        x = jnp.einsum("ij,...jk->...ik", _hadamard(b, x.dtype), y, precision=jax.lax.Precision.HIGHEST)
        x = x.reshape(batch + (d,))
        h *= b
    return x


_RADIX = 16


def _hadamard(b: int, dtype):
    """The b×b Sylvester Hadamard matrix (b a power of two) as a constant."""
    H = np.ones((1, 1))
    while H.shape[0] < b:
        H = np.block([[H, H], [H, -H]])
    return jnp.asarray(H, dtype)


@dataclasses.dataclass(frozen=True)
class SRHT:
    """Random parameters of an SRHT (a JAX pytree; ``input_dim``, ``sketch_dim`` and ``layout`` are static).

    Attributes:
      signs: (input_dim,) random ±1 (int8), the diagonal D.
      indices: (sketch_dim,) int32 rows of H kept, in [0, padded_dim).
      layout: ``None`` (zero padding at the end, to next_power_of_two(input_dim)) or a
        :class:`~dualact.sketch.block_layout.BlockLayout` for inputs made of concatenated segments.
    """

    signs: jax.Array
    indices: jax.Array
    input_dim: int
    sketch_dim: int
    layout: BlockLayout | None = None

    @property
    def padded_dim(self) -> int:
        return padded_dim(self.input_dim, self.layout)


jax.tree_util.register_dataclass(
    SRHT, data_fields=["signs", "indices"], meta_fields=["input_dim", "sketch_dim", "layout"]
)


def padded_dim(input_dim: int, layout: BlockLayout | None) -> int:
    """Length of the zero-padded input the Hadamard matrix acts on."""
    return next_power_of_two(input_dim) if layout is None else layout.padded_dim


def layout_for(input_dim: int, segments, sketch_dim: int) -> BlockLayout | None:
    """The block layout of ``segments`` (lengths summing to ``input_dim``) when it takes fewer operations to keep
    ``sketch_dim`` rows than plain padding does; else None (plain padding)."""
    if segments is None:
        return None
    segments = tuple(int(s) for s in segments)
    if sum(segments) != input_dim:
        raise SketchArgumentError(f"segments {segments} do not add up to input_dim={input_dim}")
    layout = block_layout(segments)
    if layout is None:
        return None
    p = next_power_of_two(input_dim)
    plain = p * max(p.bit_length() - 1, 1) + sketch_dim  # one length-P transform, then a gather
    b = layout.block
    blocked = layout.used * (b * max(b.bit_length() - 1, 1) + 2 * sketch_dim)  # per-block transforms, signed sums
    return layout if blocked < plain else None


def random_signs(key, shape):
    """Independent uniform ±1 of the given shape (int8)."""
    return (2 * jax.random.bernoulli(key, 0.5, shape).astype(jnp.int8) - 1).astype(jnp.int8)


def random_rows(key, padded_dim: int, sketch_dim: int, batch: tuple[int, ...] = ()):
    """``sketch_dim`` row indices of [0, padded_dim): distinct when sketch_dim ≤ padded_dim, else i.i.d."""
    if sketch_dim <= padded_dim:  # the first m entries of a uniformly random permutation
        order = jnp.argsort(jax.random.uniform(key, batch + (padded_dim,), jnp.float32), axis=-1)
        return order[..., :sketch_dim].astype(jnp.int32)
    return jax.random.randint(key, batch + (sketch_dim,), 0, padded_dim, dtype=jnp.int32)


def srht_init(key, input_dim: int, sketch_dim: int, *, segments=None) -> SRHT:
    """Draw an SRHT from R^input_dim to R^sketch_dim.

    ``segments``: lengths of the concatenated pieces inputs are made of (e.g. conv patches), for the faster
    segment-aligned padding of :mod:`dualact.sketch.block_layout` (same guarantees).
    """
    input_dim = check_dim("input_dim", input_dim)
    sketch_dim = check_dim("sketch_dim", sketch_dim)
    layout = layout_for(input_dim, segments, sketch_dim)
    k1, k2 = jax.random.split(key)
    return SRHT(
        signs=random_signs(k1, (input_dim,)),
        indices=random_rows(k2, padded_dim(input_dim, layout), sketch_dim),
        input_dim=input_dim,
        sketch_dim=sketch_dim,
        layout=layout,
    )


def hadamard_rows(signs, x):
    """H D x (zero-padded to a power of two) along the last axis: the full transformed vector."""
    d = x.shape[-1]
    dp = next_power_of_two(d)
    y = x * signs.astype(x.dtype)
    if dp != d:
        y = jnp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, dp - d)])
    return fwht(y)


def hadamard_rows_at(signs, x, indices, layout: BlockLayout | None = None):
    """Rows ``indices`` of H D x̃ (x̃ = x zero-padded as ``layout`` says): (..., input_dim) → (..., len(indices))."""
    if layout is None:
        return jnp.take(hadamard_rows(signs, x), indices, axis=-1)
    y = fwht(to_blocks(layout, x * signs.astype(x.dtype)))  # (..., used, b): H_b on every occupied block
    a, c = indices // layout.block, indices % layout.block
    beta = jnp.arange(layout.used, dtype=indices.dtype)
    sign = 1 - 2 * (jax.lax.population_count(beta[:, None] & a[None, :]) & 1)  # H_B[a_k, β], (used, m)
    return jnp.sum(jnp.take(y, c, axis=-1) * sign.astype(x.dtype), axis=-2)


def srht_apply(sketch: SRHT, x):
    """S x = √(1/m)·P H D x for x of shape (..., input_dim) → (..., sketch_dim)."""
    x = check_last_axis(x, sketch.input_dim)
    hx = hadamard_rows_at(sketch.signs, x, sketch.indices, sketch.layout)
    return hx * math.sqrt(1.0 / sketch.sketch_dim)


def srht(x, sketch_dim: int, *, key):
    """One-shot SRHT: ``srht_apply(srht_init(key, x.shape[-1], sketch_dim), x)``.

    >>> x = jnp.arange(6.0).reshape(2, 3)
    >>> srht(x, 8, key=jax.random.PRNGKey(1)).shape
    (2, 8)
    """
    x = jnp.asarray(x)
    return srht_apply(srht_init(key, x.shape[-1], sketch_dim), x)
