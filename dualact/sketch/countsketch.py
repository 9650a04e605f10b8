"""CountSketch and TensorSketch (FFT-based sketch of degree-p tensor products).

CountSketch (Charikar et al. 2002): a random hash h: [d] → [m] and random signs s: [d] → ±1 give

    (C x)_k = Σ_{i : h(i) = k} s_i x_i,        E⟨Cx, Cy⟩ = ⟨x, y⟩,

in O(nnz(x)) time. TensorSketch (Pham & Pagh 2013; Avron et al. 2014) sketches x₁ ⊗ … ⊗ x_p with p
independent CountSketches C_1..C_p and a circular convolution computed by FFT:

    TS(x₁ ⊗ … ⊗ x_p) = IFFT( Π_i FFT(C_i x_i) ),   E⟨TS(x^{⊗p}), TS(y^{⊗p})⟩ = ⟨x, y⟩^p,

because the convolution is exactly the CountSketch of the tensor product with hash Σ_i h_i(j_i) mod m and
sign Π_i s_i(j_i). Cost O(p (nnz(x) + m log m)).

>>> import jax, jax.numpy as jnp
>>> cs = countsketch_init(jax.random.PRNGKey(0), input_dim=4, sketch_dim=3)
>>> countsketch_apply(cs, jnp.ones((2, 4))).shape
(2, 3)
>>> ts = tensorsketch_init(jax.random.PRNGKey(0), input_dim=4, sketch_dim=8, degree=3)
>>> tensorsketch_apply(ts, jnp.ones((2, 4))).shape
(2, 8)
"""

from __future__ import annotations

import dataclasses
import operator

import jax
import jax.numpy as jnp

from dualact.sketch.srht import SketchArgumentError, check_dim, check_last_axis, random_signs

__all__ = [
    "CountSketch",
    "TensorSketch",
    "countsketch",
    "countsketch_apply",
    "countsketch_init",
    "tensorsketch",
    "tensorsketch_apply",
    "tensorsketch_init",
]


@dataclasses.dataclass(frozen=True)
class CountSketch:
    """Random parameters of a CountSketch (a JAX pytree; the dimensions are static).

    Attributes:
      buckets: (..., input_dim) int32 hash values h(i) in [0, sketch_dim).
      signs: (..., input_dim) int8 random ±1.
    """

    buckets: jax.Array
    signs: jax.Array
    input_dim: int
    sketch_dim: int


jax.tree_util.register_dataclass(
    CountSketch, data_fields=["buckets", "signs"], meta_fields=["input_dim", "sketch_dim"]
)


def countsketch_init(key, input_dim: int, sketch_dim: int, *, num: int | None = None) -> CountSketch:
    """Draw a CountSketch R^input_dim → R^sketch_dim (``num`` independent ones stacked on a leading axis)."""
    d = check_dim("input_dim", input_dim)
    m = check_dim("sketch_dim", sketch_dim)
    batch = () if num is None else (check_dim("num", num),)
    k1, k2 = jax.random.split(key)
    buckets = jax.random.randint(k1, batch + (d,), 0, m, dtype=jnp.int32)
    return CountSketch(buckets=buckets, signs=random_signs(k2, batch + (d,)), input_dim=d, sketch_dim=m)


def countsketch_apply(sketch: CountSketch, x):
    """C x for x of shape (..., input_dim) → (..., sketch_dim)."""
    x = check_last_axis(x, sketch.input_dim)
    out = jnp.zeros(x.shape[:-1] + (sketch.sketch_dim,), x.dtype)
    return out.at[..., sketch.buckets].add(x * sketch.signs.astype(x.dtype))


def countsketch(x, sketch_dim: int, *, key):
    """One-shot CountSketch of x (..., d) → (..., sketch_dim)."""
    x = jnp.asarray(x)
    return countsketch_apply(countsketch_init(key, x.shape[-1], sketch_dim), x)


@dataclasses.dataclass(frozen=True)
class TensorSketch:
    """Random parameters of a degree-p TensorSketch: ``degree`` stacked independent CountSketches."""

    counts: CountSketch
    input_dim: int
    sketch_dim: int
    degree: int


jax.tree_util.register_dataclass(
    TensorSketch, data_fields=["counts"], meta_fields=["input_dim", "sketch_dim", "degree"]
)


def tensorsketch_init(key, input_dim: int, sketch_dim: int, degree: int) -> TensorSketch:
    """Draw a TensorSketch of (R^input_dim)^{⊗degree} → R^sketch_dim (degree ≥ 1)."""
    d = check_dim("input_dim", input_dim)
    m = check_dim("sketch_dim", sketch_dim)
    try:
        p = operator.index(degree)
    except TypeError:
        raise SketchArgumentError(f"degree must be a positive integer, got {degree!r}") from None
    if p < 1:
        raise SketchArgumentError(f"TensorSketch degree must be ≥ 1, got {p} (degree 0 is the constant e₁)")
    counts = countsketch_init(key, d, m, num=p)
    return TensorSketch(counts=counts, input_dim=d, sketch_dim=m, degree=p)


def tensorsketch_apply(sketch: TensorSketch, *xs):
    """TS(x₁ ⊗ … ⊗ x_p): pass one array for x^{⊗p} or ``degree`` arrays (leading shapes broadcast).

    Each x_i has shape (..., input_dim); the result has shape (..., sketch_dim).
    """
    if len(xs) == 1:
        xs = xs * sketch.degree
    if len(xs) != sketch.degree:
        raise SketchArgumentError(
            f"tensorsketch_apply takes 1 or degree={sketch.degree} input arrays, got {len(xs)}"
        )
    m = sketch.sketch_dim
    prod = None
    for i, x in enumerate(xs):
        x = check_last_axis(x, sketch.input_dim)
        ci = jax.tree_util.tree_map(lambda t, i=i: t[i], sketch.counts)
        f = jnp.fft.rfft(countsketch_apply(ci, x), n=m, axis=-1)
        prod = f if prod is None else prod * f
    return jnp.fft.irfft(prod, n=m, axis=-1)


def tensorsketch(x, sketch_dim: int, degree: int, *, key):
    """One-shot TensorSketch of x^{⊗degree}.

    >>> tensorsketch(jnp.ones((3, 5)), 16, 2, key=jax.random.PRNGKey(0)).shape
    (3, 16)
    """
    x = jnp.asarray(x)
    return tensorsketch_apply(tensorsketch_init(key, x.shape[-1], sketch_dim, degree), x)
