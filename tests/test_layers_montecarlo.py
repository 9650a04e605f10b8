"""Monte Carlo agreement: finite networks (apply_fn, width 2048, many seeds) converge to kernel_fn.

The NNGP estimate of one seed is the output Gram matrix averaged over the output units; the NTK estimate is
the empirical NTK J(x1)·J(x2)ᵀ of a one-output network. Agreement is required within the sampling error of
the mean over seeds (4 standard errors) plus an allowance for the O(1/width) finite-width bias.
"""

from __future__ import annotations

import _duals as D
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L

WIDTH = 2048


def empirical_ntk(apply_fn, params, x1, x2):
    """J(x1) J(x2)ᵀ for a network with one output unit (sum over all parameters)."""

    def f(p, x):
        return apply_fn(p, x)[:, 0]

    j1 = jax.jacrev(f)(params, x1)
    j2 = jax.jacrev(f)(params, x2)
    leaves1, leaves2 = jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)
    return sum(
        np.asarray(a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1).T)
        for a, b in zip(leaves1, leaves2, strict=True)
    )


def assert_mc_close(estimates, exact, n_sigma=4.0, bias=0.0):
    """Mean of per-seed estimates within n_sigma standard errors (+ a relative bias allowance) of exact."""
    est = np.asarray(estimates)
    mean = est.mean(0)
    sem = est.std(0, ddof=1) / np.sqrt(len(est))
    tol = n_sigma * sem + bias * np.abs(exact).max()
    bad = np.abs(mean - exact) > tol
    assert not bad.any(), (
        f"{bad.sum()} entries outside sampling error: max |mean − exact| = {np.abs(mean - exact).max():.3g}, "
        f"typical sem = {np.median(sem):.3g}"
    )


def _nngp_estimates(net, x, seeds, dtype=jnp.float32):
    init_fn, apply_fn, _ = net
    xs = jnp.asarray(x, dtype)
    f = jax.jit(apply_fn)
    out = []
    for s in range(seeds):
        params = init_fn(jax.random.PRNGKey(s), xs.shape)[1]
        params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
        y = np.asarray(f(params, xs), np.float64).reshape(xs.shape[0], -1)
        out.append(y @ y.T / y.shape[1])
    return out


def _ntk_estimates(net, x, seeds, dtype=jnp.float32):
    init_fn, apply_fn, _ = net
    xs = jnp.asarray(x, dtype)
    out = []
    for s in range(seeds):
        params = init_fn(jax.random.PRNGKey(1000 + s), xs.shape)[1]
        params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
        out.append(empirical_ntk(apply_fn, params, xs, xs).astype(np.float64))
    return out


@pytest.mark.parametrize("name", ["relu", "erf", "gelu"])
def test_fc_nngp_monte_carlo(name):
    x = np.random.default_rng(0).normal(size=(6, 5))
    x[0] = 0.0
    net = L.fully_connected(2, WIDTH, D.get(name), W_std=1.5, b_std=0.2, out_dim=256)
    exact = np.asarray(net.kernel_fn(jnp.asarray(x), None, "nngp"))
    assert_mc_close(_nngp_estimates(net, x, 12), exact, bias=0.01)


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_fc_ntk_monte_carlo(name):
    x = np.random.default_rng(1).normal(size=(5, 4))
    net = L.fully_connected(2, WIDTH, D.get(name), W_std=1.5, b_std=0.2, out_dim=1)
    exact = np.asarray(net.kernel_fn(jnp.asarray(x), None, "ntk"))
    assert_mc_close(_ntk_estimates(net, x, 6), exact, bias=0.01)


def _small_cnn(width, out_dim, act=None):
    act = act or D.relu()
    return L.serial(
        L.Conv(width, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
        L.Activation(act),
        L.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
        L.Conv(width, (2, 2), strides=(2, 2), padding="VALID", W_std=1.4, b_std=0.1),
        L.Activation(D.erf_()),
        L.Flatten(),
        L.Dense(out_dim, W_std=1.3, b_std=0.1),
    )


def test_cnn_nngp_monte_carlo():
    x = np.random.default_rng(2).normal(size=(3, 4, 5, 2))
    x[1, :2, :2] = 0.0  # a zero patch
    net = _small_cnn(WIDTH, 128)
    exact = np.asarray(net.kernel_fn(jnp.asarray(x), None, "nngp"))
    assert_mc_close(_nngp_estimates(net, x, 12), exact, bias=0.01)


@pytest.mark.slow
def test_cnn_ntk_monte_carlo():
    x = np.random.default_rng(3).normal(size=(3, 4, 4, 2))
    net = _small_cnn(512, 1)
    exact = np.asarray(net.kernel_fn(jnp.asarray(x), None, "ntk"))
    assert_mc_close(_ntk_estimates(net, x, 12), exact, bias=0.03)


@pytest.mark.slow
def test_global_avg_pool_cnn_nngp_monte_carlo():
    x = np.random.default_rng(4).normal(size=(3, 4, 4, 3))
    net = L.serial(
        L.Conv(WIDTH, (3, 3), padding="SAME", W_std=1.5),
        L.Activation(D.gelu()),
        L.Conv(WIDTH, (3, 3), padding="VALID", W_std=1.5, b_std=0.1),
        L.Activation(D.relu()),
        L.GlobalAvgPool(),
        L.Dense(128, W_std=1.2),
    )
    exact = np.asarray(net.kernel_fn(jnp.asarray(x), None, "nngp"))
    assert_mc_close(_nngp_estimates(net, x, 12), exact, bias=0.01)
