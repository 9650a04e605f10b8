"""kernel_fn(x, None) with a one-dimensional-tier activation evaluates each symmetric (n, n) block on one half
(``_folded_symmetric``): it must equal the full evaluation entry by entry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L
from dualact.layers import activation


def _net(act):
    return L.fully_connected(3, 512, L.Activation(act), W_std=1.5, b_std=0.05)


def _unfolded(monkeypatch, fn):
    with monkeypatch.context() as m:
        m.setattr(activation, "_FOLDED_METHODS", frozenset())
        return fn()


@pytest.mark.parametrize("act, n", [("elu", 1), ("elu", 6), ("elu", 7), ("relu_shifted", 6)])
def test_folded_self_kernel_equals_the_full_evaluation(act, n, monkeypatch):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 8)) * np.array([0.1, 1.0, 3.0, 0.5, 2.0, 1.0, 0.7][:n])[:, None]
    if n > 2:
        x[1] = 0.0  # a zero input
    net = _net(act)
    folded = net.kernel_fn(x, None, ("nngp", "ntk"))
    full = _unfolded(monkeypatch, lambda: net.kernel_fn(x, None, ("nngp", "ntk")))
    for name in ("nngp", "ntk"):
        a, b = np.asarray(getattr(folded, name)), np.asarray(getattr(full, name))
        np.testing.assert_array_equal(a, a.T)  # both triangles are read from one evaluation
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15 * np.abs(b).max())


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_fold_mechanism_values_and_gradients(n):
    """_folded_symmetric on a cheap symmetric map: values and reverse-mode gradients equal the direct map."""

    def pointwise(q11, q12, q22, ntk, mask):
        t = jnp.where(mask, q11**2, q12 * jnp.sin(q11 + q22) + q12**3)
        return t, ntk * jnp.cos(q12) * (q11 + q22)

    def sym(a):
        return a + a.T

    def direct(v, c, k):
        return pointwise(v[:, None], c, v[None, :], k, jnp.eye(len(v), dtype=bool))

    def folded(v, c, k):
        return activation._folded_symmetric(pointwise, v[:, None], c, v[None, :], k)

    rng = np.random.default_rng(n)
    v, c, k = jnp.asarray(rng.uniform(1, 2, n)), sym(jnp.asarray(rng.normal(size=(n, n)))), sym(
        jnp.asarray(rng.normal(size=(n, n))))
    for got, want in zip(folded(v, c, k), direct(v, c, k), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)
    w = jnp.asarray(rng.normal(size=(n, n)))

    def loss(fn):
        return lambda v, c, k: sum(jnp.sum(w * o) for o in fn(v, sym(c) / 2, sym(k) / 2))

    for got, want in zip(jax.grad(loss(folded), (0, 1, 2))(v, c, k), jax.grad(loss(direct), (0, 1, 2))(v, c, k),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_folded_self_kernel_gradient_matches_the_full_evaluation(monkeypatch):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    net = L.serial(L.Dense(512, W_std=1.5, b_std=0.05), L.Activation("relu_shifted"), L.Dense(1, W_std=1.5))
    weights = jnp.arange(16.0).reshape(4, 4)

    def grad():
        return jax.grad(lambda x: jnp.sum(net.kernel_fn(x, None, "ntk") * weights))(x)

    np.testing.assert_allclose(grad(), _unfolded(monkeypatch, grad), rtol=1e-10, atol=1e-13)
