"""NTK Sketch and NTK random features (Zandieh et al. 2021) vs the exact deep ReLU NTK."""

import jax
import jax.numpy as jnp
import numpy as np

from dualact.sketch import (
    leverage_gaussian,
    ntk_random_features_apply,
    ntk_random_features_init,
    ntk_sketch,
    relu_ntk,
    relu_ntk_architecture,
)

X = jax.random.normal(jax.random.PRNGKey(0), (14, 5))


def _rel(phi, K):
    return float(jnp.linalg.norm(phi @ phi.T - K) / jnp.linalg.norm(K))


def test_relu_ntk_matches_layers():
    for depth in (1, 3):
        K = relu_ntk(X, depth=depth)
        K_layers = relu_ntk_architecture(depth).kernel_fn(X, None, "ntk") * X.shape[1]
        np.testing.assert_allclose(K, K_layers, rtol=1e-6)  # arccos near ρ = 1


def test_ntk_sketch_error_decreases():
    K = relu_ntk(X, depth=2)
    errs = [np.mean([_rel(ntk_sketch(5, 2, m, 6, jax.random.PRNGKey(s))(X), K) for s in range(2)])
            for m in (128, 1024)]
    assert errs[1] < 0.12 and errs[0] / errs[1] > 1.8, errs


def test_leverage_sampler_moments():
    d = 7
    w = leverage_gaussian(jax.random.PRNGKey(0), d, 200_000)
    r2 = jnp.sum(w * w, axis=0)
    assert abs(float(r2.mean()) - (d + 2)) < 0.05  # χ²_{d+2}
    assert abs(float(jnp.mean(d / r2)) - 1.0) < 0.01  # importance weights average to 1


def test_ntk_random_features():
    K = relu_ntk(X, depth=2)
    errs = {}
    for lev in (True, False):
        errs[lev] = []
        for m in (128, 2048):
            e = [_rel(ntk_random_features_apply(
                ntk_random_features_init(jax.random.PRNGKey(s), 5, 2, m, m, 2 * m, leverage=lev), X), K)
                for s in range(2)]
            errs[lev].append(np.mean(e))
    for lev, (small, large) in errs.items():
        assert large < 0.2 and small / large > 2.5, (lev, errs)
