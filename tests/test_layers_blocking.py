"""Blocked (memory-bounded) and sharded kernel evaluation: identical to the direct evaluation."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import _duals as D
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L
from dualact.layers.planning import plan


def _fc():
    return L.fully_connected(3, 512, D.gelu(), W_std=1.5, b_std=0.05)


def _cnn():
    return L.serial(
        L.Conv(8, (3, 3), padding="SAME", W_std=1.4, b_std=0.1),
        L.Activation(D.relu()),
        L.AvgPool((2, 2), (2, 2)),
        L.Conv(8, (3, 3), padding="SAME", W_std=1.4),
        L.Activation(D.erf_()),
        L.LayerNorm(),
        L.Dense(4, W_std=1.2),
        L.Activation(D.gelu()),
        L.Flatten(),
        L.Dense(1),
    )


@pytest.mark.parametrize("same", [True, False])
def test_fc_blocked_equals_direct(same):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(23, 6)), rng.normal(size=(17, 6))
    x[3] = 0.0
    net = _fc()
    x2 = None if same else y
    k = net.kernel_fn(x, x2, ("nngp", "ntk"))
    kb = net.kernel_fn(x, x2, ("nngp", "ntk"), block_size=5)
    assert isinstance(kb.nngp, np.ndarray)
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(kb, g), np.asarray(getattr(k, g)), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("same", [True, False])
def test_cnn_blocked_equals_direct(same):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 6, 6, 3)), rng.normal(size=(4, 6, 6, 3))
    x[0, :3, :3] = 0.0
    net = _cnn()
    x2 = None if same else y
    k = net.kernel_fn(x, x2, ("nngp", "ntk"))
    kb = net.kernel_fn(x, x2, ("nngp", "ntk"), block_size=2)
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(kb, g), np.asarray(getattr(k, g)), rtol=1e-12, atol=1e-15)


def test_cnn_blocked_keeps_spatial_output():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5, 5, 2))
    net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Activation(D.relu()))
    k = np.asarray(net.kernel_fn(x, None, "nngp"))
    kb = net.kernel_fn(x, None, "nngp", block_size=2)
    assert kb.shape == k.shape == (4, 4, 5, 5, 5, 5)
    np.testing.assert_allclose(kb, k, rtol=1e-13, atol=1e-15)


def test_memory_budget_switches_to_tiles_and_progress(capsys):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 4))
    net = _fc()
    k = np.asarray(net.kernel_fn(x, None, "nngp"))
    kb = net.kernel_fn(x, None, "nngp", memory_budget=20 * 20 * 64, progress=True)
    np.testing.assert_allclose(kb, k, rtol=1e-13)
    assert "kernel cost estimate" in capsys.readouterr().out


def test_plan_and_cost_estimate():
    p = plan((20, 32, 32, 3), None)
    assert p.mode == "pairs" and p.group == 1  # one 32x32 pair (8 MiB per array) per step
    p = plan((20, 32, 32, 3), None, platform="gpu")  # an accelerator: as many pairs as the 1 GiB budget allows
    assert p.mode == "pairs" and p.group == (1 << 30) // (32**4 * 8 * 8)
    p = plan((20_000, 256), None)
    assert p.mode == "tiles" and p.tile < 20_000
    assert plan((1000, 256), None).direct
    est = L.estimate_cost(L.myrtle(5, act=D.relu()), (20, 32, 32, 3))
    assert est.pairs == 210 and est.flops > 1e9 and "pairs" in est.summary()


_SHARD_SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import _duals as D
    from dualact import layers as L
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    fc = L.fully_connected(2, 512, D.relu(), W_std=1.5, b_std=0.1)
    x, y = rng.normal(size=(21, 5)), rng.normal(size=(13, 5))
    for x2 in (None, y):
        ref = fc.kernel_fn(x, x2, ("nngp", "ntk"), devices=[jax.devices()[0]], block_size=6)
        sh = fc.kernel_fn(x, x2, ("nngp", "ntk"), block_size=6)          # all 4 devices
        direct = fc.kernel_fn(x, x2, ("nngp", "ntk"), devices=[jax.devices()[0]])
        for g in ("nngp", "ntk"):
            np.testing.assert_allclose(getattr(sh, g), getattr(ref, g), rtol=1e-14, atol=1e-16)
            np.testing.assert_allclose(getattr(sh, g), np.asarray(getattr(direct, g)), rtol=1e-13)
    cnn = L.serial(L.Conv(8, (3, 3), padding="SAME", W_std=1.4), L.Activation(D.gelu()), L.GlobalAvgPool(),
                   L.Dense(1))
    xi = rng.normal(size=(7, 4, 4, 2))
    ref = cnn.kernel_fn(xi, None, ("nngp", "ntk"), devices=[jax.devices()[0]])
    sh = cnn.kernel_fn(xi, None, ("nngp", "ntk"))
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("rows",))
    sh2 = cnn.kernel_fn(xi, None, "ntk", devices=mesh)
    for g in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(sh, g), np.asarray(getattr(ref, g)), rtol=1e-13)
    np.testing.assert_allclose(sh2, np.asarray(ref.ntk), rtol=1e-13)
    print("SHARDED-OK")
""")


def test_sharded_equals_unsharded_on_4_host_devices():
    tests = str(Path(__file__).resolve().parent)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _SHARD_SCRIPT.format(tests=tests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "SHARDED-OK" in out.stdout, out.stderr[-3000:]


@pytest.mark.slow
def test_large_fc_is_blocked_and_bounded():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(6000, 32)))
    net = L.fully_connected(3, 512, D.relu(), W_std=1.5, b_std=0.05)
    k = net.kernel_fn(x, None, "nngp", memory_budget=64 << 20)
    assert k.shape == (6000, 6000) and np.isfinite(k).all()
    sub = np.asarray(net.kernel_fn(x[:300], x[-200:], "nngp"))
    np.testing.assert_allclose(k[:300, -200:], sub, rtol=1e-13)
