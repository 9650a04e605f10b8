"""PolySketch: sketches of x^{⊗j} for every degree j = 0..p at once, from one binary tree of TensorSRHTs.

Ahle et al. (SODA 2020); Han et al. (NeurIPS 2022), Algorithm 1 step "PolySketch"; Zandieh et al.
(NeurIPS 2021). With p' = 2^L ≥ p (L ≥ 1) the tree has p'/2^{ℓ+1} independent TensorSRHT nodes at level
ℓ = 0..L−1: level-0 nodes map R^d ⊗ R^d → R^m, higher nodes R^m ⊗ R^m → R^m.

* Degree p' (full tree): every level-0 node sketches x ⊗ x, every higher node the pair of its children.
* Lower degrees j reuse the same randomness (Ahle et al.'s padding with e₁): the leaves after the first j are
  e₁. A node whose right half is all e₁ is replaced by its left child — at level 0, the TensorSRHT of x ⊗ e₁
  (an SRHT of x); higher up, the identity (sketching a ⊗ e₁ only rescales by ⟨e₁, e₁⟩ = 1). The tree
  therefore computes, for every j, a sketch Q_j with

      E⟨Q_j x, Q_j y⟩ = ⟨x, y⟩^j     (unbiased: each node is, and disjoint subtrees are independent),

  and out[0] = e₁ exactly. Cost: O(p·log p) TensorSRHTs of dimension max(d, m) per input, shared by all
  degrees (the sketches of different degrees are correlated by design).

>>> import jax, jax.numpy as jnp
>>> ps = polysketch_init(jax.random.PRNGKey(0), input_dim=5, sketch_dim=64, degree=3)
>>> z = polysketch_apply(ps, jnp.ones((2, 5)) / jnp.sqrt(5.0))
>>> z.shape
(4, 2, 64)
>>> z[0, 0, :3].tolist()
[1.0, 0.0, 0.0]
"""

from __future__ import annotations

import dataclasses
import operator

import jax
import jax.numpy as jnp
import numpy as np

from dualact.sketch.srht import SketchArgumentError, check_dim, check_last_axis
from dualact.sketch.tensor_srht import TensorSRHT, tensor_srht_apply, tensor_srht_init

__all__ = ["PolySketch", "polysketch_apply", "polysketch_init"]


@dataclasses.dataclass(frozen=True)
class PolySketch:
    """Random parameters of a PolySketch (a JAX pytree; dimensions and degree are static).

    Attributes:
      levels: one stacked :class:`~dualact.sketch.tensor_srht.TensorSRHT` per tree level, level ℓ holding
        p'/2^{ℓ+1} independent nodes on its leading axis (empty for degree 0).
      input_dim, sketch_dim, degree: sizes; outputs have shape (degree + 1, ..., sketch_dim).
    """

    levels: tuple[TensorSRHT, ...]
    input_dim: int
    sketch_dim: int
    degree: int

    @property
    def num_levels(self) -> int:
        return len(self.levels)


jax.tree_util.register_dataclass(
    PolySketch, data_fields=["levels"], meta_fields=["input_dim", "sketch_dim", "degree"]
)


def _check_degree(degree) -> int:
    try:
        p = operator.index(degree)
    except TypeError:
        raise SketchArgumentError(f"degree must be a non-negative integer, got {degree!r}") from None
    if p < 0:
        raise SketchArgumentError(f"degree must be a non-negative integer, got {p}")
    return p


def _num_levels(degree: int) -> int:
    return max(1, (degree - 1).bit_length()) if degree >= 1 else 0


def polysketch_init(key, input_dim: int, sketch_dim: int, degree: int) -> PolySketch:
    """Draw a PolySketch of R^input_dim for all degrees 0..degree, each into R^sketch_dim."""
    d = check_dim("input_dim", input_dim)
    m = check_dim("sketch_dim", sketch_dim)
    p = _check_degree(degree)
    L = _num_levels(p)
    keys = jax.random.split(key, max(L, 1))
    levels = []
    for ell in range(L):
        nodes = 2 ** (L - ell - 1)
        din = d if ell == 0 else m
        levels.append(tensor_srht_init(keys[ell], din, din, m, num=nodes))
    return PolySketch(levels=tuple(levels), input_dim=d, sketch_dim=m, degree=p)


def _nodes(level: TensorSRHT, ks, a, b, a_axis, b_axis):
    """TensorSRHT of nodes ``ks`` (static list) on stacked (axis 0) or shared (axis None) inputs."""
    params = jax.tree_util.tree_map(lambda t: t[np.asarray(ks)], level)
    return jax.vmap(tensor_srht_apply, in_axes=(0, a_axis, b_axis))(params, a, b)


def polysketch_apply(sketch: PolySketch, x):
    """Sketches of x^{⊗j}, j = 0..degree, for x of shape (..., input_dim) → (degree + 1, ..., sketch_dim).

    ``out[j]`` satisfies E⟨out[j](x), out[j](y)⟩ = ⟨x, y⟩^j; ``out[0]`` is e₁ for every input.
    """
    x = check_last_axis(x, sketch.input_dim)
    m, p = sketch.sketch_dim, sketch.degree
    batch = x.shape[:-1]
    e1_m = jnp.zeros(batch + (m,), x.dtype).at[..., 0].set(1.0)
    if p == 0:
        return e1_m[None]
    partial: dict[int, jax.Array] = {}

    # level 0: full nodes sketch x ⊗ x; the boundary node of an odd degree sketches x ⊗ e₁
    lvl = sketch.levels[0]
    full_ks = list(range(p // 2))
    full = _nodes(lvl, full_ks, x, x, None, None) if full_ks else None
    odd = [j for j in range(1, p + 1) if j % 2 == 1]
    e1_d = jnp.zeros((sketch.input_dim,), x.dtype).at[0].set(1.0)
    half_nodes = _nodes(lvl, [(j - 1) // 2 for j in odd], x, e1_d, None, None)
    for i, j in enumerate(odd):
        partial[j] = half_nodes[i]
    for j in range(2, p + 1, 2):
        partial[j] = full[j // 2 - 1]

    for ell in range(1, sketch.num_levels):
        lvl, size, half = sketch.levels[ell], 2 ** (ell + 1), 2**ell
        ks = list(range(p // size))
        new_full = _nodes(lvl, ks, full[np.asarray([2 * k for k in ks])], full[np.asarray([2 * k + 1 for k in ks])],
                          0, 0) if ks else None
        mixed = [j for j in range(1, p + 1) if half < j - ((j - 1) // size) * size < size]
        if mixed:
            mk = [(j - 1) // size for j in mixed]
            out = _nodes(lvl, mk, full[np.asarray([2 * k for k in mk])], jnp.stack([partial[j] for j in mixed]), 0, 0)
            for i, j in enumerate(mixed):
                partial[j] = out[i]
        for k in ks:
            partial[(k + 1) * size] = new_full[k]
        full = new_full
    return jnp.stack([e1_m] + [partial[j] for j in range(1, p + 1)])
