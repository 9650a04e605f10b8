"""Structured derivatives on awkward programs: call-like equations, parameter-only chains, fallbacks.

Each model is compared with Jacobian contraction (float64, 1e-10); where it matters, the rules the interpreter
applied are checked too (structured, not the generic dense rule).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import empirical
from dualact.empirical._axes import normalize_vmap_axes
from dualact.empirical.structured import structured_kernel


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _n(key, shape, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float64)


def agree(f, params, x1, x2=None, vmap_axes=0, trace_axes=(), tol=1e-10):
    ref = empirical.ntk_fn(f, "jacobian", trace_axes=trace_axes)(x1, x2, params)
    got = empirical.ntk_fn(f, "structured", trace_axes=trace_axes, vmap_axes=vmap_axes)(x1, x2, params)
    scale = max(1.0, float(jnp.max(jnp.abs(ref))))
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale)
    return got


def rules_used(f, params, x1, vmap_axes=0):
    stats = {}
    jax.eval_shape(
        lambda: structured_kernel(f, x1, None, params, {}, (-1,), (), normalize_vmap_axes(vmap_axes), stats)
    )
    return stats.get("rules", {})


def dense_rules(counts):
    return sorted(k[0] for k in counts if k[1] == "dense")


X1, X2 = _n(0, (3, 4)), _n(1, (2, 4))


def test_call_like_equations_are_inlined():
    @jax.custom_jvp
    def scaled(w, s):
        return w * s

    scaled.defjvp(lambda p, t: (scaled(*p), t[0] * p[1] + p[0] * t[1]))

    @jax.custom_vjp
    def shifted(b):
        return b + 1.0

    shifted.defvjp(lambda b: (b + 1.0, None), lambda _, g: (g,))

    @jax.jit
    def layer(w, b, h):
        return jax.nn.relu(h @ w + b)  # relu's custom_jvp acts on activations: kept as is

    def f(p, x):
        h = layer(p["w1"], shifted(p["b1"]), x)
        h = jax.checkpoint(lambda h, w: jnp.tanh(h @ w))(h, scaled(p["w2"], p["s"]))
        return h @ p["w3"]

    params = {
        "w1": _n(2, (4, 5)),
        "b1": _n(3, (5,)),
        "w2": _n(4, (5, 5)),
        "s": jnp.array(0.8),
        "w3": _n(5, (5, 2)),
    }
    x1 = X1.at[0].set(0.0)  # relu at exactly 0 for the first example: custom rule vs primal must not matter
    agree(f, params, x1, X2)
    counts = rules_used(f, params, x1)
    assert not dense_rules(counts), counts
    assert counts[("dot_general", "structured")] == 3


def test_parameter_only_chains():
    """Transpose, reshape, concatenate, pad, slice, rev, squeeze, reduce_sum, weight norm, tied weights."""

    def f(p, x):
        w1 = jnp.concatenate([p["a"], p["b"].T], axis=1)  # (4, 6)
        w1 = w1 / jnp.sqrt(jnp.sum(w1 * w1, axis=0, keepdims=True))  # weight normalization
        h = jnp.tanh(x @ w1 * jnp.exp(p["log_g"]))
        w2 = jnp.pad(p["c"], ((0, 1), (0, 0)))[::-1]  # (6, 3)
        qk = p["qk"][:, :3] + p["qk"][:, 3:]  # slices of a fused weight
        h2 = jnp.sin(h @ w2 + jnp.squeeze(p["b2"], 0) + jnp.sum(p["b3"], axis=0))
        h2 = h2 @ qk + h2 @ qk.T  # tied: the same leaf used twice, once transposed
        return h2 @ p["flat"].reshape(3, 2)

    params = {
        "a": _n(6, (4, 2)),
        "b": _n(7, (4, 4)).T,
        "log_g": _n(8, (6,), 0.1),
        "c": _n(9, (5, 3)),
        "qk": _n(10, (3, 6), 0.5),
        "b2": _n(11, (1, 3)),
        "b3": _n(12, (2, 3)),
        "flat": _n(13, (6,)),
    }
    agree(f, params, X1, X2)
    counts = rules_used(f, params, X1)
    # only the general reshape of "flat" (a split of one axis into two) needs the dense rule
    assert dense_rules(counts) == ["reshape"], counts
    for prim in ("concatenate", "pad", "slice", "rev", "transpose", "reduce_sum", "squeeze", "div", "sqrt"):
        assert (prim, "structured") in counts, prim


def test_select_and_implicit_broadcast():
    def f(p, x):
        h = jnp.where(x[:, :1] > 0, x @ p["w"], x @ p["v"])  # select_n on activations
        h = jnp.where(x[:, 1:2] > 0, p["b"], -2.0 * p["b"]) + h  # select_n whose cases are parameters
        return jnp.maximum(h, p["floor"]) @ p["out"]

    params = {
        "w": _n(14, (4, 3)),
        "v": _n(15, (4, 3)),
        "b": _n(16, (3,)),
        "floor": _n(17, (3,), 0.1),
        "out": _n(18, (3, 2)),
    }
    agree(f, params, X1, X2)
    agree(f, params, X1, X2, vmap_axes=None)
    assert not dense_rules(rules_used(f, params, X1))


def test_scan_and_depthwise_conv_fall_back_to_generic_rule():
    def rnn(p, x):  # x: (N, T, d)
        def step(h, xt):
            h = jnp.tanh(h @ p["wh"] + xt @ p["wx"])
            return h, h

        h, _ = jax.lax.scan(step, jnp.zeros((x.shape[0], 3)), jnp.swapaxes(x, 0, 1))
        return h @ p["out"]

    params = {"wh": _n(19, (3, 3)), "wx": _n(20, (2, 3)), "out": _n(21, (3, 2))}
    xs1, xs2 = _n(22, (3, 4, 2)), _n(23, (2, 4, 2))
    agree(rnn, params, xs1, xs2)
    assert ("scan", "dense") in rules_used(rnn, params, xs1)

    def convs(p, x):  # NCHW / OIHW, lhs dilation, then a depthwise conv
        h = jax.lax.conv_general_dilated(x, p["k"], (1, 1), ((1, 1), (0, 0)), lhs_dilation=(2, 1))
        h = jax.lax.conv_general_dilated(jnp.tanh(h), p["dw"], (1, 1), "VALID", feature_group_count=3)
        return h.reshape(h.shape[0], -1) @ p["out"]

    params = {"k": _n(24, (3, 2, 2, 2), 0.5), "dw": _n(25, (3, 1, 2, 2), 0.5), "out": _n(26, (63, 2), 0.3)}
    xc1, xc2 = _n(27, (2, 2, 4, 5)), _n(28, (3, 2, 4, 5))
    agree(convs, params, xc1, xc2)
    counts = rules_used(convs, params, xc1)
    assert counts[("conv_general_dilated", "structured")] == 2  # the depthwise one is among them ...
    assert dense_rules(counts) == ["conv_general_dilated"]  # ... and defers to the generic rule


def test_shared_weight_many_uses_and_parameter_only_output():
    def unrolled(p, x):
        h = x @ p["inp"]
        for _ in range(6):  # one leaf consumed six times: factors are merged (materialized once)
            h = jnp.tanh(h @ p["w"] + p["b"])
        return {"y": h @ p["out"], "bias": p["c"] * 2.0}  # "bias" does not depend on x at all

    params = {
        "inp": _n(29, (4, 3)),
        "w": _n(30, (3, 3), 0.7),
        "b": _n(31, (3,)),
        "out": _n(32, (3, 2)),
        "c": _n(33, (2,)),
    }
    ref = empirical.ntk_fn(unrolled, "jacobian", trace_axes=())(X1, X2, params)
    got = empirical.ntk_fn(unrolled, "structured", trace_axes=())(X1, X2, params)
    for k in ("y", "bias"):
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-10 * float(jnp.max(jnp.abs(ref[k]))))
    np.testing.assert_allclose(got["bias"], 4.0 * jnp.eye(2))


def test_float32_model():
    def f(p, x):
        return jax.nn.softplus(x @ p["w"] + p["b"]) @ p["v"]

    params = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32), {"w": _n(34, (4, 8)), "b": _n(35, (8,)), "v": _n(36, (8, 3))}
    )
    got = agree(f, params, X1.astype(jnp.float32), X2.astype(jnp.float32), tol=1e-5)
    assert got.dtype == jnp.float32


def test_structured_contraction_changes_the_exponent():
    """FCN of width W: structured contraction costs O(N² O W) per layer, Jacobian contraction O(N² O W²)."""
    from dualact.empirical.jacobian import jacobian_kernel

    def mlp(p, x):
        for w in p[:-1]:
            x = jax.nn.relu(x @ w)
        return x @ p[-1]

    flops = {}
    for width in (64, 256):
        params = [_n(37, (8, width)), _n(38, (width, width)), _n(39, (width, 4))]
        for name, impl in (("jacobian", jacobian_kernel), ("structured", structured_kernel)):
            stats = {}
            jax.eval_shape(
                lambda impl=impl, params=params, stats=stats: impl(
                    mlp, _n(40, (16, 8)), None, params, {}, (-1,), (), normalize_vmap_axes(0), stats
                )
            )
            flops[name, width] = stats["einsum_flops"]
        assert flops["structured", width] < flops["jacobian", width] / 10
    assert flops["jacobian", 256] / flops["jacobian", 64] > 12  # ~W²: 16x
    assert flops["structured", 256] / flops["structured", 64] < 4.5  # ~W: 4x
