"""Layer API: the triple, introspection, Dense/Activation/Elementwise/combinators/LayerNorm, numerics."""

from __future__ import annotations

import _duals as D
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact import layers as L
from dualact.layers.activation import _resolve_activation


def _x(n=5, d=7, seed=0, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, d)) * scale)


def _fc(act, depth=2, W=1.5, b=0.05, width=512):
    return L.fully_connected(depth, width, act, W_std=W, b_std=b)


# ---- the triple and introspection -------------------------------------------------------------------


def test_serial_unpacks_as_triple_and_is_introspectable():
    net = L.serial(
        L.Dense(512, W_std=1.5, b_std=0.05),
        L.Activation(D.gelu()),
        L.Dense(512, W_std=1.5, b_std=0.05),
        L.Activation(D.erf_()),
        L.Dense(1, W_std=1.5, b_std=0.05),
    )
    init_fn, apply_fn, kernel_fn = net
    assert [type(layer).__name__ for layer in net.layers] == [
        "Dense",
        "Activation",
        "Dense",
        "Activation",
        "Dense",
    ]
    assert net.layers[0].hyperparams == {
        "out_dim": 512,
        "W_std": 1.5,
        "b_std": 0.05,
        "parameterization": "ntk",
    }
    assert net.layers[1].activation_name == "gelu"
    assert len(net.flatten()) == 5
    x = _x()
    k = kernel_fn(x, None, ("nngp", "ntk"))
    assert k.nngp.shape == k.ntk.shape == (5, 5)
    assert kernel_fn(x, _x(3, seed=1), "nngp").shape == (5, 3)
    full = kernel_fn(x)
    assert isinstance(full, L.Kernel) and full.cov1.shape == (5,)
    out_shape, params = init_fn(jax.random.PRNGKey(0), x.shape)
    assert out_shape == (5, 1) and apply_fn(params, x).shape == (5, 1)
    assert "Dense(out_dim=512" in repr(net)


def test_kernel_fn_accepts_a_kernel_and_nested_serial():
    x = _x()
    a = L.serial(L.Dense(8, W_std=1.2, b_std=0.1), L.Activation(D.relu()))
    b = L.serial(L.Dense(1, W_std=1.1))
    k_mid = a.kernel_fn(x, None, None)
    k1 = b.kernel_fn(k_mid, get="ntk")
    k2 = L.serial(a, b).kernel_fn(x, None, "ntk")
    np.testing.assert_allclose(k1, k2, rtol=1e-14)


def test_get_validation():
    with pytest.raises(ValueError, match="unknown kernel entry"):
        L.Dense(1).kernel_fn(_x(), None, "ntks")


# ---- Dense -------------------------------------------------------------------------------------------


def test_dense_ntk_and_standard_parameterization():
    x = _x(4, 3)
    k0 = np.asarray(x @ x.T / 3)
    W, b = 1.3, 0.2
    k = L.Dense(10, W, b).kernel_fn(x, None, ("nngp", "ntk"))
    np.testing.assert_allclose(k.nngp, W**2 * k0 + b**2, rtol=1e-14)
    np.testing.assert_allclose(k.ntk, W**2 * k0 + b**2, rtol=1e-14)
    net = L.serial(L.Dense(10, W, b, "standard"), L.Dense(1, W, b, "standard"))
    k = net.kernel_fn(x, None, ("nngp", "ntk"))
    k1 = W**2 * k0 + b**2
    np.testing.assert_allclose(k.nngp, W**2 * k1 + b**2, rtol=1e-14)
    # ntk_1 = fan_in·K0 + 1 (bias); ntk_2 = 10·k1 + W²·ntk_1 + 1
    np.testing.assert_allclose(k.ntk, 10 * k1 + W**2 * (3 * k0 + 1) + 1, rtol=1e-13)
    with pytest.raises(ValueError, match="parameterization"):
        L.Dense(1, parameterization="mup")


def test_standard_parameterization_empirical_ntk():
    """The standard-parameterization NTK is the expected empirical NTK of apply_fn (Monte Carlo)."""
    from test_layers_montecarlo import empirical_ntk

    x = _x(3, 4)
    net = L.serial(
        L.Dense(256, 1.4, 0.3, "standard"), L.Activation(D.erf_()), L.Dense(1, 1.2, 0.1, "standard")
    )
    init_fn, apply_fn, kernel_fn = net
    exact = np.asarray(kernel_fn(x, None, "ntk"))
    est = np.mean(
        [empirical_ntk(apply_fn, init_fn(jax.random.PRNGKey(s), x.shape)[1], x, x) for s in range(20)], axis=0
    )
    np.testing.assert_allclose(est, exact, rtol=0.05, atol=0.05 * np.abs(exact).max())


# ---- Activation resolution ----------------------------------------------------------------------------


def test_activation_accepts_dual_kernel_object_and_params():
    d = D.leaky_relu()
    x = _x()
    k1 = L.serial(L.Dense(1, 1.5), L.Activation(d, alpha=0.3), L.Dense(1)).kernel_fn(x, None, "nngp")
    k2 = L.serial(L.Dense(1, 1.5), L.Activation(D.abrelu(0.3, 1.0)), L.Dense(1)).kernel_fn(x, None, "nngp")
    np.testing.assert_allclose(k1, k2, rtol=1e-14)


def test_resolve_activation_order(monkeypatch):
    import dualact
    from dualact import catalog

    calls = []

    def fake_get(name):
        calls.append(("catalog", name))
        if name == "relu":
            return D.relu()
        raise KeyError(name)

    def fake_derive(expr, params=None):
        calls.append(("derive", expr, params))
        return D.gelu()

    monkeypatch.setattr(catalog, "get", fake_get, raising=False)
    monkeypatch.setattr(dualact, "derive", fake_derive, raising=False)
    assert _resolve_activation("relu", {}).name == "relu"
    assert _resolve_activation("x*tanh(softplus(x))", {"a": 1.0}).name == "gelu"
    assert calls == [
        ("catalog", "relu"),
        ("catalog", "x*tanh(softplus(x))"),
        ("derive", "x*tanh(softplus(x))", {"a": 1.0}),
    ]
    assert L.Activation("relu").activation_name == "relu"


def test_activation_needs_gaussian_input():
    net = L.serial(L.Dense(1), L.Activation(D.relu()), L.Activation(D.relu()))
    with pytest.raises(ValueError, match="must be Gaussian"):
        net.kernel_fn(_x(), None, "nngp")


def test_elementwise_autodiff_matches_closed_form():
    def nngp_fn(c, v1, v2):
        return 2 / jnp.pi * jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * v1) * (1 + 2 * v2)))

    x = _x(6, 4)
    a = L.serial(L.Dense(1, 1.5, 0.05), L.Elementwise(jax.scipy.special.erf, nngp_fn), L.Dense(1, 1.5, 0.05))
    b = L.serial(L.Dense(1, 1.5, 0.05), L.Activation(D.erf_()), L.Dense(1, 1.5, 0.05))
    ka, kb = a.kernel_fn(x, None, ("nngp", "ntk")), b.kernel_fn(x, None, ("nngp", "ntk"))
    np.testing.assert_allclose(ka.nngp, kb.nngp, rtol=1e-13)
    np.testing.assert_allclose(ka.ntk, kb.ntk, rtol=1e-12)
    params = a.init_fn(jax.random.PRNGKey(0), x.shape)[1]
    assert a.apply_fn(params, x).shape == (6, 1)


# ---- combinators and normalisation --------------------------------------------------------------------


def test_fanout_faninsum_residual_and_parallel():
    x = _x()
    block = L.serial(
        L.FanOut(2), L.parallel(L.serial(L.Activation(D.relu()), L.Dense(1, 1.2)), L.Identity()), L.FanInSum()
    )
    net = L.serial(L.Dense(1, 1.5, 0.1), block, L.Activation(D.erf_()), L.Dense(1))
    k = net.kernel_fn(x, None, ("nngp", "ntk"))
    # by hand: K1 = dense; residual K2 = K1 + 1.44·T_relu(K1); then erf, dense
    k1 = L.Dense(1, 1.5, 0.1).kernel_fn(x)
    kr = L.serial(L.Activation(D.relu()), L.Dense(1, 1.2)).kernel_fn(k1)
    nngp2 = k1.nngp + kr.nngp
    assert np.isfinite(np.asarray(k.ntk)).all()
    k_sum = L.FanInSum().kernel_fn([k1, kr])
    np.testing.assert_allclose(k_sum.nngp, nngp2, rtol=1e-14)
    init_fn, apply_fn, _ = net
    params = init_fn(jax.random.PRNGKey(0), x.shape)[1]
    assert apply_fn(params, x).shape == (5, 1)


def test_fanin_concat_weights_by_channels():
    x = _x()
    net = L.serial(L.FanOut(2), L.parallel(L.Dense(100, 1.0), L.Dense(300, 2.0)), L.FanInConcat(), L.Dense(1))
    k = net.kernel_fn(x, None, "nngp")
    k0 = np.asarray(x @ x.T / x.shape[1])
    np.testing.assert_allclose(k, 0.25 * k0 + 0.75 * 4 * k0, rtol=1e-14)
    with pytest.raises(ValueError, match="must be Gaussian"):
        L.serial(L.FanOut(2), L.FanInConcat(), L.Activation(D.relu())).kernel_fn(x, None, "nngp")


def test_layernorm_normalises_and_matches_finite_network():
    x = _x(4, 6, scale=3.0)
    net = L.serial(L.Dense(2048, 1.3, 0.2), L.LayerNorm(), L.Dense(1))
    k = np.asarray(net.kernel_fn(x, None, "nngp"))
    np.testing.assert_allclose(np.diag(k), 1.0, rtol=1e-10)
    init_fn, apply_fn, _ = L.serial(L.Dense(4096, 1.3, 0.2), L.LayerNorm())
    h = apply_fn(init_fn(jax.random.PRNGKey(0), x.shape)[1], x)
    emp = np.asarray(h @ h.T / h.shape[1])
    np.testing.assert_allclose(emp, k, atol=0.06)


# ---- numerics --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu", "abs", "erf", "gelu", "sin", "gaussian", "leaky_relu", "sign"])
def test_zero_inputs_and_extreme_norms_are_finite(name):
    d = D.get(name)
    x = np.random.default_rng(0).normal(size=(6, 5))
    x[0] = 0.0  # a zero vector
    x[1] *= 1e-150
    x[2] *= 1e3
    x[3] = x[4]  # duplicate rows: ρ = 1 off the diagonal
    for b_std in (0.0, 0.1):
        net = _fc(d, depth=3, b=b_std)
        k = net.kernel_fn(jnp.asarray(x), None, ("nngp", "ntk"))
        assert np.isfinite(np.asarray(k.nngp)).all() and np.isfinite(np.asarray(k.ntk)).all()
        kx = net.kernel_fn(jnp.asarray(x[:3]), jnp.asarray(x), ("nngp", "ntk"))
        assert np.isfinite(np.asarray(kx.nngp)).all() and np.isfinite(np.asarray(kx.ntk)).all()


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "abs"])
def test_depth_100_is_finite(name):
    x = _x(6, 5)
    k = _fc(D.get(name), depth=100, W=1.4 if name != "relu" else 2**0.5, b=0.05).kernel_fn(
        x, None, ("nngp", "ntk")
    )
    assert np.isfinite(np.asarray(k.nngp)).all() and np.isfinite(np.asarray(k.ntk)).all()


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "sin"])
def test_float32_within_1e4_of_float64(name):
    x = np.random.default_rng(1).normal(size=(20, 16))
    net = _fc(D.get(name), depth=3)
    k64 = net.kernel_fn(jnp.asarray(x, jnp.float64), None, ("nngp", "ntk"))
    k32 = net.kernel_fn(jnp.asarray(x, jnp.float32), None, ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        a, b = np.asarray(getattr(k64, g)), np.asarray(getattr(k32, g))
        assert b.dtype == np.float32
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


@pytest.mark.parametrize("name", ["relu", "erf", "gelu", "abs", "sin"])
def test_outputs_are_psd(name):
    x = _x(30, 8)
    k = _fc(D.get(name), depth=3).kernel_fn(x, None, ("nngp", "ntk"))
    for g in ("nngp", "ntk"):
        m = np.asarray(getattr(k, g))
        np.testing.assert_allclose(m, m.T, rtol=1e-13, atol=0)
        assert np.linalg.eigvalsh(m).min() >= -1e-10 * np.abs(m).max()


def test_gradient_through_kernel_fn_wrt_hyperparameters():
    x = _x(4, 3)

    def f(w, b, a):
        net = L.serial(L.Dense(1, w, b), L.Activation(D.leaky_relu(), alpha=a), L.Dense(1, w, b))
        return jnp.sum(net.kernel_fn(x, None, "ntk"))

    g = jax.grad(f, argnums=(0, 1, 2))(1.3, 0.2, 0.1)
    eps = 1e-6
    fd = [
        (f(1.3 + eps, 0.2, 0.1) - f(1.3 - eps, 0.2, 0.1)) / (2 * eps),
        (f(1.3, 0.2 + eps, 0.1) - f(1.3, 0.2 - eps, 0.1)) / (2 * eps),
        (f(1.3, 0.2, 0.1 + eps) - f(1.3, 0.2, 0.1 - eps)) / (2 * eps),
    ]
    np.testing.assert_allclose(np.array(g), np.array(fd), rtol=1e-6)
    assert jax.jit(f)(1.3, 0.2, 0.1) == pytest.approx(float(f(1.3, 0.2, 0.1)), rel=1e-12)


# ---- AvgPool reverse-mode under jit (regression) ------------------------------------------------------


def _manual_avgpool(x, window, strides, padding):
    """Zero-padded 2-D average pooling by explicit loops (divides by the full window size)."""
    x = np.asarray(x)
    pads, outs = [], []
    for n, w, s in zip(x.shape[1:3], window, strides, strict=True):
        if padding == "SAME":
            out = -(-n // s)
            total = max((out - 1) * s + w - n, 0)
            pads.append((total // 2, total - total // 2))
        else:
            out = (n - w) // s + 1
            pads.append((0, 0))
        outs.append(out)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    y = np.zeros((x.shape[0], outs[0], outs[1], x.shape[3]))
    for i in range(outs[0]):
        for j in range(outs[1]):
            i0, j0 = i * strides[0], j * strides[1]
            y[:, i, j] = xp[:, i0 : i0 + window[0], j0 : j0 + window[1]].sum(axis=(1, 2))
    return y / (window[0] * window[1])


@pytest.mark.parametrize(
    "shape, strides, padding",
    [((1, 4, 4, 2), (1, 1), "VALID"), ((1, 4, 4, 2), (2, 2), "SAME"), ((2, 5, 5, 2), (2, 2), "SAME")],
)
def test_avgpool_apply_fn_jit_grad(shape, strides, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape))
    _, apply_fn, _ = L.AvgPool((2, 2), strides=strides, padding=padding)
    y = apply_fn((), x)
    np.testing.assert_allclose(y, _manual_avgpool(x, (2, 2), strides, padding), rtol=1e-14, atol=1e-15)
    w = jnp.asarray(rng.normal(size=y.shape))

    def f(x):
        return jnp.sum(apply_fn((), x) * w)

    g = np.asarray(jax.grad(f)(x))
    g_jit = np.asarray(jax.jit(jax.grad(f))(x))
    np.testing.assert_allclose(g_jit, g, rtol=1e-14, atol=1e-15)
    # the map is linear: the gradient is the pooling's transpose applied to w; check it entry by entry
    manual = np.zeros(shape)
    for idx in np.ndindex(*shape):
        e = np.zeros(shape)
        e[idx] = 1.0
        manual[idx] = np.sum(_manual_avgpool(e, (2, 2), strides, padding) * np.asarray(w))
    np.testing.assert_allclose(g_jit, manual, rtol=1e-13, atol=1e-14)


def test_avgpool_kernel_fn_jit_grad():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 2)))
    for pool in (L.AvgPool((2, 2), strides=(1, 1)), L.AvgPool((2, 2), strides=(2, 2), padding="SAME")):
        net = L.serial(L.Conv(8, (2, 2), padding="SAME"), L.Activation(D.erf_()), pool, L.Flatten(), L.Dense(1))

        def f(x, net=net):
            return jnp.sum(net.kernel_fn(x, None, "ntk"))

        g = np.asarray(jax.grad(f)(x))
        np.testing.assert_allclose(np.asarray(jax.jit(jax.grad(f))(x)), g, rtol=1e-12, atol=1e-14)
        eps = 1e-6
        e = np.zeros(x.shape)
        e[0, 1, 2, 1] = eps
        fd = (f(x + e) - f(x - e)) / (2 * eps)
        assert float(fd) == pytest.approx(g[0, 1, 2, 1], rel=1e-6, abs=1e-9)


# ---- deepcopy / pickle of activation layers (regression) ----------------------------------------------


def _bound_leaky_relu():
    import dualact

    return dualact.catalog.get("leaky_relu").bind(alpha=0.2)


@pytest.mark.parametrize("spec", ["relu", "gelu", "x*tanh(softplus(x))", "bound"])
def test_activation_deepcopy_and_pickle_round_trip(spec):
    import copy
    import pickle

    act = L.Activation(_bound_leaky_relu()) if spec == "bound" else L.Activation(spec)
    x = _x(4, 3)
    net = L.serial(L.Dense(16, 1.4, 0.1), act, L.Dense(1, 1.2))
    want = net.kernel_fn(x, None, ("nngp", "ntk"))
    q = (1.0, 0.3, 2.0)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net)), copy.copy(net)):
        dual = clone.layers[1].dual
        got = clone.kernel_fn(x, None, ("nngp", "ntk"))
        np.testing.assert_array_equal(got.nngp, want.nngp)
        np.testing.assert_array_equal(got.ntk, want.ntk)
        assert dual.name == act.dual.name and dual.defaults == act.dual.defaults
        assert float(dual.nngp(*q)) == float(act.dual.nngp(*q))
    d2 = pickle.loads(pickle.dumps(act.dual))
    assert d2.name == act.dual.name and d2.method == act.dual.method and d2.path == act.dual.path
    assert d2.defaults == act.dual.defaults
    for fn in ("nngp", "ntk_factor"):
        assert float(getattr(d2, fn)(*q)) == float(getattr(act.dual, fn)(*q))
    assert float(d2.diag(1.7)) == float(act.dual.diag(1.7))
    assert copy.deepcopy(act.dual) is act.dual
