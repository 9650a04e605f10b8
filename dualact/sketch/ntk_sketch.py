"""NTK Sketch (Zandieh et al., NeurIPS 2021, Algorithm 1) for deep fully connected ReLU networks.

Target kernel (Paper B's normalisation, raw inputs, no bias): with κ1(α) = (√(1−α²) + α(π − arccos α))/π and
κ0(α) = (π − arccos α)/π (arc-cosine kernels with κ(1) = 1), Σ⁰ = Θ⁰ = ⟨x, y⟩ and for h = 1..L

    Σʰ = ‖x‖‖y‖·κ1(αₕ₋₁),   Θʰ = Θʰ⁻¹·κ0(αₕ₋₁) + Σʰ,   αₕ = κ1(αₕ₋₁), α₀ = cos∠(x, y).

This is the dualact kernel of ``serial(Dense(W=1), [Activation("relu"), Dense(W=√2)] × L)`` times d (dualact
divides the input Gram by d), so the sketch is Algorithm 1 (:mod:`dualact.sketch.arccos`) on that
architecture — layer-wise Taylor truncation of κ1 and κ0 (:mod:`dualact.sketch.taylor`) and PolySketch —
with the features multiplied by √d.

>>> import jax, jax.numpy as jnp
>>> x = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
>>> phi = ntk_sketch(x.shape[1], depth=2, feature_dim=2048, degree=8, key=jax.random.PRNGKey(1))(x)
>>> K = relu_ntk(x, depth=2)
>>> bool(jnp.linalg.norm(phi @ phi.T - K) / jnp.linalg.norm(K) < 0.2)
True
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["NTKSketch", "relu_ntk", "relu_ntk_architecture", "ntk_sketch"]


def _kappa1(a):
    a = jnp.clip(a, -1.0, 1.0)
    return (jnp.sqrt(jnp.maximum(1.0 - a * a, 0.0)) + a * (jnp.pi - jnp.arccos(a))) / jnp.pi


def _kappa0(a):
    return (jnp.pi - jnp.arccos(jnp.clip(a, -1.0, 1.0))) / jnp.pi


def relu_ntk(x, y=None, depth: int = 1):
    """Exact depth-L ReLU NTK Θᴸ(x, y) of Zandieh et al. (closed form through the α recursion).

    >>> import jax.numpy as jnp
    >>> float(relu_ntk(jnp.array([[1.0, 0.0]]), depth=3)[0, 0])   # ‖x‖²·(L + 1) on the diagonal
    4.0
    """
    x = jnp.asarray(x)
    y = x if y is None else jnp.asarray(y)
    nx = jnp.linalg.norm(x, axis=-1)
    ny = jnp.linalg.norm(y, axis=-1)
    scale = nx[:, None] * ny[None, :]
    xy = jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    alpha = jnp.clip(xy / jnp.where(scale > 0, scale, 1.0), -1.0, 1.0)
    theta = alpha
    for _ in range(depth):
        theta = theta * _kappa0(alpha)
        alpha = _kappa1(alpha)
        theta = theta + alpha
    return scale * theta


def relu_ntk_architecture(depth: int):
    """The :mod:`dualact.layers` network whose NTK is ``relu_ntk / d``."""
    from dualact import layers as L

    layers = [L.Dense(1, W_std=1.0)]
    for _ in range(depth):
        layers += [L.Activation("relu"), L.Dense(1, W_std=math.sqrt(2.0))]
    return L.serial(*layers)


class NTKSketch:
    """Features ``phi(x)`` (n, feature_dim) with ``phi(x) @ phi(y).T ≈ relu_ntk(x, y, depth)``."""

    def __init__(self, input_dim: int, depth: int, feature_dim: int, degree: int, key, method: str = "fold",
                 sketch_dim: int | None = None):
        from dualact.sketch.features import ntk_features

        self.input_dim, self.depth = int(input_dim), int(depth)
        self.arch = relu_ntk_architecture(depth)
        self.fmap = ntk_features(self.arch, feature_dim, degree, key, method=method, sketch_dim=sketch_dim)
        self.fmap.init((1, self.input_dim))

    def __call__(self, x):
        return math.sqrt(self.input_dim) * self.fmap(x)


def ntk_sketch(input_dim: int, depth: int = 1, feature_dim: int = 4096, degree: int = 8, key=None, *,
               method: str = "fold", sketch_dim: int | None = None) -> NTKSketch:
    """The NTK Sketch of a depth-``depth`` ReLU network for inputs of dimension ``input_dim``.

    ``degree`` is the polynomial degree of the per-layer κ1/κ0 approximations; ``method`` ``"fold"`` or ``"nnls"``.
    """
    import jax

    return NTKSketch(input_dim, depth, feature_dim, degree, jax.random.PRNGKey(0) if key is None else key,
                     method, sketch_dim)
