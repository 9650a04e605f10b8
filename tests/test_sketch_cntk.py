"""CNTK sketch (per-pixel features, exact patch concatenation and pooling) vs exact dualact.layers CNN kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L
from dualact.sketch import UnsupportedArchitectureError, nngp_features, ntk_features
from dualact.sketch.cntk_sketch import patches

X = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 8, 2))


def _rel(phi, K):
    return float(jnp.linalg.norm(phi @ phi.T - K) / jnp.linalg.norm(K))


def test_linear_layers_are_exact():
    """Without activations the features are exact (no randomness at all)."""
    net = L.serial(L.Conv(1, (3, 3), padding="SAME", W_std=1.3, b_std=0.2), L.AvgPool((2, 2), (2, 2)),
                   L.Conv(1, (3, 3), strides=(2, 2), padding="VALID", W_std=0.9), L.Flatten(), L.Dense(1, W_std=1.1))
    exact = net.kernel_fn(X, None, ("nngp", "ntk"))
    for kind, f in (("ntk", ntk_features), ("nngp", nngp_features)):
        phi = f(net, 4096, 2, jax.random.PRNGKey(0))(X)
        np.testing.assert_allclose(phi @ phi.T, getattr(exact, kind), rtol=1e-10, atol=1e-12)


def test_patches_shape():
    assert patches(X, (3, 3), (1, 1), "SAME").shape == (5, 8, 8, 18)
    assert patches(X, (3, 3), (2, 2), "VALID").shape == (5, 3, 3, 18)


@pytest.mark.parametrize("act,kw", [("relu", {}), ("normalized_gaussian", {"gamma": 1.0})])
def test_small_cnn_sketch(act, kw):
    net = L.serial(L.Conv(1, (3, 3), padding="SAME", W_std=1.4), L.Activation(act, **kw),
                   L.AvgPool((2, 2), (2, 2)), L.Conv(1, (3, 3), padding="SAME", W_std=1.4), L.Activation(act, **kw),
                   L.GlobalAvgPool(), L.Dense(1, W_std=1.2))
    exact = net.kernel_fn(X, None, ("nngp", "ntk"))
    errs = []
    for m in (128, 1024):
        errs.append(np.mean([_rel(ntk_features(net, m, 4, jax.random.PRNGKey(s))(X), exact.ntk) for s in range(2)]))
    assert errs[1] < 0.12, errs
    if act == "normalized_gaussian":  # negligible truncation bias: pure sketch variance, ~ m^-1/2
        assert errs[0] / errs[1] > 1.6, errs


@pytest.mark.slow
def test_myrtle5_sketch_vs_exact():
    from dualact.sketch import myrtle_features

    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 1))
    fmap, arch = myrtle_features(5, 1024, 4, jax.random.PRNGKey(0))
    exact = arch.kernel_fn(x, None, "ntk")
    assert _rel(fmap(x), exact) < 0.15


def test_spatial_output_rejected():
    net = L.serial(L.Conv(1, (3, 3), padding="SAME"), L.Activation("relu"), L.Conv(1, (3, 3)))
    with pytest.raises(UnsupportedArchitectureError, match="Flatten"):
        ntk_features(net, 64, 2)(X)


def test_pooled_features_differentiate_under_jit():
    """Overlapping average pooling in the CNTK sketch: jit(grad) works (a traced zero as the reduce_window
    init value gave a reduction without a transpose rule) and equals grad."""
    arch = L.serial(L.Conv(4, (3, 3), padding="SAME"), L.Activation("relu"), L.AvgPool((2, 2), strides=(1, 1)),
                    L.Flatten(), L.Dense(1))
    fm = ntk_features(arch, feature_dim=64, degree=2, key=jax.random.PRNGKey(0))
    xs = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)))
    params, _ = fm.init(xs.shape)

    def total(v):
        return fm.apply(params, v).sum()

    np.testing.assert_allclose(jax.jit(jax.grad(total))(xs), jax.grad(total)(xs), rtol=1e-12, atol=1e-12)
