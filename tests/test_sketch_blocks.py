"""Sketch building blocks: FWHT, SRHT, TensorSRHT, PolySketch, CountSketch/TensorSketch, Gaussian.

Unbiasedness is checked by averaging the sketched inner products over many independent seeds: every entry
of the mean must lie within 5 standard errors (estimated from the same draws) of the exact value.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from dualact.errors import DualactError
from dualact.sketch.countsketch import (
    countsketch_apply,
    countsketch_init,
    tensorsketch,
    tensorsketch_apply,
    tensorsketch_init,
)
from dualact.sketch.gaussian import gaussian_sketch, gaussian_sketch_apply, gaussian_sketch_init
from dualact.sketch.polysketch import PolySketch, polysketch_apply, polysketch_init
from dualact.sketch.srht import SketchArgumentError, fwht, srht, srht_apply, srht_init
from dualact.sketch.tensor_srht import tensor_srht, tensor_srht_apply, tensor_srht_init

SEEDS = 1000


def _points(n, d, seed=0):
    """n unit vectors in R^d with substantial correlations (so ⟨x,y⟩^j is not ~0)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(d)
    x = 0.8 * base + 0.6 * rng.standard_normal((n, d))
    x[1:2] = -x[1:2]
    return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def _assert_unbiased(estimates, exact, z=5.0):
    est = np.asarray(estimates)
    mean = est.mean(0)
    se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
    excess = np.abs(mean - np.asarray(exact)) - (z * se + 1e-12)
    assert excess.max() <= 0, f"bias {np.abs(mean - exact).max():.3g} beyond {z} standard errors"


def _gram(z):
    return jnp.einsum("...nm,...km->...nk", z, z)


# ---- FWHT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [1, 2, 8, 32, 512])
def test_fwht_matches_explicit_hadamard(d):
    v = np.random.default_rng(d).standard_normal((3, 2, d))
    np.testing.assert_allclose(fwht(jnp.asarray(v)), v @ scipy.linalg.hadamard(d).T, atol=1e-11 * d)


def test_fwht_rejects_non_power_of_two():
    with pytest.raises(SketchArgumentError):
        fwht(jnp.ones(6))


# ---- unbiasedness ---------------------------------------------------------------------------------
def test_srht_unbiased_with_padding():
    x = _points(4, 11)  # padded to 16; m = 6 < 16 (distinct rows)
    f = jax.jit(jax.vmap(lambda k: _gram(srht_apply(srht_init(k, 11, 6), x))))
    _assert_unbiased(f(jax.random.split(jax.random.PRNGKey(0), SEEDS)), x @ x.T)


def test_srht_unbiased_oversampled():
    x = _points(3, 5)  # m = 20 > 8 rows: sampled with replacement
    f = jax.jit(jax.vmap(lambda k: _gram(srht_apply(srht_init(k, 5, 20), x))))
    _assert_unbiased(f(jax.random.split(jax.random.PRNGKey(1), SEEDS)), x @ x.T)


def test_tensor_srht_unbiased_for_different_factors():
    x, y = _points(4, 6, 1), _points(4, 9, 2)

    def est(k):
        return _gram(tensor_srht_apply(tensor_srht_init(k, 6, 9, 12), x, y))

    f = jax.jit(jax.vmap(est))
    _assert_unbiased(f(jax.random.split(jax.random.PRNGKey(2), SEEDS)), (x @ x.T) * (y @ y.T))


def test_polysketch_unbiased_all_degrees():
    x = _points(3, 7)
    p = 4
    f = jax.jit(jax.vmap(lambda k: _gram(polysketch_apply(polysketch_init(k, 7, 16, p), x))))
    est = f(jax.random.split(jax.random.PRNGKey(3), SEEDS))
    G = np.asarray(x @ x.T)
    exact = np.stack([G**j for j in range(p + 1)])
    _assert_unbiased(est, exact)
    np.testing.assert_array_equal(est[:, 0], 1.0)  # degree 0 is exact


def test_countsketch_and_tensorsketch_unbiased():
    x = _points(4, 9)
    G = np.asarray(x @ x.T)
    f = jax.jit(jax.vmap(lambda k: _gram(countsketch_apply(countsketch_init(k, 9, 5), x))))
    _assert_unbiased(f(jax.random.split(jax.random.PRNGKey(4), SEEDS)), G)
    g = jax.jit(jax.vmap(lambda k: _gram(tensorsketch_apply(tensorsketch_init(k, 9, 8, 3), x))))
    _assert_unbiased(g(jax.random.split(jax.random.PRNGKey(5), SEEDS)), G**3)


def test_gaussian_sketch_unbiased():
    x = _points(4, 9)
    f = jax.jit(jax.vmap(lambda k: _gram(gaussian_sketch_apply(gaussian_sketch_init(k, 9, 4), x))))
    _assert_unbiased(f(jax.random.split(jax.random.PRNGKey(6), SEEDS)), x @ x.T)


# ---- error decays like m^(-1/2) ---------------------------------------------------------------------
def _slope(make_error, ms, seeds=8):
    errs = [np.mean([make_error(m, jax.random.PRNGKey(100 * m + s)) for s in range(seeds)]) for m in ms]
    return np.polyfit(np.log(ms), np.log(errs), 1)[0]


def _rel(K, E):
    return float(jnp.linalg.norm(K - E) / jnp.linalg.norm(E))


@pytest.mark.parametrize(
    "name",
    ["srht", pytest.param("gaussian", marks=pytest.mark.slow), pytest.param("countsketch", marks=pytest.mark.slow)],
)
def test_linear_sketch_error_slope(name):
    x = _points(40, 1024)
    G = x @ x.T
    fn = {"srht": srht, "gaussian": gaussian_sketch, "countsketch": None}[name]

    def err(m, key):
        if fn is None:
            z = countsketch_apply(countsketch_init(key, 1024, m), x)
        else:
            z = fn(x, m, key=key)
        return _rel(z @ z.T, G)

    assert -0.65 < _slope(err, [16, 32, 64, 128]) < -0.35


@pytest.mark.slow
def test_polysketch_error_slope():
    x = _points(30, 16)
    G = x @ x.T
    apply = jax.jit(polysketch_apply)

    def err(m, key):
        z = apply(polysketch_init(key, 16, m, 3), x)
        return np.mean([_rel(_gram(z[j]), G**j) for j in (2, 3)])

    assert -0.65 < _slope(err, [32, 128, 512, 2048], seeds=6) < -0.35


@pytest.mark.slow
def test_tensor_sketches_error_slope():
    x = _points(30, 64)
    G = x @ x.T

    def err(m, key):
        a = tensor_srht(x, x, m, key=key)
        b = tensorsketch(x, m, 2, key=key)
        return np.sqrt(_rel(a @ a.T, G**2) * _rel(b @ b.T, G**2))

    assert -0.65 < _slope(err, [32, 64, 128, 256]) < -0.35


# ---- structure, jit, shapes -------------------------------------------------------------------------
def test_polysketch_is_a_pytree_and_jits():
    ps = polysketch_init(jax.random.PRNGKey(0), 5, 8, 4)
    leaves, tree = jax.tree_util.tree_flatten(ps)
    again = jax.tree_util.tree_unflatten(tree, leaves)
    assert isinstance(again, PolySketch) and again.degree == 4 and again.num_levels == 2
    x = _points(3, 5)
    np.testing.assert_allclose(jax.jit(polysketch_apply)(ps, x), polysketch_apply(ps, x), atol=1e-12)
    # the sketch itself can be a traced argument of a jitted function, and inputs may have any batch shape
    z = jax.jit(lambda s, v: polysketch_apply(s, v))(ps, jnp.stack([x, -x]))
    assert z.shape == (5, 2, 3, 8)
    np.testing.assert_allclose(z[:, 0], polysketch_apply(ps, x), atol=1e-12)


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 6])
def test_polysketch_shapes_and_degree_zero(degree):
    ps = polysketch_init(jax.random.PRNGKey(degree), 6, 8, degree)
    z = polysketch_apply(ps, _points(2, 6))
    assert z.shape == (degree + 1, 2, 8)
    np.testing.assert_array_equal(z[0], jnp.eye(8)[0][None].repeat(2, 0))
    assert np.isfinite(np.asarray(z)).all()


def test_polysketch_lower_degrees_share_the_tree():
    # the degree-p sketch of a unit vector keeps ⟨Q_j x, Q_j x⟩ close to 1 for every j ≤ p
    x = _points(1, 32)
    z = polysketch_apply(polysketch_init(jax.random.PRNGKey(0), 32, 1024, 4), x)
    np.testing.assert_allclose(_gram(z)[:, 0, 0], 1.0, atol=0.3)


def test_vmap_over_inputs():
    s = srht_init(jax.random.PRNGKey(0), 10, 4)
    x = _points(5, 10)
    np.testing.assert_allclose(jax.vmap(lambda v: srht_apply(s, v))(x), srht_apply(s, x), atol=1e-12)


@pytest.mark.parametrize(
    "call",
    [
        lambda k: srht_init(k, 0, 4),
        lambda k: srht_init(k, 4, -1),
        lambda k: srht_init(k, 4.5, 2),
        lambda k: polysketch_init(k, 4, 8, -1),
        lambda k: tensorsketch_init(k, 4, 8, 0),
        lambda k: tensor_srht_init(k, 3, 0, 4),
        lambda k: srht_apply(srht_init(k, 4, 2), jnp.ones((2, 5))),
        lambda k: polysketch_apply(polysketch_init(k, 4, 8, 2), jnp.ones(3)),
        lambda k: tensorsketch_apply(tensorsketch_init(k, 4, 8, 3), jnp.ones(4), jnp.ones(4)),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(SketchArgumentError) as info:
        call(jax.random.PRNGKey(0))
    assert isinstance(info.value, DualactError) and isinstance(info.value, ValueError)
