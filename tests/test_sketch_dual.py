"""Single-layer dual kernels: Hermite series with per-norm coefficients and Monte Carlo, vs the catalog."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dualact.catalog
from dualact.errors import DualactError
from dualact.sketch.dual_features import (
    hermite_dual,
    hermite_features,
    monte_carlo_dual,
    monte_carlo_features,
    radial_coefficients,
)
from dualact.sketch.srht import SketchArgumentError


def _exact(name, x1, x2=None, params=None):
    k = dualact.catalog.get(name)
    x2 = x1 if x2 is None else x2
    q1 = jnp.sum(x1 * x1, 1)[:, None]
    q2 = jnp.sum(x2 * x2, 1)[None, :]
    return k.nngp(q1, x1 @ x2.T, q2, **(params or {}))


def _rel(K, E):
    return float(jnp.linalg.norm(K - E) / jnp.linalg.norm(E))


@pytest.fixture(scope="module")
def fig1_data():
    """The Figure-1 setting at n = 300: entries N(0, 1/256), d = 256 (norms² ≈ 1 ± 0.09)."""
    return jax.random.normal(jax.random.PRNGKey(0), (300, 256), jnp.float64) / 16.0


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_fast_coefficients_match_mpmath(name):
    kernel = dualact.catalog.get(name)
    s = np.array([0.3, 1.0, 2.5])
    fast = np.asarray(radial_coefficients(name, s, degree=11))
    for i, si in enumerate(s):
        np.testing.assert_allclose(fast[i], kernel.hermite_coefficients(float(si), 12), atol=1e-13)


@pytest.mark.parametrize(
    "name, at8, band",
    [("relu", 3.5e-4, 2.0), ("gelu", 2.4e-5, 2.5)],  # papers.md §1.5.1 (Hermite q = 8)
)
def test_hermite_error_decreases_and_matches_expected_magnitude(fig1_data, name, at8, band):
    x = fig1_data
    K = _exact(name, x)
    errs = [_rel(hermite_dual(name, x, degree=q), K) for q in (1, 2, 4, 8, 12)]
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert at8 / band < errs[3] < at8 * band, errs


def test_hermite_off_sphere_converges():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 8))
    x *= (rng.uniform(0.1, 2.5, 40) / np.linalg.norm(x, axis=1))[:, None]  # norms from 0.1 to 2.5
    x = jnp.asarray(x)
    K = _exact("gelu", x)
    smooth = [_rel(hermite_dual("gelu", x, degree=q), K) for q in (10, 40)]
    assert smooth[1] < 1e-2 * smooth[0] and smooth[1] < 1e-5, smooth
    K = _exact("relu", x)
    errs = [_rel(hermite_dual("relu", x, degree=q), K) for q in (4, 16, 64)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3, errs  # per-norm coefficients: no divergence


def test_hermite_rectangular_and_params():
    rng = np.random.default_rng(2)
    x1, x2 = jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal((7, 3)))
    params = {"a": 1.5, "b": 0.7, "c": 0.2}
    K = hermite_dual("erf_family", x1, x2, degree=40, params=params)
    assert K.shape == (5, 7)
    np.testing.assert_allclose(K, _exact("erf_family", x1, x2, params), atol=1e-9)


def test_zero_norm_input_is_exact_and_finite():
    params = {"a": 1.0, "b": 1.0, "c": 0.5}  # σ(0) = c ≠ 0
    x = jnp.asarray([[0.0, 0.0, 0.0], [0.3, -1.2, 0.5], [1.0, 0.0, 0.0]])
    K = hermite_dual("erf_family", x, degree=6, params=params)
    assert np.isfinite(np.asarray(K)).all()
    # T(0, 0, q) = σ(0)·E[σ(√q z)] = c² for the odd erf plus c
    np.testing.assert_allclose(K[0], 0.25, atol=1e-14)
    np.testing.assert_allclose(hermite_dual("relu", x, degree=6)[0], 0.0, atol=1e-15)
    mc = monte_carlo_dual("relu", x, num_features=64, key=jax.random.PRNGKey(0))
    assert np.isfinite(np.asarray(mc)).all()


def test_hermite_dual_under_jit(fig1_data):
    x = fig1_data[:20]
    np.testing.assert_allclose(jax.jit(lambda v: hermite_dual("gelu", v, degree=5))(x),
                               hermite_dual("gelu", x, degree=5), atol=1e-14)


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_monte_carlo_within_five_sigma(name):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((12, 6)) / np.sqrt(6))
    m, key = 4096, jax.random.PRNGKey(7)
    F = monte_carlo_features(name, x, m, key=key) * np.sqrt(m)  # σ(⟨w_i, x⟩), one column per sample
    prods = F[:, None, :] * F[None, :, :]
    sigma = jnp.std(prods, axis=-1) / np.sqrt(m)
    K = monte_carlo_dual(name, x, num_features=m, key=key)
    np.testing.assert_allclose(K, jnp.mean(prods, -1), rtol=1e-10, atol=1e-12)
    assert bool(jnp.all(jnp.abs(K - _exact(name, x)) <= 5 * sigma + 1e-12))


def test_hermite_features_approximate_hermite_dual():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((6, 10)) / np.sqrt(10) * rng.uniform(0.5, 1.5, (6, 1)))
    phi = hermite_features("gelu", x, 3, key=jax.random.PRNGKey(0), sketch_dim=2048)
    assert phi.shape == (6, 1 + 3 * 2048)
    np.testing.assert_allclose(phi[:, 0], radial_coefficients("gelu", jnp.linalg.norm(x, axis=1), 3)[:, 0])
    assert _rel(phi @ phi.T, hermite_dual("gelu", x, degree=3)) < 0.05


def test_bad_arguments():
    x = jnp.ones((3, 4))
    with pytest.raises(SketchArgumentError):
        hermite_dual("relu", x, jnp.ones((2, 5)))
    with pytest.raises(SketchArgumentError):
        hermite_dual("relu", x, degree=-1)
    with pytest.raises(SketchArgumentError):
        monte_carlo_dual("relu", x, num_features=0, key=jax.random.PRNGKey(0))
    with pytest.raises(DualactError, match="kernel-only"):
        hermite_dual("normalized_gaussian", x)
    with pytest.raises(DualactError):
        hermite_dual(42, x)
