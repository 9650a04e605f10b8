"""NTK random features (Zandieh et al., NeurIPS 2021, "NTKRF") for deep ReLU networks, leverage-score sampled.

Arc-cosine random features per layer, for the kernel :func:`dualact.sketch.ntk_sketch.relu_ntk`:

* order 0: t(z) = √(2/m0)·1[⟨w_i, z⟩ > 0], w_i ~ N(0, I)  ⇒  E⟨t(z), t(z')⟩ = κ0(cos∠(z, z'));
* order 1 with **leverage-score sampling**: w ~ q(w) ∝ ‖w‖²·N(w; 0, I), drawn exactly as w = r·u with
  r² ~ χ²_{d+2} and u uniform on the sphere, and importance weight d/‖w‖²:
  a(z) = √(2d/m1)·max(⟨w_i, z⟩, 0)/‖w_i‖  ⇒  E⟨a(z), a(z')⟩ = ‖z‖‖z'‖·κ1(cos∠(z, z'))
  (``leverage=False``: plain Gaussian w and √(2/m1)).

Layer h: NNGP features φʰ = a(φʰ⁻¹); NTK features ψʰ = [φʰ, TensorSRHT(ψʰ⁻¹, t(φʰ⁻¹))] (Θʰ = Θʰ⁻¹κ0 + Σʰ),
starting from φ⁰ = ψ⁰ = x. The output dimension is m1 + ms.

>>> import jax, jax.numpy as jnp
>>> from dualact.sketch.ntk_sketch import relu_ntk
>>> x = jax.random.normal(jax.random.PRNGKey(0), (6, 5))
>>> rf = ntk_random_features_init(jax.random.PRNGKey(1), 5, depth=1, m0=2048, m1=2048, ms=2048)
>>> phi = ntk_random_features_apply(rf, x)
>>> K = relu_ntk(x, depth=1)
>>> phi.shape, bool(jnp.linalg.norm(phi @ phi.T - K) / jnp.linalg.norm(K) < 0.2)
((6, 4096), True)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from dualact.sketch.arccos import tensor_apply, tensor_init

__all__ = ["leverage_gaussian", "ntk_random_features", "ntk_random_features_apply", "ntk_random_features_init"]


def leverage_gaussian(key, dim: int, num: int, dtype=None):
    """``num`` exact samples of q(w) ∝ ‖w‖²·N(w; 0, I_dim), shape (dim, num): w = r·u, r² ~ χ²_{dim+2}."""
    k1, k2 = jax.random.split(key)
    g = jax.random.normal(k1, (dim, num), dtype)
    u = g / jnp.linalg.norm(g, axis=0, keepdims=True)
    r2 = 2.0 * jax.random.gamma(k2, (dim + 2) / 2.0, (num,), dtype)
    return u * jnp.sqrt(r2)[None, :]


def ntk_random_features_init(key, input_dim: int, depth: int = 1, m0: int = 1024, m1: int = 1024, ms: int = 2048,
                             *, leverage: bool = True):
    """Random parameters (a pytree of per-layer dicts) of the NTKRF map."""
    layers = []
    d_phi, d_psi = int(input_dim), int(input_dim)
    for k in jax.random.split(key, depth):
        k0, k1, k2 = jax.random.split(k, 3)
        W1 = leverage_gaussian(k1, d_phi, m1) if leverage else jax.random.normal(k1, (d_phi, m1))
        weight = (d_phi / jnp.sum(W1 * W1, axis=0)) if leverage else jnp.ones((m1,))
        layers.append({
            "W0": jax.random.normal(k0, (d_phi, m0)),
            "W1": W1,
            "scale1": jnp.sqrt(2.0 * weight / m1),
            "tensor": tensor_init(k2, d_psi, m0, ms),
        })
        d_phi, d_psi = m1, m1 + ms
    return layers


def ntk_random_features_apply(params, x):
    """NTK features of ``x`` (n, d) → (n, m1 + ms); ``phi @ phi.T ≈ relu_ntk(x, depth)``."""
    x = jnp.asarray(x)
    phi = psi = x
    for layer in params:
        m0 = layer["W0"].shape[1]
        z0 = phi @ layer["W0"].astype(x.dtype)
        t = jnp.sqrt(2.0 / m0) * (z0 > 0).astype(x.dtype)
        a = jnp.maximum(phi @ layer["W1"].astype(x.dtype), 0.0) * layer["scale1"].astype(x.dtype)
        psi = jnp.concatenate([a, tensor_apply(layer["tensor"], psi, t)], axis=-1)
        phi = a
    return psi


def ntk_random_features(x, depth: int = 1, feature_dim: int = 4096, *, key, leverage: bool = True):
    """One-shot NTKRF features with m0 = m1 = feature_dim/4 and ms = feature_dim/2 (output feature_dim)."""
    m = int(feature_dim)
    params = ntk_random_features_init(key, jnp.shape(x)[-1], depth, m // 4, m // 4, m - m // 4, leverage=leverage)
    return ntk_random_features_apply(params, x)
