"""Feature maps of :mod:`dualact.layers` architectures: ``phi(x) @ phi(y).T ≈ kernel_fn(x, y)``.

:func:`ntk_features` / :func:`nngp_features` walk a ``serial(...)`` architecture and turn every layer into an
exact (Dense, Conv, pooling, Flatten) or sketched (homogeneous activation, Algorithm 1 of Han et al. 2022)
feature step; see :mod:`dualact.sketch.arccos` and :mod:`dualact.sketch.cntk_sketch`. The kernel conventions
are those of ``kernel_fn`` (neural-tangents), so the features approximate exactly what ``kernel_fn`` returns.

Supported: ``serial`` of ``Dense``, ``Conv``, ``AvgPool``, ``GlobalAvgPool``, ``Flatten``, ``Identity`` and
``Activation`` of positively homogeneous catalog entries (relu, leaky_relu, abs, rectified monomials, step,
normalized_gaussian...), with or without biases, NTK or standard parameterization. Anything else raises
:class:`UnsupportedArchitectureError`.

>>> import jax, jax.numpy as jnp
>>> from dualact import layers as L
>>> from dualact import sketch
>>> arch = L.serial(L.Dense(512, W_std=1.5), L.Activation("relu"), L.Dense(1, W_std=1.5))
>>> fmap = sketch.ntk_features(arch, feature_dim=256, degree=4, key=jax.random.PRNGKey(0))
>>> fmap(jnp.ones((3, 5))).shape
(3, 256)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from dualact.sketch.arccos import (
    DenseStep,
    Dims,
    FeatureState,
    HomogeneousStep,
    UnsupportedArchitectureError,
    project_apply,
    project_init,
)
from dualact.sketch.srht import SketchArgumentError

__all__ = [
    "FeatureMap",
    "UnsupportedArchitectureError",
    "features_on_devices",
    "iterate_features",
    "nngp_features",
    "ntk_features",
]

_HINT = (
    "; for non-homogeneous activations use dualact.sketch.hermite_features or dualact.sketch.monte_carlo_features"
)


class FeatureMap:
    """A random feature map of an architecture's NTK or NNGP (built lazily for each input shape).

    Call it on a batch ``x`` of shape ``(n, d)`` or ``(n, *spatial, channels)``; the result is ``(n, feature_dim)``.
    The same map (same ``key``) gives consistent features for every batch, so ``phi(x) @ phi(y).T`` estimates the
    kernel between any two sets of inputs. ``apply(params, x)`` is the pure, jit-compatible function.
    """

    def __init__(self, steps, feature_dim: int, key, kind: str, arch=None):
        self.steps = steps
        self.feature_dim = int(feature_dim)
        self.key = key
        self.kind = kind
        self.arch = arch
        self._built: dict = {}

    def __repr__(self):
        return f"FeatureMap(kind={self.kind!r}, feature_dim={self.feature_dim}, steps={len(self.steps)})"

    # ---- building ------------------------------------------------------------------------------------------
    def init(self, input_shape):
        """``(params, dims)`` for inputs of shape ``(n, *spatial, channels)`` (the batch size is ignored)."""
        if len(input_shape) < 2 or any(int(s) < 1 for s in input_shape[1:]):
            raise SketchArgumentError(
                f"inputs must have shape (n, features) or (n, *spatial, channels) with non-empty axes after the "
                f"batch axis; got shape {tuple(input_shape)}"
            )
        shape = tuple(int(s) for s in input_shape[1:])
        if shape in self._built:
            return self._built[shape][:2]
        dims = Dims(phi=shape[-1], psi=None, spatial=shape[:-1], channels=shape[-1], track_ntk=self.kind == "ntk")
        keys = jax.random.split(self.key, len(self.steps) + 1)
        params, all_dims = [], [dims]
        for (step, out_channels), k in zip(self.steps, keys[:-1], strict=True):
            if isinstance(step, HomogeneousStep) and not dims.gaussian:
                raise UnsupportedArchitectureError(
                    "an activation must follow a Dense or Conv layer (its input must be Gaussian)"
                )
            if out_channels is None:
                p, dims = step.init(k, dims)
            else:
                p, dims = step.init(k, dims, out_channels)
            params.append(p)
            all_dims.append(dims)
        if dims.spatial:
            raise UnsupportedArchitectureError(
                f"the network's outputs still have spatial axes {dims.spatial}: features exist for per-input "
                "kernels only; end the network with Flatten() or GlobalAvgPool() (and a Dense readout)"
            )
        which = "psi" if self.kind == "ntk" else "phi"
        out_dim = getattr(dims, which)
        final = None
        if out_dim is not None and out_dim > self.feature_dim:
            final = project_init(keys[-1], out_dim, self.feature_dim, dims.segments(which))
        params = {"steps": params, "final": final}
        plan = (tuple(s for s, _ in self.steps), tuple(all_dims), self.kind, self.feature_dim)
        self._built[shape] = (params, all_dims, functools.partial(_run, plan=plan))
        return params, all_dims

    def apply(self, params, x):
        """Pure function of the parameters from :meth:`init` (same input shape)."""
        return self._fn(x.shape)(params, x)

    def _fn(self, shape):
        self.init(shape)
        return self._built[tuple(int(s) for s in shape[1:])][2]

    def __call__(self, x):
        params, _ = self.init(jnp.shape(x))
        if jnp.shape(x)[0] == 0:  # an empty batch has no features (and XLA would reshape by zero)
            return jnp.zeros((0, self.feature_dim), jnp.result_type(jnp.asarray(x).dtype, float))
        return self._fn(jnp.shape(x))(params, x)

    def batched(self, x, batch_size: int = 256, progress: bool | None = None, devices=None):
        """Features of a large array, computed batch by batch (each batch split over ``devices``), as NumPy."""
        return np.concatenate(list(iterate_features(self, x, batch_size, progress, devices)), axis=0)


@functools.partial(jax.jit, static_argnames=("plan",))
def _run(params, x, plan):
    """The feature map; ``plan`` = (steps, dims, kind, feature_dim) is static and hashable, so feature maps of
    equal architectures (any key) share one compiled function."""
    steps, all_dims, kind, feature_dim = plan
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    c = x.shape[-1]
    state = FeatureState(phi=x / math.sqrt(c), psi=None, var=jnp.sum(x * x, axis=-1) / c)
    for step, p, dims in zip(steps, params["steps"], all_dims[:-1], strict=True):
        state = step.apply(p, state, dims)
    out = state.psi if kind == "ntk" else state.phi
    if out is None:  # no trainable layer: the NTK is zero
        return jnp.zeros((x.shape[0], feature_dim), x.dtype)
    if params["final"] is not None:
        return project_apply(params["final"], out)
    pad = feature_dim - out.shape[-1]
    return jnp.pad(out, ((0, 0), (0, pad))) if pad else out


def features_on_devices(fmap, x, devices=None):
    """``fmap(x)`` with the batch split over ``devices`` (default ``jax.devices()``), returned as NumPy.

    A one-axis :class:`jax.sharding.Mesh` and a :class:`~jax.sharding.NamedSharding` along the batch axis place
    the batch (zero-padded to a multiple of the device count); the jitted map then runs on every device.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = list(devices or jax.devices())
    nd = len(devices)
    xb = np.asarray(x)
    m = len(xb)
    if nd == 1:
        return np.asarray(fmap(jax.device_put(xb, devices[0])))
    if m % nd:
        xb = np.concatenate([xb, np.zeros((nd - m % nd,) + xb.shape[1:], xb.dtype)])
    sharding = NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))
    return np.asarray(fmap(jax.device_put(xb, sharding)))[:m]


def iterate_features(fmap, x, batch_size: int = 256, progress: bool | None = None, devices=None):
    """Yield ``fmap`` of consecutive batches of ``x`` as NumPy arrays (sharded over devices, tqdm progress)."""
    from dualact.sketch.ridge import progress_bar

    n = len(x)
    for start in progress_bar(range(0, n, batch_size), total=-(-n // batch_size), desc="features", enable=progress):
        yield features_on_devices(fmap, x[start : start + batch_size], devices)


# ---- architecture walker ------------------------------------------------------------------------------------


def _float(v):
    return None if v is None else float(v)


def _steps(arch, *, degree, sketch_dim, nngp_dim, ntk_dim, method):
    from dualact.layers import activation as act_mod
    from dualact.layers import combinators, conv, dense, pooling
    from dualact.sketch.cntk_sketch import AvgPoolStep, ConvStep, FlattenStep, GlobalAvgPoolStep
    from dualact.sketch.taylor import taylor_approximation

    out = []

    def walk(layer):
        if isinstance(layer, combinators.Serial):
            for child in layer.layers:
                walk(child)
        elif isinstance(layer, combinators.Identity):
            pass
        elif isinstance(layer, dense.Dense):
            step = DenseStep(_float(layer.W_std), _float(layer.b_std), layer.parameterization)
            out.append((step, layer.out_dim))
        elif isinstance(layer, conv.Conv):
            step = ConvStep(layer.filter_shape, layer.strides, layer.padding, _float(layer.W_std),
                            _float(layer.b_std), layer.parameterization)
            out.append((step, layer.out_chan))
        elif isinstance(layer, pooling.AvgPool):
            out.append((AvgPoolStep(layer.window_shape, layer.strides, layer.padding, layer.normalize_edges), None))
        elif isinstance(layer, pooling.GlobalAvgPool):
            out.append((GlobalAvgPoolStep(), None))
        elif isinstance(layer, pooling.Flatten):
            out.append((FlattenStep(), None))
        elif isinstance(layer, act_mod.Activation) and not isinstance(layer, act_mod.Elementwise):
            dual = layer.dual
            name = getattr(dual, "name", layer.spec)
            if getattr(dual, "homogeneity", None) is None:
                raise UnsupportedArchitectureError(
                    f"activation {name!r} is not positively homogeneous, so Algorithm 1 (PolySketch of κ(ρ)) "
                    f"does not apply" + _HINT
                )
            params = {k: _float(v) for k, v in layer.params.items()}
            approx = taylor_approximation(dual, degree, method=method, **params)
            out.append((HomogeneousStep(dual, params, approx, sketch_dim, nngp_dim, ntk_dim), None))
        else:
            raise UnsupportedArchitectureError(
                f"layer {layer!r} is not supported by the sketch (supported: serial of Dense, Conv, AvgPool, "
                "GlobalAvgPool, Flatten, Identity and homogeneous Activation layers)" + _HINT
            )

    walk(arch)
    return out


def ntk_features(arch, feature_dim: int = 4096, degree: int = 8, key=None, *, sketch_dim: int | None = None,
                 method: str = "fold") -> FeatureMap:
    """Random features of the architecture's NTK: ``phi(x) @ phi(y).T ≈ kernel_fn(x, y, "ntk")``.

    Args:
      arch: a :mod:`dualact.layers` architecture (``serial(...)``).
      feature_dim: output dimension m.
      degree: polynomial degree q of κ and κ' (:func:`dualact.sketch.taylor.taylor_approximation`).
      key: a ``jax.random`` key (default ``PRNGKey(0)``).
      sketch_dim: PolySketch dimension per degree (default: about m/2).
      method: ``"fold"`` or ``"nnls"`` polynomial approximation of κ, κ'.

    Raises:
      UnsupportedArchitectureError: a layer or an activation the sketch cannot handle.
    """
    half = max((int(feature_dim) - 1) // 2, 1)
    steps = _steps(arch, degree=degree, sketch_dim=sketch_dim or half, nngp_dim=half,
                   ntk_dim=max(int(feature_dim) - 1 - half, 1), method=method)
    return FeatureMap(steps, feature_dim, jax.random.PRNGKey(0) if key is None else key, "ntk", arch)


def nngp_features(arch, feature_dim: int = 4096, degree: int = 8, key=None, *, sketch_dim: int | None = None,
                  method: str = "fold") -> FeatureMap:
    """Random features of the architecture's NNGP: ``phi(x) @ phi(y).T ≈ kernel_fn(x, y, "nngp")``.

    Same arguments as :func:`ntk_features`.

    >>> import jax, jax.numpy as jnp
    >>> from dualact import layers as L
    >>> arch = L.serial(L.Dense(1, W_std=1.4), L.Activation("normalized_gaussian", gamma=1.0), L.Dense(1))
    >>> phi = nngp_features(arch, feature_dim=128, degree=8)(jnp.eye(3))
    >>> phi.shape
    (3, 128)
    """
    m = int(feature_dim)
    steps = _steps(arch, degree=degree, sketch_dim=sketch_dim or m, nngp_dim=max(m - 1, 1), ntk_dim=1,
                   method=method)
    return FeatureMap(steps, feature_dim, jax.random.PRNGKey(0) if key is None else key, "nngp", arch)
