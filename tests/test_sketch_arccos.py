"""Algorithm 1 features of fully connected dualact.layers architectures vs their exact kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import catalog
from dualact import layers as L
from dualact.errors import DualactError
from dualact.sketch import UnsupportedArchitectureError, nngp_features, ntk_features

X = jax.random.normal(jax.random.PRNGKey(0), (16, 6))


def _net(act, **kw):
    return L.serial(L.Dense(1, W_std=1.4, b_std=0.1), L.Activation(act, **kw), L.Dense(1, W_std=1.3, b_std=0.2),
                    L.Activation(act, **kw), L.Dense(1, W_std=1.2))


def _rel(phi, K):
    return float(jnp.linalg.norm(phi @ phi.T - K) / jnp.linalg.norm(K))


CASES = [("relu", {}), ("leaky_relu", {"alpha": 0.2}), ("normalized_gaussian", {"gamma": 1.0})]
CASES += [(n, {}) for n in ("abs",) if n in catalog.names()]


@pytest.mark.parametrize("act,kw", CASES)
def test_features_approximate_exact_kernels(act, kw):
    net = _net(act, **kw)
    exact = net.kernel_fn(X, None, ("nngp", "ntk"))
    errs = []
    for m in (256, 2048):
        e = [(_rel(ntk_features(net, m, 4, jax.random.PRNGKey(s))(X), exact.ntk),
              _rel(nngp_features(net, m, 4, jax.random.PRNGKey(s))(X), exact.nngp)) for s in range(2)]
        errs.append(np.mean(e, axis=0))
    assert errs[1][0] < 0.12 and errs[1][1] < 0.08, errs
    # error ~ m^-1/2: a factor 8 in m gives about √8 ≈ 2.8 (at least 1.8)
    assert errs[0][0] / errs[1][0] > 1.8 and errs[0][1] / errs[1][1] > 1.8, errs


def test_error_slope_in_feature_dim():
    net = _net("relu")
    exact = net.kernel_fn(X, None, "ntk")
    ms = np.array([128, 512, 2048])  # (same degree as above: compiled maps are shared)
    err = [np.mean([_rel(ntk_features(net, int(m), 4, jax.random.PRNGKey(s))(X), exact) for s in range(3)])
           for m in ms]
    slope = np.polyfit(np.log(ms), np.log(err), 1)[0]
    assert -0.75 < slope < -0.3, (slope, err)


def test_error_floor_decreases_with_degree():
    """With many features the bias of the degree-q truncation dominates: it shrinks as q grows (κ' of ReLU)."""
    net = L.serial(L.Dense(1, W_std=1.4), L.Activation("relu"), L.Dense(1, W_std=1.4))
    x = jnp.concatenate([X, X[:4] + 1e-3])  # near-parallel pairs: ρ close to 1, where κ0 converges slowly
    exact = net.kernel_fn(x, None, "ntk")
    from dualact.sketch.taylor import taylor_approximation

    def poly_ntk(q):  # the kernel the sketch is unbiased for: κ, κ' replaced by their polynomials
        a = taylor_approximation("relu", q)
        k0 = net.layers[0].kernel_fn(x, None, "nngp")
        d = jnp.sqrt(jnp.diag(k0))
        rho = jnp.clip(k0 / jnp.outer(d, d), -1, 1)
        return 1.96 * (jnp.outer(d, d) * a.kappa_fn(rho) + k0 * a.kappa_prime_fn(rho))

    errs = [float(jnp.linalg.norm(poly_ntk(q) - exact) / jnp.linalg.norm(exact)) for q in (2, 8, 32)]
    assert errs[0] > errs[1] > errs[2]


def test_standard_parameterization_and_nngp_only():
    net = L.serial(L.Dense(8, W_std=1.3, b_std=0.3, parameterization="standard"), L.Activation("relu"),
                   L.Dense(1, W_std=1.1, parameterization="standard"))
    exact = net.kernel_fn(X, None, ("nngp", "ntk"))
    assert _rel(ntk_features(net, 4096, 6, jax.random.PRNGKey(0))(X), exact.ntk) < 0.1
    assert _rel(nngp_features(net, 4096, 6, jax.random.PRNGKey(0))(X), exact.nngp) < 0.1


def test_cross_batches_consistent_and_shape():
    net = _net("relu")
    f = ntk_features(net, 512, 4, jax.random.PRNGKey(3))
    a, b = f(X[:5]), f(X[5:])
    full = f(X)
    np.testing.assert_allclose(np.concatenate([a, b]), full, rtol=1e-10, atol=1e-12)
    assert full.shape == (16, 512)
    assert f(X[:0]).shape == (0, 512)  # an empty batch has no features


def test_bad_inputs_and_degrees_raise_dualact_errors():
    f = ntk_features(_net("relu"), 64, 2, jax.random.PRNGKey(0))
    with pytest.raises(DualactError, match="shape"):
        f(X[0])  # one input without its batch axis
    for degree in (-1, 2.5):
        with pytest.raises(DualactError, match="degree"):
            ntk_features(_net("relu"), 64, degree)(X)


def test_unsupported_architectures():
    with pytest.raises(UnsupportedArchitectureError, match="hermite_features"):
        ntk_features(L.serial(L.Dense(1), L.Activation("gelu"), L.Dense(1)), 64, 4)
    with pytest.raises(UnsupportedArchitectureError):
        ntk_features(L.serial(L.Dense(1), L.FanOut(2), L.FanInSum()), 64, 4)
    f = ntk_features(L.serial(L.Dense(1), L.Activation("relu"), L.Activation("relu")), 64, 2)
    with pytest.raises(UnsupportedArchitectureError, match="Gaussian"):
        f(X)
    assert issubclass(UnsupportedArchitectureError, DualactError)
