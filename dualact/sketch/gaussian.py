"""Gaussian sketch: a dense random projection G ∈ R^{m×d} with i.i.d. N(0, 1/m) entries.

E⟨Gx, Gy⟩ = ⟨x, y⟩ (unbiased), Var = (⟨x,y⟩² + ‖x‖²‖y‖²)/m. The reference sketch (Johnson–Lindenstrauss);
O(m·d) per input, so slower than :mod:`dualact.sketch.srht` for large d but with the simplest analysis.

>>> import jax, jax.numpy as jnp
>>> g = gaussian_sketch_init(jax.random.PRNGKey(0), input_dim=3, sketch_dim=5)
>>> gaussian_sketch_apply(g, jnp.ones((2, 3))).shape
(2, 5)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from dualact.sketch.srht import check_dim, check_last_axis

__all__ = ["GaussianSketch", "gaussian_sketch", "gaussian_sketch_apply", "gaussian_sketch_init"]


@dataclasses.dataclass(frozen=True)
class GaussianSketch:
    """Random parameters of a Gaussian sketch (a JAX pytree).

    Attributes:
      matrix: (sketch_dim, input_dim) with i.i.d. N(0, 1/sketch_dim) entries.
    """

    matrix: jax.Array
    input_dim: int
    sketch_dim: int


jax.tree_util.register_dataclass(GaussianSketch, data_fields=["matrix"], meta_fields=["input_dim", "sketch_dim"])


def gaussian_sketch_init(key, input_dim: int, sketch_dim: int, dtype=None) -> GaussianSketch:
    """Draw G ∈ R^{sketch_dim × input_dim}, entries N(0, 1/sketch_dim) (default dtype: JAX's float)."""
    d = check_dim("input_dim", input_dim)
    m = check_dim("sketch_dim", sketch_dim)
    dtype = dtype or jnp.result_type(float)
    G = jax.random.normal(key, (m, d), dtype) * math.sqrt(1.0 / m)
    return GaussianSketch(matrix=G, input_dim=d, sketch_dim=m)


def gaussian_sketch_apply(sketch: GaussianSketch, x):
    """G x for x of shape (..., input_dim) → (..., sketch_dim)."""
    x = check_last_axis(x, sketch.input_dim)
    return x @ sketch.matrix.T.astype(x.dtype)


def gaussian_sketch(x, sketch_dim: int, *, key):
    """One-shot Gaussian sketch of x (..., d) → (..., sketch_dim)."""
    x = jnp.asarray(x)
    x = check_last_axis(x, x.shape[-1]) if x.ndim else x
    return gaussian_sketch_apply(gaussian_sketch_init(key, x.shape[-1], sketch_dim, x.dtype), x)
