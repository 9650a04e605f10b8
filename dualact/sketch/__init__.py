"""Sketches and random features for NNGP/NTK kernels.

Primitives (``srht``, ``tensor_srht``, ``polysketch``, ``countsketch``/``tensorsketch``, ``gaussian_sketch``),
single-layer dual-kernel features (Hermite, Monte Carlo), Algorithm 1 of Han et al. (2022) for whole
:mod:`dualact.layers` architectures (:func:`ntk_features`, :func:`nngp_features`; fully connected and CNN /
CNTK), the NTK Sketch and NTK random features of Zandieh et al. (2021), and streamed ridge regression.

>>> import jax, jax.numpy as jnp
>>> from dualact import layers as L, sketch
>>> arch = L.serial(L.Dense(1, W_std=1.5), L.Activation("relu"), L.Dense(1, W_std=1.5))
>>> phi = sketch.ntk_features(arch, feature_dim=512, degree=4, key=jax.random.PRNGKey(0))(jnp.ones((2, 3)))
>>> phi.shape
(2, 512)
"""

from dualact.sketch.arccos import UnsupportedArchitectureError
from dualact.sketch.cntk_sketch import myrtle_features
from dualact.sketch.countsketch import CountSketch, TensorSketch, countsketch, tensorsketch
from dualact.sketch.dual_features import hermite_dual, hermite_features, monte_carlo_dual, monte_carlo_features
from dualact.sketch.features import FeatureMap, features_on_devices, iterate_features, nngp_features, ntk_features
from dualact.sketch.gaussian import GaussianSketch, gaussian_sketch
from dualact.sketch.ntk_random_features import (
    leverage_gaussian,
    ntk_random_features,
    ntk_random_features_apply,
    ntk_random_features_init,
)
from dualact.sketch.ntk_sketch import NTKSketch, ntk_sketch, relu_ntk, relu_ntk_architecture
from dualact.sketch.polysketch import PolySketch, polysketch_apply, polysketch_init
from dualact.sketch.ridge import RidgeClassifier, RidgeRegression
from dualact.sketch.srht import SRHT, srht, srht_apply, srht_init
from dualact.sketch.taylor import TaylorApprox, approximation_error, taylor_approximation
from dualact.sketch.tensor_srht import TensorSRHT, tensor_srht, tensor_srht_apply, tensor_srht_init

__all__ = [
    "SRHT",
    "CountSketch",
    "FeatureMap",
    "GaussianSketch",
    "NTKSketch",
    "PolySketch",
    "RidgeClassifier",
    "RidgeRegression",
    "TaylorApprox",
    "TensorSRHT",
    "TensorSketch",
    "UnsupportedArchitectureError",
    "approximation_error",
    "countsketch",
    "features_on_devices",
    "gaussian_sketch",
    "hermite_dual",
    "hermite_features",
    "iterate_features",
    "leverage_gaussian",
    "monte_carlo_dual",
    "monte_carlo_features",
    "myrtle_features",
    "nngp_features",
    "ntk_features",
    "ntk_random_features",
    "ntk_random_features_apply",
    "ntk_random_features_init",
    "ntk_sketch",
    "polysketch_apply",
    "polysketch_init",
    "relu_ntk",
    "relu_ntk_architecture",
    "srht",
    "srht_apply",
    "srht_init",
    "taylor_approximation",
    "tensor_srht",
    "tensor_srht_apply",
    "tensor_srht_init",
    "tensorsketch",
]
