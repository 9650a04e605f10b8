"""The three empirical-NTK implementations agree to 1e-10 (float64) on the issue's model zoo.

FCN, CNN with pooling, residual net, embedding + dense, Flax linen / nnx and Equinox models; plus the Jacobian
reference without vmap as ground truth (itself checked against a brute-force reference in
test_empirical_axes).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import empirical

TOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _normal(key, shape, scale=1.0):
    return scale * jax.random.normal(key, shape, jnp.float64)


def check_agreement(f, params, x1, x2, trace_axes=(), cases=None, **kwargs):
    """All implementations (and both vmap modes) against Jacobian contraction without vmap."""
    ref = empirical.ntk_fn(f, "jacobian", trace_axes=trace_axes)(x1, x2, params, **kwargs)
    scale = max(1.0, float(jnp.max(jnp.abs(ref))))
    cases = cases or [("ntk_vector", 0), ("structured", 0)]
    for impl, vmap_axes in cases:
        got = empirical.ntk_fn(f, impl, trace_axes=trace_axes, vmap_axes=vmap_axes)(x1, x2, params, **kwargs)
        err = float(jnp.max(jnp.abs(got - ref)))
        assert err <= TOL * scale, f"{impl} (vmap_axes={vmap_axes}) differs by {err:.3e} (scale {scale:.2e})"
    return ref


def structure_counts(f, params, x1, vmap_axes=0):
    """Which rules the structured interpreter applied (counted while tracing)."""
    from dualact.empirical._axes import normalize_vmap_axes
    from dualact.empirical.structured import structured_kernel

    stats = {}
    jax.eval_shape(
        lambda: structured_kernel(f, x1, None, params, {}, (-1,), (), normalize_vmap_axes(vmap_axes), stats)
    )
    return stats.get("rules", {})


# ----------------------------------------------------------------------------------------------------- models
def fcn(p, x):
    h = x
    for i, (w, b) in enumerate(p):
        h = h @ w / np.sqrt(w.shape[0]) + b
        if i < len(p) - 1:
            h = jax.nn.relu(h) if i % 2 == 0 else jax.scipy.special.erf(h)
    return h


def fcn_setup(key, widths=(5, 16, 16, 3)):
    ks = jax.random.split(key, 2 * len(widths))
    return [
        (_normal(ks[2 * i], (a, b)), _normal(ks[2 * i + 1], (b,), 0.1))
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=False))
    ]


DN = ("NHWC", "HWIO", "NHWC")


def cnn(p, x):
    h = jax.lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=DN) + p["b1"]
    h = jax.nn.relu(h)
    h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4  # avg pool
    h = jax.lax.conv_general_dilated(
        h, p["k2"], (2, 1), ((1, 0), (1, 1)), rhs_dilation=(1, 2), dimension_numbers=DN
    )
    h = jax.lax.reduce_window(jnp.tanh(h), -jnp.inf, jax.lax.max, (1, 1, 2, 1), (1, 1, 1, 1), "VALID")
    return h.reshape(h.shape[0], -1) @ p["w"] + p["b"]


def cnn_setup(key):
    ks = jax.random.split(key, 8)
    params = {
        "k1": _normal(ks[0], (3, 3, 2, 4), 0.4),
        "b1": _normal(ks[1], (4,), 0.1),
        "k2": _normal(ks[2], (2, 2, 4, 3), 0.4),
        "w": _normal(ks[3], (12, 3), 0.3),
        "b": _normal(ks[4], (3,)),
    }
    return params, _normal(ks[5], (3, 6, 6, 2)), _normal(ks[6], (2, 6, 6, 2))


def resnet(p, x):
    h = x @ p["w_in"]
    for blk in p["blocks"]:
        z = (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + 1e-3)  # layer norm
        z = jax.nn.gelu(z * blk["gamma"] + blk["beta"]) @ blk["w1"]
        h = h + blk["alpha"] * (jax.nn.softplus(z) @ blk["w2"])
    return h @ p["w_out"]


def resnet_setup(key, d=6):
    ks = jax.random.split(key, 12)
    blocks = [
        {
            "gamma": 1 + _normal(ks[4 * i], (d,), 0.1),
            "beta": _normal(ks[4 * i + 1], (d,), 0.1),
            "w1": _normal(ks[4 * i + 2], (d, 8), 0.4),
            "w2": _normal(ks[4 * i + 3], (8, d), 0.4),
            "alpha": jnp.array(0.5 + i),
        }
        for i in range(2)
    ]
    params = {"w_in": _normal(ks[8], (4, d)), "blocks": blocks, "w_out": _normal(ks[9], (d, 2))}
    return params, _normal(ks[10], (4, 4)), _normal(ks[11], (3, 4))


def embed_model(p, tokens):
    e = p["emb"][tokens]  # gather: generic rule
    h = jnp.tanh(e @ p["w"] + p["b"])
    return h.mean(axis=1) @ p["out"]


def embed_setup(key, vocab=13):
    ks = jax.random.split(key, 6)
    params = {
        "emb": _normal(ks[0], (vocab, 4)),
        "w": _normal(ks[1], (4, 5)),
        "b": _normal(ks[2], (5,)),
        "out": _normal(ks[3], (5, 3)),
    }
    return params, jax.random.randint(ks[4], (4, 6), 0, vocab), jax.random.randint(ks[5], (3, 6), 0, vocab)


# ------------------------------------------------------------------------------------------------------ tests
def test_fcn():
    params = fcn_setup(jax.random.PRNGKey(0))
    x1, x2 = _normal(jax.random.PRNGKey(1), (4, 5)), _normal(jax.random.PRNGKey(2), (3, 5))
    check_agreement(
        fcn,
        params,
        x1,
        x2,
        cases=[("jacobian", 0), ("ntk_vector", 0), ("structured", 0), ("structured", None)],
    )
    check_agreement(fcn, params, x1, None, trace_axes=(-1,), cases=[("ntk_vector", None), ("structured", 0)])
    counts = structure_counts(fcn, params, x1)
    assert counts[("dot_general", "structured")] == 3
    assert not [k for k in counts if k[1] == "dense"], counts


def test_cnn_with_pooling():
    params, x1, x2 = cnn_setup(jax.random.PRNGKey(3))
    check_agreement(cnn, params, x1, x2, cases=[("ntk_vector", 0), ("structured", 0), ("structured", None)])
    counts = structure_counts(cnn, params, x1)
    assert counts[("conv_general_dilated", "structured")] == 2
    assert not [k for k in counts if k[1] == "dense"], counts


def test_residual_net():
    params, x1, x2 = resnet_setup(jax.random.PRNGKey(4))
    check_agreement(resnet, params, x1, x2)


def test_embedding_dense_uses_generic_rule_for_gather():
    params, x1, x2 = embed_setup(jax.random.PRNGKey(5))
    check_agreement(embed_model, params, x1, x2)
    counts = structure_counts(embed_model, params, x1)
    assert counts[("gather", "dense")] == 1 and counts[("dot_general", "structured")] == 2


def test_flax_linen_cnn():
    nn = pytest.importorskip("flax.linen")

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(3, (3, 3), padding="SAME", param_dtype=jnp.float64)(x)
            x = nn.avg_pool(nn.relu(x), (2, 2), (2, 2))
            x = nn.Dense(4, param_dtype=jnp.float64)(x.reshape((x.shape[0], -1)))
            return nn.Dense(2, param_dtype=jnp.float64)(nn.tanh(x))

    init_fn, apply_fn = empirical.from_flax_linen(CNN())
    x1, x2 = _normal(jax.random.PRNGKey(6), (3, 4, 4, 2)), _normal(jax.random.PRNGKey(7), (2, 4, 4, 2))
    out_shape, params = init_fn(jax.random.PRNGKey(0), x1.shape)
    assert out_shape == (3, 2)
    check_agreement(apply_fn, params, x1, x2)
    counts = structure_counts(apply_fn, params, x1)
    assert not [k for k in counts if k[1] == "dense"], counts


def test_flax_nnx_mlp():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(5, 7, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(7, 2, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(nnx.gelu(self.l1(x)))

    params, apply_fn = empirical.from_flax_nnx(MLP(nnx.Rngs(0)))
    x1, x2 = _normal(jax.random.PRNGKey(8), (4, 5)), _normal(jax.random.PRNGKey(9), (3, 5))
    check_agreement(apply_fn, params, x1, x2)


def test_equinox_mlp_and_conv():
    eqx = pytest.importorskip("equinox")
    k = jax.random.split(jax.random.PRNGKey(10), 4)

    class Net(eqx.Module):
        conv: eqx.nn.Conv2d
        mlp: eqx.nn.MLP

        def __call__(self, x):  # one example (C, H, W)
            h = jax.nn.relu(self.conv(x))
            return self.mlp(h.reshape(-1))

    model = Net(eqx.nn.Conv2d(2, 3, 3, key=k[0]), eqx.nn.MLP(12, 2, 6, 2, key=k[1]))
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    params, apply_fn = empirical.from_equinox(model)
    x1, x2 = _normal(k[2], (3, 2, 4, 4)), _normal(k[3], (2, 2, 4, 4))
    check_agreement(apply_fn, params, x1, x2)
    counts = structure_counts(apply_fn, params, x1)
    assert counts[("conv_general_dilated", "structured")] == 1
    assert not [k for k in counts if k[1] == "dense"], counts


def test_dualact_layers_apply_fn():
    layers = pytest.importorskip("dualact.layers")
    if not all(hasattr(layers, n) for n in ("serial", "Conv", "Dense", "Activation", "Flatten")):
        pytest.skip("dualact.layers API not available")
    init_fn, apply_fn, _ = layers.serial(
        layers.Conv(4, (3, 3), padding="SAME", W_std=1.5, b_std=0.1),
        layers.Activation("relu"),
        layers.Flatten(),
        layers.Dense(3, W_std=1.5, b_std=0.05),
    )
    x1, x2 = _normal(jax.random.PRNGKey(11), (3, 5, 5, 2)), _normal(jax.random.PRNGKey(12), (2, 5, 5, 2))
    _, params = init_fn(jax.random.PRNGKey(0), x1.shape)
    check_agreement(apply_fn, params, x1, x2)
