"""TensorSRHT: a degree-2 sketch of x ⊗ y that never forms the d1·d2-dimensional tensor product.

Following Ahle et al. (SODA 2020) and Han et al. (NeurIPS 2022, the building block of PolySketch), for
x ∈ R^{d1}, y ∈ R^{d2}:

    S(x ⊗ y)_k = √(1/m) · (H D1 x)_{i_k} · (H D2 y)_{j_k},   k = 1..m,

with D1, D2 **independent** random ±1 diagonals, H the unnormalised Walsh–Hadamard matrix (inputs zero-padded
to powers of two) and (i_k, j_k) sampled coordinates of the d1'×d2' grid (each factor's indices distinct when
m ≤ d', otherwise i.i.d.). Since E[(HD1x)_i (HD1x')_i] = ⟨x, x'⟩ for every row i and D1 ⟂ D2,

    E⟨S(x ⊗ y), S(x' ⊗ y')⟩ = ⟨x, x'⟩·⟨y, y'⟩        (unbiased),

and the relative error decays like m^{-1/2}. This is the real (Hadamard) form; the public code of the papers
uses the complex DFT instead, which has the same expectation. Cost O(d log d + m) per pair.

>>> import jax, jax.numpy as jnp
>>> t = tensor_srht_init(jax.random.PRNGKey(0), 3, 5, sketch_dim=16)
>>> tensor_srht_apply(t, jnp.ones((4, 3)), jnp.ones((4, 5))).shape
(4, 16)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from dualact.sketch.block_layout import BlockLayout
from dualact.sketch.srht import (
    check_dim,
    check_last_axis,
    hadamard_rows_at,
    layout_for,
    padded_dim,
    random_rows,
    random_signs,
)

__all__ = ["TensorSRHT", "tensor_srht", "tensor_srht_apply", "tensor_srht_init"]


@dataclasses.dataclass(frozen=True)
class TensorSRHT:
    """Random parameters of a TensorSRHT (a JAX pytree; the dimensions are static).

    Leading axes on the arrays (e.g. a stack of independent sketches, as PolySketch keeps per tree level)
    are allowed; :func:`tensor_srht_apply` then needs :func:`jax.vmap` over them.

    Attributes:
      signs1, signs2: (input_dim1,), (input_dim2,) independent random ±1 (int8).
      indices1, indices2: (sketch_dim,) int32 coordinates of H D1 x and H D2 y that are multiplied.
    """

    signs1: jax.Array
    signs2: jax.Array
    indices1: jax.Array
    indices2: jax.Array
    input_dim1: int
    input_dim2: int
    sketch_dim: int
    layout1: BlockLayout | None = None
    layout2: BlockLayout | None = None


jax.tree_util.register_dataclass(
    TensorSRHT,
    data_fields=["signs1", "signs2", "indices1", "indices2"],
    meta_fields=["input_dim1", "input_dim2", "sketch_dim", "layout1", "layout2"],
)


def tensor_srht_init(key, input_dim1: int, input_dim2: int, sketch_dim: int, *, num: int | None = None,
                     segments1=None, segments2=None) -> TensorSRHT:
    """Draw a TensorSRHT from R^{input_dim1} ⊗ R^{input_dim2} to R^{sketch_dim}.

    ``num``: draw that many independent sketches stacked on a leading axis (for :func:`jax.vmap`).
    ``segments1``, ``segments2``: segment lengths of concatenated inputs, as in
    :func:`~dualact.sketch.srht.srht_init` (segment-aligned padding; same guarantees, fewer operations).
    """
    d1 = check_dim("input_dim1", input_dim1)
    d2 = check_dim("input_dim2", input_dim2)
    m = check_dim("sketch_dim", sketch_dim)
    batch = () if num is None else (check_dim("num", num),)
    layout1, layout2 = layout_for(d1, segments1, m), layout_for(d2, segments2, m)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return TensorSRHT(
        signs1=random_signs(k1, batch + (d1,)),
        signs2=random_signs(k2, batch + (d2,)),
        indices1=random_rows(k3, padded_dim(d1, layout1), m, batch),
        indices2=random_rows(k4, padded_dim(d2, layout2), m, batch),
        input_dim1=d1,
        input_dim2=d2,
        sketch_dim=m,
        layout1=layout1,
        layout2=layout2,
    )


def tensor_srht_apply(sketch: TensorSRHT, x, y):
    """S(x ⊗ y) for x of shape (..., input_dim1) and y of shape (..., input_dim2) (leading shapes broadcast).

    Returns (..., sketch_dim).
    """
    x = check_last_axis(x, sketch.input_dim1, "x")
    y = check_last_axis(y, sketch.input_dim2, "y")
    dtype = jnp.result_type(x, y)
    hx = hadamard_rows_at(sketch.signs1, x.astype(dtype), sketch.indices1, sketch.layout1)
    hy = hadamard_rows_at(sketch.signs2, y.astype(dtype), sketch.indices2, sketch.layout2)
    return hx * hy * math.sqrt(1.0 / sketch.sketch_dim)


def tensor_srht(x, y, sketch_dim: int, *, key):
    """One-shot TensorSRHT of x ⊗ y (fresh randomness from ``key``).

    >>> x = jnp.array([[1.0, 0.0]]); y = jnp.array([[0.0, 2.0, 0.0]])
    >>> tensor_srht(x, y, 8, key=jax.random.PRNGKey(2)).shape
    (1, 8)
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    return tensor_srht_apply(tensor_srht_init(key, x.shape[-1], y.shape[-1], sketch_dim), x, y)
