"""Identical inputs are the same random variable: ``kernel_fn(x, x)`` equals ``kernel_fn(x, None)``.

References: numpy's exact row comparison for :func:`identical_rows`; for the kernels, the diagonal of
``kernel_fn(x, None)`` (the activations' exact diagonal formulas) and float64. Before, the cross covariance of
two equal inputs was a few ulp away from their variance in float32, which a kink's √(1 − ρ) amplified: after
100 layers ``kernel_fn(x, x)`` was 0.6% (ReLU) to 46% (tanh) off, and GeLU and Gabor gave NaN (also in
float64, at the variances of W_std = 2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L
from dualact.layers.identical_inputs import identical_rows


def _exact(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.array([[np.array_equal(r, s) for s in b] for r in a])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_identical_rows_matches_exact_comparison(dtype):
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(9, 5)).astype(dtype)
    x1[3] = x1[0]
    x1[4] = 0.0
    x2 = np.concatenate([x1[[0, 4, 7]], rng.normal(size=(4, 5)).astype(dtype)])
    x2[1] = -0.0  # −0 is the same input as +0
    near = x1[7].copy()
    near[2] = np.nextafter(near[2], dtype(np.inf))  # one ulp apart
    flips = x1[5].copy()
    flips[[0, 1]] *= -1  # two sign bits flipped: a plain linear hash of the bits would collide
    x2 = np.concatenate([x2, near[None], flips[None]])
    got = np.asarray(identical_rows(jnp.asarray(x1), jnp.asarray(x2)))
    want = _exact(x1, x2)
    want[4, 1] = True
    np.testing.assert_array_equal(got, want)
    assert got.sum() == 4
    images = rng.normal(size=(4, 3, 3, 2)).astype(dtype)
    images[2] = images[0]
    np.testing.assert_array_equal(np.asarray(identical_rows(images, images)), _exact(images.reshape(4, -1),
                                                                                      images.reshape(4, -1)))


def _deep(act, depth, w_std):
    layers = []
    for _ in range(depth):
        layers += [L.Dense(64, W_std=w_std, b_std=0.05), L.Activation(act)]
    return L.serial(*layers, L.Dense(1, W_std=w_std, b_std=0.05))


@pytest.mark.parametrize("act", ["gelu", "gabor", "tanh", "relu"])
def test_deep_kernel_of_x_with_itself_equals_kernel_of_x_alone(act):
    """Depth 100 in float32 (W_std = 1.5 and 2, variances to 1e30) and float64 (W_std = 2): finite, the same
    as ``kernel_fn(x, None)``, whose diagonal matches float64 to 1e-4."""
    x = np.random.default_rng(1).normal(size=(5, 8))
    for w_std, dtypes in ((1.5, (np.float32,)), (2.0, (np.float32, np.float64))):
        net = _deep(act, 100, w_std)
        ref = net.kernel_fn(x, None, ("nngp", "ntk"))
        for dtype in dtypes:
            xs = jnp.asarray(x, dtype)
            alone = net.kernel_fn(xs, None, ("nngp", "ntk"))
            both = net.kernel_fn(xs, xs, ("nngp", "ntk"))
            for a, b, r in ((alone.nngp, both.nngp, ref.nngp), (alone.ntk, both.ntk, ref.ntk)):
                a, b, r = (np.asarray(v, np.float64) for v in (a, b, r))
                assert np.all(np.isfinite(b)), (act, w_std, dtype)
                np.testing.assert_allclose(np.diag(b), np.diag(a), rtol=1e-6)
                np.testing.assert_allclose(np.diag(a), np.diag(r), rtol=1e-4)


def test_duplicates_within_and_across_batches_get_the_variance():
    """A row repeated inside x (folded and tiled evaluation of ``kernel_fn(x, None)``) and a row of x2 equal to
    a row of x1: their entries equal the variance exactly, in float32 too."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 6)).astype(np.float32)
    x[5] = x[1]
    x2 = np.concatenate([rng.normal(size=(2, 6)), x[[3]]]).astype(np.float32)
    net = _deep("erf", 10, 2.0)
    for options in ({}, {"block_size": 3}):
        k = net.kernel_fn(x, None, ("nngp", "ntk"), **options)
        for m in (np.asarray(k.nngp), np.asarray(k.ntk)):
            assert m[1, 5] == m[5, 1] == m[1, 1] == m[5, 5]
        kx = net.kernel_fn(x, x2, ("nngp", "ntk"), **options)
        for m, d in ((kx.nngp, k.nngp), (kx.ntk, k.ntk)):
            assert float(m[3, 2]) == pytest.approx(float(d[3, 3]), rel=1e-6)


def test_identical_images_in_a_cnn():
    """Conv + pooling, float32: an image of x2 equal to one of x1 gives that image's variance (as
    ``kernel_fn(x, None)``, up to the pooling's summation order); before, the tanh NTK was 1.7e-5 off."""
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=(3, 5, 5, 2)).astype(np.float32)
    x2 = np.concatenate([rng.normal(size=(1, 5, 5, 2)).astype(np.float32), x1[[2]]])
    layers = []
    for _ in range(8):
        layers += [L.Conv(8, (3, 3), padding="SAME", W_std=3.0, b_std=0.05), L.Activation("tanh")]
    net = L.serial(*layers, L.GlobalAvgPool(), L.Dense(1, W_std=2.0))
    alone = net.kernel_fn(x1, None, ("nngp", "ntk"))
    cross = net.kernel_fn(x1, x2, ("nngp", "ntk"))
    for a, c in ((alone.nngp, cross.nngp), (alone.ntk, cross.ntk)):
        assert float(c[2, 1]) == pytest.approx(float(a[2, 2]), rel=2e-6)


@pytest.mark.parametrize("act", ["elu", "tanh"])
def test_near_duplicates_stay_within_cauchy_schwarz(act):
    """Inputs 1e-6 apart through 100 layers (σ_w = 1): their entries stay next to the variances. Before the
    covariance was clipped to ±√q11·√q22 before each activation, rounding put ELU's ρ at 1 + 6e-11 after 60
    layers, 3e4 after 100, and then NaN (float64)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8))
    x2 = x + 1e-6 * rng.normal(size=(3, 8))
    net = _deep(act, 100, 1.0)
    for dtype, tol in ((np.float64, 1e-8),) if act == "elu" else ((np.float64, 1e-8), (np.float32, 1e-4)):
        cross = net.kernel_fn(jnp.asarray(x, dtype), jnp.asarray(x2, dtype), ("nngp", "ntk"))
        alone = net.kernel_fn(jnp.asarray(x, dtype), None, ("nngp", "ntk"))
        for c, a in ((cross.nngp, alone.nngp), (cross.ntk, alone.ntk)):
            c, a = np.asarray(c, np.float64), np.asarray(a, np.float64)
            assert np.all(np.isfinite(c)), (act, dtype)
            np.testing.assert_allclose(np.diag(c), np.diag(a), rtol=tol)


@pytest.mark.parametrize("act", ["erf", "tanh"])
def test_gradient_at_a_duplicate_sees_both_inputs(act):
    """∂K(x1ᵢ, x2ⱼ)/∂x2ⱼ where x2ⱼ = x1ᵢ, against central finite differences (float64): the coincident entry
    carries the gradient of both variances (diag(q11) alone would give ∂/∂x2ⱼ = 0)."""
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(3, 5))
    x2 = np.concatenate([x1[[1]], rng.normal(size=(2, 5))])
    net = L.serial(L.Dense(16, W_std=1.5, b_std=0.1), L.Activation(act), L.Dense(16, W_std=1.5, b_std=0.1),
                   L.Activation(act), L.Dense(1))
    for get in ("nngp", "ntk"):
        def entry(b, get=get):
            return net.kernel_fn(x1, b, get)[1, 0]

        grad = np.asarray(jax.grad(entry)(jnp.asarray(x2)))[0]
        assert np.max(np.abs(grad)) > 1e-3
        h = 1e-6
        fd = [(float(entry(x2 + h * e)) - float(entry(x2 - h * e))) / (2 * h)
              for e in np.eye(x2.size).reshape(-1, *x2.shape)[:5]]
        np.testing.assert_allclose(grad, fd, atol=1e-7)
