"""Kernel-axis semantics of the empirical NTK/NNGP against a brute-force reference (neural-tangents'
conventions).

The reference flattens all parameters, forms the full Jacobians of the whole batch with forward mode, and
applies ``trace_axes`` (mean), ``diagonal_axes`` and the zipped ``(x1-axis, x2-axis)`` layout with explicit
loops, so it shares no code with the implementations.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from dualact import empirical
from dualact.empirical import EmpiricalKernelError

IMPLS = ["jacobian", "ntk_vector", "structured"]


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    """These tests compile many small programs: skip XLA's optimization passes (2x faster compiles)."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def reference_kernel(full, s1, s2, trace_axes, diagonal_axes):
    """Apply NT's axis semantics to a full kernel of shape ``s1 + s2`` with loops."""
    nd = len(s1)
    trace = sorted({a % nd for a in trace_axes})
    diag = sorted({a % nd for a in diagonal_axes})
    out_shape = []
    for a in range(nd):
        if a in trace:
            continue
        out_shape += [s1[a]] if a in diag else [s1[a], s2[a]]
    res = np.zeros(out_shape)
    for idx in np.ndindex(*out_shape):
        acc = 0.0
        for t in itertools.product(*[range(s1[a]) for a in trace]):
            i1, i2, pos, ti = [], [], 0, 0
            for a in range(nd):
                if a in trace:
                    i1.append(t[ti])
                    i2.append(t[ti])
                    ti += 1
                elif a in diag:
                    i1.append(idx[pos])
                    i2.append(idx[pos])
                    pos += 1
                else:
                    i1.append(idx[pos])
                    i2.append(idx[pos + 1])
                    pos += 2
            acc += full[tuple(i1) + tuple(i2)]
        res[idx] = acc / math.prod(s1[a] for a in trace)
    return res


def reference_ntk(f, x1, x2, params, trace_axes, diagonal_axes):
    flat, unravel = ravel_pytree(params)
    j1 = np.asarray(jax.jacfwd(lambda p: f(unravel(p), x1))(flat))
    j2 = np.asarray(jax.jacfwd(lambda p: f(unravel(p), x2))(flat))
    full = np.tensordot(j1, j2, axes=([-1], [-1]))
    return reference_kernel(full, j1.shape[:-1], j2.shape[:-1], trace_axes, diagonal_axes)


def reference_nngp(f, x1, x2, params, trace_axes, diagonal_axes):
    f1, f2 = np.asarray(f(params, x1)), np.asarray(f(params, x2))
    return reference_kernel(np.multiply.outer(f1, f2), f1.shape, f2.shape, trace_axes, diagonal_axes)


def seq_model(p, x):
    """(N, L, d) -> (N, L, O): position-wise MLP with a sequence mix; examples independent along axis 0."""
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = h + jnp.mean(h, axis=1, keepdims=True) * p["s"]
    return h @ p["w2"]


@pytest.fixture(scope="module")
def seq_setup():
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    params = {
        "w1": jax.random.normal(ks[0], (3, 5)),
        "b1": jax.random.normal(ks[1], (5,)),
        "s": jnp.array(0.7),
        "w2": jax.random.normal(ks[2], (5, 2)),
    }
    x1 = jax.random.normal(ks[3], (3, 4, 3))
    x2 = jax.random.normal(ks[4], (3, 4, 3))
    return params, x1, x2


AXES = [
    ((-1,), ()),
    ((), ()),
    ((), (0,)),
    ((0,), ()),
    ((1, 2), ()),
    ((), (1,)),
    ((-1,), (0, 1)),
    ((0, 1, 2), ()),
]


# (implementation, vmap_axes) pairs per axes case: every implementation and both vmap modes are covered while
# keeping the number of compilations small.
_CASES = [("structured", 0), ("jacobian", None)]
_EXTRA = {
    0: [("ntk_vector", 0), ("structured", None)],
    2: [("ntk_vector", None), ("structured", None)],
    4: [("ntk_vector", 0)],
    6: [("structured", None), ("jacobian", 0)],
}


@pytest.mark.parametrize("case", range(len(AXES)))
def test_ntk_axes_semantics(seq_setup, case):
    params, x1, x2 = seq_setup
    trace_axes, diagonal_axes = AXES[case]
    ref = reference_ntk(seq_model, x1, x2, params, trace_axes, diagonal_axes)
    for impl, vmap_axes in _CASES + _EXTRA.get(case, []):
        got = empirical.ntk_fn(
            seq_model,
            implementation=impl,
            trace_axes=trace_axes,
            diagonal_axes=diagonal_axes,
            vmap_axes=vmap_axes,
        )(x1, x2, params)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10, err_msg=f"{impl}, vmap_axes={vmap_axes}")


@pytest.mark.parametrize("trace_axes,diagonal_axes", AXES[:5])
def test_nngp_axes_semantics(seq_setup, trace_axes, diagonal_axes):
    params, x1, x2 = seq_setup
    ref = reference_nngp(seq_model, x1, x2, params, trace_axes, diagonal_axes)
    for vmap_axes in (None, 0) if trace_axes == (-1,) else (0,):
        got = empirical.nngp_fn(
            seq_model, trace_axes=trace_axes, diagonal_axes=diagonal_axes, vmap_axes=vmap_axes
        )(x1, x2, params)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_default_shapes_match_neural_tangents_docs(seq_setup):
    params, x1, _ = seq_setup
    x2 = x1[:2]
    f = lambda p, x: seq_model(p, x)[:, 0]  # (N, O)  # noqa: E731
    assert empirical.ntk_fn(f)(x1, x2, params).shape == (3, 2)  # "auto"
    assert empirical.ntk_fn(f, "structured", trace_axes=())(x1, x2, params).shape == (3, 2, 2, 2)
    assert empirical.ntk_fn(f, "structured", (), (0,))(x1, x1, params).shape == (3, 2, 2)
    assert empirical.ntk_fn(f, "structured", (), (-1,))(x1, x2, params).shape == (3, 2, 2)


def test_vmap_axes_other_positions(seq_setup):
    """Batch on axis 1 of x and axis 2 of the output; the kernel equals the reference."""
    params, x1, x2 = seq_setup
    f = lambda p, x: jnp.moveaxis(seq_model(p, jnp.moveaxis(x, 1, 0)), 0, 2)  # noqa: E731
    x1t, x2t = jnp.moveaxis(x1, 0, 1), jnp.moveaxis(x2, 0, 1)
    ref = reference_ntk(f, x1t, x2t, params, (0,), ())
    for impl in IMPLS:
        got = empirical.ntk_fn(f, implementation=impl, trace_axes=(0,), vmap_axes=(1, 2))(x1t, x2t, params)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_pytree_outputs_params_and_kwargs():
    ks = jax.random.split(jax.random.PRNGKey(1), 4)
    params = {
        "w": jax.random.normal(ks[0], (3, 4)),
        "heads": (jax.random.normal(ks[1], (4, 2)), jax.random.normal(ks[2], (4,))),
        "step": jnp.array(3, jnp.int32),
    }

    def f(p, x, scale=1.0, train=False, shift=None):
        h = jnp.sin(x @ p["w"]) * scale + (0.0 if shift is None else shift)
        h = h * (2.0 if train else 1.0) + p["step"] * 0.0
        return {"a": h @ p["heads"][0], "b": h @ p["heads"][1]}

    x1 = jax.random.normal(ks[3], (4, 3))
    shift = jnp.arange(4.0)[:, None] * 0.1
    float_params = {"w": params["w"], "heads": params["heads"]}
    refs = {}
    for name in ("a", "b"):
        g = lambda p, x, name=name: f({**p, "step": params["step"]}, x, 0.5, True, shift)[name]  # noqa: E731
        refs[name] = reference_ntk(g, x1, x1, float_params, (-1,), ())  # "b" is (N,): -1 is the batch axis
    for impl, vmap_axes in [
        ("jacobian", None),
        ("ntk_vector", (0, 0, {"shift": 0})),
        ("structured", (0, 0, {"shift": 0})),
        ("structured", None),
    ]:
        got = empirical.ntk_fn(f, implementation=impl, vmap_axes=vmap_axes)(
            x1, None, params, scale=0.5, train=True, shift=shift
        )
        for name in ("a", "b"):
            np.testing.assert_allclose(
                got[name], refs[name], rtol=1e-10, atol=1e-10, err_msg=f"{impl} {name}"
            )


@pytest.mark.parametrize(
    "trace_axes,diagonal_axes,impl",
    [((), (), "structured"), ((0,), (), "jacobian"), ((), (0,), "ntk_vector")],
)
def test_batch_size_blocks_equal_full(seq_setup, trace_axes, diagonal_axes, impl):
    """Blocks: concatenated (pair), matched (diagonal) and size-weighted (traced example axis)."""
    params, x1, _ = seq_setup
    x1 = jnp.concatenate([x1, x1[:1] * 0.5])  # 4 examples: two blocks of 2
    x2 = x1 * 1.5
    ref = reference_ntk(seq_model, x1, x2, params, trace_axes, diagonal_axes)
    fn = empirical.ntk_fn(seq_model, impl, trace_axes, diagonal_axes, vmap_axes=0, batch_size=2)
    np.testing.assert_allclose(fn(x1, x2, params), ref, rtol=1e-10, atol=1e-10)
    nngp_ref = reference_nngp(seq_model, x1, x2, params, trace_axes, diagonal_axes)
    nngp_blocks = empirical.nngp_fn(seq_model, trace_axes, diagonal_axes, batch_size=3)(x1, x2, params)
    np.testing.assert_allclose(nngp_blocks, nngp_ref, rtol=1e-12, atol=1e-12)


def test_errors_name_the_fix(seq_setup):
    params, x1, x2 = seq_setup
    with pytest.raises(EmpiricalKernelError, match="implementation"):
        empirical.ntk_fn(seq_model, implementation="fast")
    with pytest.raises(EmpiricalKernelError, match="out of range"):
        empirical.ntk_fn(seq_model, trace_axes=(5,))(x1, x2, params)
    with pytest.raises(EmpiricalKernelError, match="must not share"):
        empirical.ntk_fn(seq_model, trace_axes=(0,), diagonal_axes=(0,))(x1, x2, params)
    with pytest.raises(EmpiricalKernelError, match="differ"):
        empirical.ntk_fn(seq_model, trace_axes=(), diagonal_axes=(0,))(x1, x2[:2], params)
    with pytest.raises(EmpiricalKernelError, match="vmap_axes"):
        empirical.ntk_fn(seq_model, vmap_axes="batch")
