"""Conv / AvgPool / GlobalAvgPool / Flatten on the full spatial covariance, against direct definitions."""

from __future__ import annotations

import itertools

import _duals as D
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L


def _imgs(n, h, w, c, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, c))


def _patches(x, k, s, padding):
    """x (n, H, W, C) -> (n, H', W', k*k*C) zero-padded patches, as the finite convolution sees them."""
    n, H, W, C = x.shape
    if padding == "SAME":
        oh, ow = -(-H // s), -(-W // s)
        ph, pw = max((oh - 1) * s + k - H, 0), max((ow - 1) * s + k - W, 0)
        x = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    else:
        oh, ow = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros((n, oh, ow, k * k * C))
    for i, j in itertools.product(range(oh), range(ow)):
        out[:, i, j] = x[:, i * s : i * s + k, j * s : j * s + k].reshape(n, -1)
    return out


@pytest.mark.parametrize("padding,stride", [("SAME", 1), ("VALID", 1), ("SAME", 2), ("VALID", 2)])
def test_conv_on_input_kernel_is_patch_inner_product(padding, stride):
    x, y = _imgs(2, 5, 6, 3), _imgs(3, 5, 6, 3, seed=1)
    W, b, k = 1.7, 0.3, 3
    conv = L.Conv(4, (k, k), strides=(stride, stride), padding=padding, W_std=W, b_std=b)
    got = np.asarray(conv.kernel_fn(jnp.asarray(x), jnp.asarray(y), "nngp"))
    px, py = _patches(x, k, stride, padding), _patches(y, k, stride, padding)
    expect = W**2 * np.einsum("iabf,jcdf->ijabcd", px, py) / (k * k * 3) + b**2
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-14 * np.abs(expect).max())
    assert conv.init_fn(jax.random.PRNGKey(0), x.shape)[0] == (2,) + got.shape[2:4] + (4,)


def test_conv_then_activation_matches_monte_carlo_of_apply_fn_exactly_linear():
    """For a linear network the expected empirical covariance equals the kernel exactly (Gaussian weights)."""
    x = jnp.asarray(_imgs(2, 4, 4, 2))
    net = L.serial(
        L.Conv(4096, (3, 3), padding="SAME", W_std=1.3, b_std=0.2),
        L.Conv(1024, (2, 2), strides=(2, 2), W_std=1.1),
    )
    exact = np.asarray(net.kernel_fn(x, None, "nngp"))
    init_fn, apply_fn, _ = net
    y = np.asarray(apply_fn(init_fn(jax.random.PRNGKey(0), x.shape)[1], x))  # (2, 2, 2, 1024)
    emp = np.einsum("iabc,jdec->ijabde", y, y) / y.shape[-1]
    np.testing.assert_allclose(emp, exact, atol=0.08 * np.abs(exact).max())


@pytest.mark.parametrize(
    "padding,window,stride,edges",
    [("VALID", 2, 2, False), ("SAME", 3, 1, False), ("SAME", 3, 2, True), ("VALID", 3, 1, False)],
)
def test_avg_pool_kernel_is_pooled_covariance(padding, window, stride, edges):
    x = _imgs(2, 5, 6, 3)
    pool = L.AvgPool((window, window), strides=(stride, stride), padding=padding, normalize_edges=edges)
    got = np.asarray(pool.kernel_fn(jnp.asarray(x), None, "nngp"))
    # pooling is linear in x: pool the features (with apply_fn), then take the input kernel
    feats = np.asarray(pool.apply_fn((), jnp.asarray(x)))
    expect = np.einsum("iabc,jdec->ijabde", feats, feats) / 3
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-14)


def test_global_avg_pool_and_flatten():
    x = _imgs(3, 4, 5, 2)
    g = np.asarray(L.GlobalAvgPool().kernel_fn(jnp.asarray(x), None, "nngp"))
    m = x.mean(axis=(1, 2))
    np.testing.assert_allclose(g, m @ m.T / 2, rtol=1e-12)
    f = np.asarray(L.Flatten().kernel_fn(jnp.asarray(x), None, "nngp"))
    flat = x.reshape(3, -1)
    np.testing.assert_allclose(f, flat @ flat.T / flat.shape[1], rtol=1e-12)
    k = L.serial(L.Conv(3, (2, 2)), L.Flatten()).kernel_fn(jnp.asarray(x))
    assert k.nngp.shape == (3, 3) and k.cov1.shape == (3,) and k.shape1 == (3, 12 * 3)


def test_cnn_self_covariances_and_diagonal():
    """cov1 of each input equals the (i, i) block of the kernel, and its pixel diagonal uses diag formulas."""
    x = jnp.asarray(_imgs(3, 4, 4, 2))
    net = L.serial(
        L.Conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
        L.Activation(D.relu()),
        L.AvgPool((2, 2), strides=(1, 1), padding="SAME"),
        L.Conv(8, (3, 3), W_std=1.3),
        L.Activation(D.gelu()),
    )
    k = net.kernel_fn(x)
    for i in range(3):
        np.testing.assert_allclose(k.nngp[i, i], k.cov1[i], rtol=1e-13)
    kx = net.kernel_fn(x, x)
    np.testing.assert_allclose(kx.nngp, k.nngp, rtol=1e-7)  # only the ρ = 1 entries differ (rounding)


def test_zero_image_patch_and_zero_image():
    x = _imgs(3, 5, 5, 2)
    x[0] = 0.0
    x[1, 1:4, 1:4] = 0.0
    for act in (D.relu(), D.erf_(), D.gelu(), D.abs_()):
        net = L.serial(
            L.Conv(8, (3, 3), padding="SAME", W_std=1.5),
            L.Activation(act),
            L.Conv(8, (3, 3), padding="SAME", W_std=1.5),
            L.Activation(act),
            L.GlobalAvgPool(),
            L.Dense(1),
        )
        k = net.kernel_fn(jnp.asarray(x), None, ("nngp", "ntk"))
        assert np.isfinite(np.asarray(k.nngp)).all() and np.isfinite(np.asarray(k.ntk)).all()


def test_conv_standard_parameterization_ntk():
    x = jnp.asarray(_imgs(2, 4, 4, 3))
    conv = L.Conv(5, (3, 3), padding="SAME", W_std=1.2, b_std=0.4, parameterization="standard")
    k = conv.kernel_fn(x, None, ("nngp", "ntk"))
    unscaled = np.asarray(L.Conv(5, (3, 3), padding="SAME").kernel_fn(x, None, "nngp"))
    np.testing.assert_allclose(k.ntk, 27 * unscaled + 1.0, rtol=1e-12)
    np.testing.assert_allclose(k.nngp, 1.44 * unscaled + 0.16, rtol=1e-12)


def test_myrtle_architecture_shapes():
    net = L.myrtle(5, act=D.relu(), width=16)
    names = [type(layer).__name__ for layer in net.layers]
    assert names.count("Conv") == 4 and names.count("AvgPool") == 5 and names[-2:] == ["Flatten", "Dense"]
    out_shape, _ = net.init_fn(jax.random.PRNGKey(0), (2, 32, 32, 3))
    assert out_shape == (2, 10)
    with pytest.raises(ValueError, match="depth"):
        L.myrtle(6)


def test_cnn_kernel_is_differentiable_in_hyperparameters():
    x = jnp.asarray(_imgs(3, 4, 4, 2))
    relu = D.relu()

    def f(w):
        net = L.serial(
            L.Conv(4, (3, 3), padding="SAME", W_std=w),
            L.Activation(relu),
            L.Conv(4, (3, 3), W_std=w),
            L.Activation(relu),
            L.GlobalAvgPool(),
            L.Dense(1, W_std=w),
        )
        return jnp.sum(net.kernel_fn(x, None, "ntk"))

    g = jax.grad(f)(1.3)
    fd = (f(1.3 + 1e-6) - f(1.3 - 1e-6)) / 2e-6
    assert float(g) == pytest.approx(float(fd), rel=1e-6)
    assert float(jax.jit(f)(1.3)) == pytest.approx(float(f(1.3)), rel=1e-12)
