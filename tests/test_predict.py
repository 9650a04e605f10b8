"""dualact.predict: GP posterior, kernel ridge, gradient-descent MSE, marginal likelihood, jitter policy."""

from __future__ import annotations

import warnings

import _duals as D
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L
from dualact import predict


def _data(n=12, m=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    x, xt = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y = np.sin(x.sum(1, keepdims=True)) + 0.1 * rng.normal(size=(n, 1))
    return jnp.asarray(x), jnp.asarray(xt), jnp.asarray(y)


def _net(w=1.5, b=0.1, act=None):
    return L.serial(L.Dense(512, w, b), L.Activation(act or D.erf_()), L.Dense(1, w, b))


def test_posterior_matches_numpy():
    x, xt, y = _data()
    net = _net()
    k = np.asarray(net.kernel_fn(x, None, "nngp"))
    ks = np.asarray(net.kernel_fn(xt, x, "nngp"))
    kss = np.asarray(net.kernel_fn(xt, None, "nngp"))
    post = predict.posterior(k, y, ks, kss, ridge=1e-2)
    a = k + 1e-2 * np.eye(len(k))
    np.testing.assert_allclose(post.mean, ks @ np.linalg.solve(a, np.asarray(y)), rtol=1e-10)
    np.testing.assert_allclose(post.covariance, kss - ks @ np.linalg.solve(a, ks.T), rtol=1e-8, atol=1e-12)
    assert np.linalg.eigvalsh(np.asarray(post.covariance)).min() > -1e-10
    np.testing.assert_allclose(predict.kernel_ridge(k, y[:, 0], ks, ridge=1e-2), post.mean[:, 0], rtol=1e-12)


def test_gradient_descent_mse_limits():
    x, xt, y = _data()
    net = _net()
    k = np.asarray(net.kernel_fn(x, None, "ntk"))
    ks = np.asarray(net.kernel_fn(xt, x, "ntk"))
    # t = 0: untrained ensemble predicts 0; t → ∞: kernel ridge; training residual decays exponentially
    assert np.abs(np.asarray(predict.gradient_descent_mse(k, y, ks, t=0.0))).max() < 1e-12
    inf = predict.gradient_descent_mse(k, y, ks, t=None, ridge=1e-6)
    late = predict.gradient_descent_mse(k, y, ks, t=1e9, ridge=1e-6)
    np.testing.assert_allclose(late, inf, rtol=1e-6, atol=1e-8)
    t = 3.0
    f_train = np.asarray(predict.gradient_descent_mse(k, y, None, t=t, learning_rate=2.0))
    expm = jax.scipy.linalg.expm(-2.0 * t * jnp.asarray(k) / y.size)
    np.testing.assert_allclose(f_train, np.asarray(y) - np.asarray(expm @ y), rtol=1e-8, atol=1e-10)


def test_gradient_descent_mse_ensemble_nngp_is_gp_posterior_and_ntk_cov_is_psd():
    x, xt, y = _data()
    net = _net()
    pf = predict.gradient_descent_mse_ensemble(net.kernel_fn, x, y, ridge=1e-4)
    out = pf(t=None, x_test=xt, get=("nngp", "ntk"), compute_cov=True)
    k = net.kernel_fn(x, None, "nngp")
    post = predict.posterior(k, y, net.kernel_fn(xt, x, "nngp"), net.kernel_fn(xt, None, "nngp"), ridge=1e-4)
    np.testing.assert_allclose(out.nngp.mean, post.mean, rtol=1e-9)
    np.testing.assert_allclose(out.nngp.covariance, post.covariance, rtol=1e-7, atol=1e-10)
    cov = np.asarray(out.ntk.covariance)
    assert np.linalg.eigvalsh(cov).min() > -1e-8 * np.abs(cov).max()
    mid = pf(t=5.0, x_test=xt, get="ntk")
    assert mid.shape == (5, 1)
    np.testing.assert_allclose(pf(t=1e10, x_test=xt, get="ntk"), out.ntk.mean, rtol=1e-5, atol=1e-7)


def test_finite_time_ntk_prediction_matches_wide_network_training():
    """An ensemble of finite-width networks trained by gradient descent approaches the NTK prediction."""
    x, xt, y = _data(n=6, m=3, d=2)
    width, lr, t = 1024, 1.0, 20.0
    net = L.serial(L.Dense(width, 1.5, 0.1), L.Activation(D.erf_()), L.Dense(1, 1.5, 0.1))
    init_fn, apply_fn, kernel_fn = net
    pf = predict.gradient_descent_mse_ensemble(kernel_fn, x, y, learning_rate=lr)
    expect = np.asarray(pf(t=t, x_test=xt, get="ntk"))
    steps = 400
    dt = t / steps

    def loss(p):
        return 0.5 * jnp.mean((apply_fn(p, x) - y) ** 2)

    @jax.jit
    def train(p):
        def body(_, p):
            g = jax.grad(loss)(p)
            return jax.tree_util.tree_map(lambda a, b: a - lr * dt * b, p, g)

        return jax.lax.fori_loop(0, steps, body, p)

    preds = []
    for s in range(12):
        p0 = init_fn(jax.random.PRNGKey(s), x.shape)[1]
        p = train(p0)
        preds.append(np.asarray(apply_fn(p, xt) - apply_fn(p0, xt)))  # remove the random initial function
    preds = np.array(preds)
    err = np.abs(preds.mean(0) - expect)
    assert (err < 4 * preds.std(0) / np.sqrt(len(preds)) + 0.05 * np.abs(expect).max()).all()


def test_log_marginal_likelihood_value_and_gradients():
    x, _, y = _data(n=10)
    leaky = D.leaky_relu()

    def lml(w, b, a, ridge):
        net = L.serial(L.Dense(1, w, b), L.Activation(leaky, alpha=a), L.Dense(1, w, b))
        return predict.log_marginal_likelihood(net.kernel_fn(x, None, "nngp"), y, ridge=ridge)

    w, b, a, r = 1.4, 0.2, 0.1, 1e-2
    k = np.asarray(_net(w, b, D.abrelu(a, 1.0)).kernel_fn(x, None, "nngp")) + r * np.eye(10)
    yy = np.asarray(y)[:, 0]
    expect = -0.5 * yy @ np.linalg.solve(k, yy) - 0.5 * np.linalg.slogdet(k)[1] - 5 * np.log(2 * np.pi)
    assert float(lml(w, b, a, r)) == pytest.approx(expect, rel=1e-10)
    g = jax.jit(jax.grad(lml, argnums=(0, 1, 2, 3)))(w, b, a, r)
    eps = 1e-6
    fd = [
        (lml(w + eps, b, a, r) - lml(w - eps, b, a, r)) / (2 * eps),
        (lml(w, b + eps, a, r) - lml(w, b - eps, a, r)) / (2 * eps),
        (lml(w, b, a + eps, r) - lml(w, b, a - eps, r)) / (2 * eps),
        (lml(w, b, a, r + eps) - lml(w, b, a, r - eps)) / (2 * eps),
    ]
    np.testing.assert_allclose(np.array(g), np.array(fd), rtol=1e-5)
    # a few steps of gradient ascent on W_std increase the evidence
    val = jax.jit(jax.value_and_grad(lambda w: lml(w, b, a, r)))
    v0, gw = val(w)
    v1, _ = val(w + 0.05 * np.sign(gw))
    assert v1 > v0


def test_ill_conditioned_kernel_jitter_or_error():
    x = jnp.ones((4, 3))  # four identical inputs: rank-one kernel
    k = _net().kernel_fn(x, None, "nngp")
    y = jnp.arange(4.0)
    with pytest.warns(predict.IllConditionedKernelWarning, match="jitter"):
        out = predict.posterior(k, y, ridge=0.0)
    assert np.isfinite(np.asarray(out.mean)).all()
    with pytest.raises(predict.IllConditionedKernelError, match="ridge"):
        predict.posterior(k, y, ridge=0.0, jitter=None)
    with pytest.raises(predict.IllConditionedKernelError):
        predict.log_marginal_likelihood(-jnp.eye(3), jnp.ones(3), jitter="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict.posterior(k, y, ridge=1e-3)  # a sufficient ridge: no warning
    # traced: the same ladder inside jit, no NaN
    with pytest.warns(predict.IllConditionedKernelWarning):
        m = jax.jit(lambda kk: predict.posterior(kk, y).mean)(k)
        jax.block_until_ready(m)
    assert np.isfinite(np.asarray(m)).all()


def test_shapes_and_validation():
    with pytest.raises(ValueError, match="square"):
        predict.posterior(jnp.ones((3, 2)), jnp.ones(3))
    post = predict.posterior(jnp.eye(3) * 2, jnp.ones((3, 2)))
    assert post.mean.shape == (3, 2) and post.covariance is None
