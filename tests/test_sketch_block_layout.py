"""Segment-aligned padding of Hadamard sketches (dualact.sketch.block_layout): exact rows, unbiasedness, use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from dualact.sketch.block_layout import block_layout, to_blocks
from dualact.sketch.srht import SketchArgumentError, hadamard_rows_at, layout_for, srht_apply, srht_init
from dualact.sketch.tensor_srht import tensor_srht_apply, tensor_srht_init

SEEDS = 1000


def _padded(layout, v):
    """Independent reconstruction of the zero-padded vector the layout describes (NumPy)."""
    out = np.zeros(v.shape[:-1] + (layout.padded_dim,))
    for start, length, blk, off in layout.placements:
        pos = blk * layout.block + off
        out[..., pos : pos + length] = v[..., start : start + length]
    return out


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_layout_is_an_injective_padding_no_longer_than_plain(segments):
    layout = block_layout(segments)
    total = sum(segments)
    if layout is None:
        return
    plain = 1 << (total - 1).bit_length()
    assert layout.padded_dim <= plain and layout.input_dim == total
    assert layout.used <= layout.num_blocks and layout.num_blocks & (layout.num_blocks - 1) == 0
    taken = set()
    for (_, length, blk, off), seg in zip(layout.placements, segments, strict=True):
        assert length == seg and blk < layout.used and off + length <= layout.block
        cells = {blk * layout.block + off + i for i in range(length)}
        assert not cells & taken
        taken |= cells
    v = np.random.default_rng(len(segments)).standard_normal((2, total))
    blocks = np.asarray(to_blocks(layout, jnp.asarray(v))).reshape(2, -1)
    np.testing.assert_array_equal(blocks, _padded(layout, v)[:, : layout.used * layout.block])


def test_single_segment_or_no_saving_is_plain():
    assert block_layout((9,)) is None
    assert block_layout((3,) * 9) is None  # 9 blocks of 4 = 64 > 32
    assert block_layout((4095,) * 9).padded_dim == 65536


@pytest.mark.parametrize("segments", [(7, 8, 5, 8), (15, 16, 1), (3, 3, 3, 1, 4)])
def test_rows_equal_the_explicit_hadamard_of_the_padded_input(segments):
    layout = block_layout(segments)
    assert layout is not None
    rng = np.random.default_rng(0)
    d = sum(segments)
    x = rng.standard_normal((3, d))
    signs = jnp.asarray(rng.choice([-1, 1], d).astype(np.int8))
    idx = jnp.asarray(rng.permutation(layout.padded_dim)[:10].astype(np.int32))
    got = hadamard_rows_at(signs, jnp.asarray(x), idx, layout)
    H = scipy.linalg.hadamard(layout.padded_dim)
    want = (_padded(layout, x * np.asarray(signs)) @ H.T)[:, np.asarray(idx)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _points(n, d, seed):
    rng = np.random.default_rng(seed)
    x = 0.8 * rng.standard_normal(d) + 0.6 * rng.standard_normal((n, d))
    return jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def _assert_unbiased(estimates, exact, z=5.0):
    est = np.asarray(estimates)
    se = est.std(0, ddof=1) / np.sqrt(est.shape[0])
    assert (np.abs(est.mean(0) - np.asarray(exact)) <= z * se + 1e-12).all()


def test_segmented_srht_and_tensor_srht_are_unbiased():
    seg1, seg2 = (15, 16, 15, 16), (15, 16, 1, 16)
    assert layout_for(62, seg1, 12) is not None and layout_for(48, seg2, 12).used == 3
    assert layout_for(62, seg1, 64) is None  # many rows kept: one plain transform is cheaper
    x, y = _points(4, 62, 1), _points(4, 48, 2)

    def one(k):
        s = srht_init(k, 62, 12, segments=seg1)
        t = tensor_srht_init(k, 62, 48, 12, segments1=seg1, segments2=seg2)
        sx, txy = srht_apply(s, x), tensor_srht_apply(t, x, y)
        return sx @ sx.T, txy @ txy.T

    a, b = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(5), SEEDS))
    _assert_unbiased(a, x @ x.T)
    _assert_unbiased(b, (x @ x.T) * (y @ y.T))


def test_segments_must_add_up():
    with pytest.raises(SketchArgumentError, match="add up"):
        srht_init(jax.random.PRNGKey(0), 10, 4, segments=(4, 4))


def test_conv_features_use_block_layouts():
    """A conv net's activation sketches get segment-aligned padding for the patch concatenations."""
    from dualact import layers as L
    from dualact.sketch import ntk_features

    net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Activation("relu"), L.Conv(8, (3, 3), padding="SAME"),
                   L.Activation("relu"), L.GlobalAvgPool(), L.Dense(1))
    fmap = ntk_features(net, feature_dim=512, degree=2, key=jax.random.PRNGKey(0))
    params, _ = fmap.init((1, 6, 6, 3))
    second = params["steps"][3]  # the second activation: inputs are 3×3 patches of 255/256-wide features
    assert second["pre"].layout is not None and second["tensor"].layout1 is not None
    assert second["tensor"].layout1.used == 18
