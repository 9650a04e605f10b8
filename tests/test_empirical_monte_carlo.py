"""Monte Carlo estimates of the NNGP/NTK converge to the closed-form infinite-width kernels as width grows.

Model: one hidden ReLU layer in the NTK parameterization (neural-tangents conventions, papers.md §1.2–1.3 and
pitfall 11): first-layer Gram ``x xᵀ/d``; Dense: ``nngp' = W²·nngp + b²``, ``ntk' = nngp' + W²·ntk``; ReLU:
``nngp -> T``, ``ntk -> ntk·Ṫ`` with the arc-cosine ``T = [√(P − q12²) + (π − θ) q12] / (2π)`` and
``Ṫ = (π − θ) / (2π)``.
"""

import jax
import numpy as np
import pytest

from dualact import empirical

W_STD, B_STD = np.sqrt(2.0), 0.3
N_OUT = 16  # independent readout units: the traced (mean) output axis averages them, reducing MC noise


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def mlp(width):
    def init_fn(key, input_shape):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        d = input_shape[-1]
        params = {
            "w1": jax.random.normal(k1, (d, width)),
            "b1": jax.random.normal(k2, (width,)),
            "w2": jax.random.normal(k3, (width, N_OUT)),
            "b2": jax.random.normal(k4, (N_OUT,)),
        }
        return (input_shape[0], N_OUT), params

    def apply_fn(p, x):
        h = W_STD * x @ p["w1"] / np.sqrt(x.shape[-1]) + B_STD * p["b1"]
        return W_STD * jax.nn.relu(h) @ p["w2"] / np.sqrt(width) + B_STD * p["b2"]

    return init_fn, apply_fn


def relu_kernels(x):
    """Closed-form infinite-width NNGP and NTK of ``mlp`` (arc-cosine kernel of degree 1)."""
    x = np.asarray(x, np.float64)
    nngp1 = W_STD**2 * (x @ x.T) / x.shape[-1] + B_STD**2
    ntk1 = nngp1
    diag = np.diag(nngp1)
    prod = np.outer(diag, diag)
    cos = np.clip(nngp1 / np.sqrt(prod), -1.0, 1.0)
    theta = np.arccos(cos)
    t = (np.sqrt(np.maximum(prod - nngp1**2, 0.0)) + (np.pi - theta) * nngp1) / (2 * np.pi)
    t_dot = (np.pi - theta) / (2 * np.pi)
    nngp2 = W_STD**2 * t + B_STD**2
    ntk2 = nngp2 + W_STD**2 * ntk1 * t_dot
    return nngp2, ntk2


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def x():
    return jax.random.normal(jax.random.PRNGKey(0), (4, 3))


def _errors(x, widths, n_samples):
    nngp_inf, ntk_inf = relu_kernels(x)
    errors = {}
    for width in widths:
        init_fn, apply_fn = mlp(width)
        kfn = empirical.monte_carlo_kernel_fn(
            init_fn,
            apply_fn,
            jax.random.PRNGKey(1),
            n_samples,
            batch_size=16,
            vmap_axes=0,
            implementation="structured",
        )
        est = kfn(x, None)
        errors[width] = (rel_err(est.nngp, nngp_inf), rel_err(est.ntk, ntk_inf))
    return errors


def test_monte_carlo_converges_with_width(x):
    errors = _errors(x, (8, 1024), 64)
    assert errors[1024][0] < 0.08 and errors[1024][1] < 0.015, errors
    assert errors[8][1] > 5 * errors[1024][1], errors  # the NTK's O(1/width) bias shrinks


@pytest.mark.slow
def test_monte_carlo_error_decreases_monotonically(x):
    errors = _errors(x, (8, 64, 512, 4096), 256)
    ntk = [errors[w][1] for w in (8, 64, 512, 4096)]
    assert all(a > b for a, b in zip(ntk, ntk[1:], strict=False)), errors
    assert errors[4096][0] < 0.04 and errors[4096][1] < 0.005, errors


def test_running_estimates_and_get(x):
    init_fn, apply_fn = mlp(32)
    kfn = empirical.monte_carlo_kernel_fn(
        init_fn, apply_fn, jax.random.PRNGKey(2), [4, 8], batch_size=4, implementation="jacobian"
    )
    first, second = list(kfn(x, None, get=("ntk", "nngp")))
    assert first[0].shape == (4, 4) and second[1].shape == (4, 4)
    # the second estimate averages the first four samples and four new ones
    only_new = empirical.monte_carlo_kernel_fn(
        init_fn, apply_fn, jax.random.PRNGKey(2), 8, batch_size=8, implementation="ntk_vector"
    )(x, None, get="ntk")
    np.testing.assert_allclose(second[0], only_new, rtol=1e-10)
    keys = jax.random.split(jax.random.PRNGKey(2), 8)
    manual = np.mean(
        [empirical.ntk_fn(apply_fn, "structured")(x, None, init_fn(k, x.shape)[1]) for k in keys[:4]], axis=0
    )
    np.testing.assert_allclose(first[0], manual, rtol=1e-10)
    with pytest.raises(empirical.EmpiricalKernelError, match="nngp"):
        kfn(x, get="cov1")


def test_monte_carlo_matches_dualact_kernel_fn(x):
    layers = pytest.importorskip("dualact.layers")
    if not all(hasattr(layers, n) for n in ("serial", "Dense", "Activation")):
        pytest.skip("dualact.layers API not available")
    init_fn, apply_fn, kernel_fn = layers.serial(
        layers.Dense(1024, W_std=1.5, b_std=0.1),
        layers.Activation("relu"),
        layers.Dense(N_OUT, W_std=1.5, b_std=0.1),
    )
    nngp, ntk = kernel_fn(x, None, ("nngp", "ntk"))
    est = empirical.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(3), 32, vmap_axes=0)(x)
    assert rel_err(est.ntk, np.asarray(ntk)) < 0.02
    assert rel_err(est.nngp, np.asarray(nngp)) < 0.1
