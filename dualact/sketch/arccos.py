"""Algorithm 1 of Han et al. (2022): subspace embeddings of homogeneous NNGP and NTK, layer by layer.

Features are carried through the network as a :class:`FeatureState`: NNGP features ``phi`` with
``phi(x)·phi(y) ≈ K(x, y)``, NTK features ``psi`` with ``psi(x)·psi(y) ≈ Θ(x, y)`` (``None`` while Θ ≡ 0) and,
where it is known exactly, the per-input (per-pixel) variance ``var = K(x, x)``. The kernel conventions are
those of :mod:`dualact.layers` (neural-tangents): inputs enter as ``x/√d``;

* :class:`DenseStep` is exact: ``phi' = [W·phi, b]``, ``psi' = [phi', W·psi]`` (concatenation realises a sum
  of kernels, a constant coordinate a bias);
* :class:`HomogeneousStep` is the sketch. For a positively homogeneous activation of degree k,
  T = (q11 q22)^(k/2)·κ(ρ) and Ṫ = (q11 q22)^((k−1)/2)·κ'(ρ). With u = phi/‖phi‖ (so ρ = ⟨u(x), u(y)⟩),
  PolySketch gives Z_j(u) with Z_j(u)·Z_j(v) ≈ ⟨u, v⟩^j, and

      phi' = q^(k/2)·SRHT(⊕_j √κ_j Z_j(u)),   φ̇ = q^((k−1)/2)·(⊕_j √κ'_j Z_j(u)),   psi' = TensorSRHT(psi, φ̇),

  with κ, κ' the non-negative polynomials of :mod:`dualact.sketch.taylor` and q the exact variance (or ‖phi‖²
  where the exact variance is not tracked, e.g. after average pooling). Biases are supported: the
  normalisation is done per layer, so the network needs not be homogeneous, only the activation.

Build feature maps with :func:`dualact.sketch.ntk_features`; the steps are the building blocks.

>>> import jax, jax.numpy as jnp
>>> from dualact import layers as L
>>> from dualact.sketch import ntk_features
>>> net = L.serial(L.Dense(1, W_std=1.4, b_std=0.1), L.Activation("relu"), L.Dense(1, W_std=1.4))
>>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
>>> phi = ntk_features(net, feature_dim=2048, degree=6, key=jax.random.PRNGKey(1))(x)
>>> phi.shape
(4, 2048)
>>> exact = net.kernel_fn(x, None, "ntk")
>>> bool(jnp.linalg.norm(phi @ phi.T - exact) / jnp.linalg.norm(exact) < 0.2)
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from dualact.errors import DualactError

__all__ = [
    "DenseStep",
    "Dims",
    "FeatureState",
    "HomogeneousStep",
    "Step",
    "UnsupportedArchitectureError",
    "project_init",
    "project_apply",
    "tensor_init",
    "tensor_apply",
]


class UnsupportedArchitectureError(DualactError, ValueError):
    """The architecture contains a layer (or a layer order) the sketch cannot turn into features."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FeatureState:
    """Features of one batch: ``phi`` (n, *spatial, d), ``psi`` (n, *spatial, d') or None, ``var`` (n, *spatial)."""

    phi: jax.Array
    psi: jax.Array | None
    var: jax.Array | None

    def replace(self, **kw) -> FeatureState:
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class Dims:
    """Static shape information propagated at build time."""

    phi: int
    psi: int | None  # None: Θ ≡ 0 (no trainable layer yet)
    spatial: tuple[int, ...]
    channels: int  # fan-in seen by the next affine layer (finite-network channels)
    exact_var: bool = True
    gaussian: bool = True  # an affine layer came last (an activation may follow)
    track_ntk: bool = True
    # lengths of the concatenated pieces phi / psi are made of (conv patches, [φ, ψ] blocks); None: one piece
    phi_segments: tuple[int, ...] | None = None
    psi_segments: tuple[int, ...] | None = None

    def segments(self, which: str) -> tuple[int, ...]:
        """Segment lengths of ``"phi"`` or ``"psi"`` (one segment when not recorded)."""
        seg = getattr(self, f"{which}_segments")
        return seg if seg is not None else (getattr(self, which),)


# ---- linear sketches (thin adapters over the sketch primitives) -------------------------------------------


def project_init(key, input_dim: int, output_dim: int, segments=None):
    """A random linear map R^input_dim → R^output_dim with E[⟨Sx, Sy⟩] = ⟨x, y⟩ (an SRHT; ``segments`` as in
    :func:`~dualact.sketch.srht.srht_init`)."""
    from dualact.sketch.srht import srht_init

    return srht_init(key, input_dim, output_dim, segments=segments)


def project_apply(params, x):
    from dualact.sketch.srht import srht_apply

    return srht_apply(params, x)


def tensor_init(key, dim1: int, dim2: int, output_dim: int, segments1=None, segments2=None):
    """A sketch of a ⊗ b: E[⟨S(a, b), S(a', b')⟩] = ⟨a, a'⟩⟨b, b'⟩ (a TensorSRHT)."""
    from dualact.sketch.tensor_srht import tensor_srht_init

    return tensor_srht_init(key, dim1, dim2, output_dim, segments1=segments1, segments2=segments2)


def tensor_apply(params, a, b):
    from dualact.sketch.tensor_srht import tensor_srht_apply

    return tensor_srht_apply(params, a, b)


def _flat(x):
    return x.reshape((-1, x.shape[-1]))


def _safe_pow(v, p: float):
    if p == 0:
        return jnp.ones_like(v)
    pos = v > 0
    return jnp.where(pos, jnp.where(pos, v, 1.0) ** p, 0.0)


# ---- steps ----------------------------------------------------------------------------------------------


class Step:
    """Base of the feature steps: hashable by :meth:`_key`, so equal networks share one compiled map."""

    def _key(self) -> tuple:
        raise NotImplementedError

    def __hash__(self):
        return hash((type(self), self._key()))

    def __eq__(self, other):
        return type(self) is type(other) and self._key() == other._key()


class DenseStep(Step):
    """Exact feature map of ``Dense`` (per pixel for images): concatenation and scaling, no randomness."""

    def __init__(self, W_std, b_std=None, parameterization: str = "ntk"):
        self.W = float(W_std)
        self.b = None if b_std is None else float(b_std)
        self.parameterization = parameterization

    def _key(self):
        return (self.W, self.b, self.parameterization)

    def init(self, key, dims: Dims, out_channels: int):
        extra = 0 if self.b is None else 1
        bias = (1,) if extra else ()
        phi = dims.phi + extra
        phi_seg = dims.segments("phi") + bias
        prev = () if dims.psi is None else dims.segments("psi")
        if not dims.track_ntk:
            psi, psi_seg = None, None
        elif self.parameterization == "ntk":
            psi, psi_seg = phi + (dims.psi or 0), phi_seg + prev
        else:
            psi, psi_seg = dims.phi + (dims.psi or 0) + extra, dims.segments("phi") + prev + bias
        return None, dataclasses.replace(dims, phi=phi, psi=psi, channels=out_channels, gaussian=True,
                                         phi_segments=phi_seg, psi_segments=psi_seg)

    def apply(self, params, s: FeatureState, dims: Dims) -> FeatureState:
        del params
        parts = [self.W * s.phi]
        if self.b is not None:
            parts.append(jnp.full(s.phi.shape[:-1] + (1,), self.b, s.phi.dtype))
        phi = jnp.concatenate(parts, axis=-1)
        var = None if s.var is None else self.W**2 * s.var + (self.b or 0.0) ** 2
        psi = None
        if dims.track_ntk:
            prev = [] if s.psi is None else [self.W * s.psi]
            if self.parameterization == "ntk":
                psi = jnp.concatenate([phi] + prev, axis=-1)
            else:
                ones = [] if self.b is None else [jnp.ones(s.phi.shape[:-1] + (1,), s.phi.dtype)]
                psi = jnp.concatenate([math.sqrt(dims.channels) * s.phi] + prev + ones, axis=-1)
        return FeatureState(phi=phi, psi=psi, var=var)


class HomogeneousStep(Step):
    """Algorithm 1's layer: PolySketch of the normalised features, weighted by √(Taylor coefficients).

    Args:
      dual: the activation's DualKernel (positively homogeneous), ``params`` its parameter values.
      approx: a :class:`~dualact.sketch.taylor.TaylorApprox` of κ and κ'.
      sketch_dim: PolySketch dimension per degree.
      nngp_dim, ntk_dim: output dimensions of the NNGP features and of the NTK (TensorSRHT) features.

    Inputs wider than 2·sketch_dim (concatenated conv patches) are first reduced to sketch_dim by an SRHT and
    re-normalised, so the PolySketch (several Hadamard transforms per degree) runs in dimension sketch_dim.
    """

    def __init__(self, dual, params: dict[str, Any], approx, sketch_dim: int, nngp_dim: int, ntk_dim: int):
        self.dual, self.params, self.approx = dual, dict(params), approx
        self.k = int(approx.homogeneity)
        self.sketch_dim, self.nngp_dim, self.ntk_dim = int(sketch_dim), int(nngp_dim), int(ntk_dim)
        self.q = approx.degree
        self.has_derivative = bool((approx.kappa_prime > 0).any())

    def _key(self):
        ident = id(getattr(self.dual, "module", self.dual))  # generated module: shared by equal catalog entries
        return (ident, tuple(sorted(self.params.items())), self.k, self.q, self.sketch_dim, self.nngp_dim,
                self.ntk_dim, self.has_derivative)

    @property
    def concat_dim(self) -> int:
        return 1 + self.q * self.sketch_dim

    @property
    def _concat_segments(self) -> tuple[int, ...]:
        """⊕_j w_j Z_j: a constant coordinate, then one sketch per degree."""
        return (1,) + (self.sketch_dim,) * self.q

    def init(self, key, dims: Dims):
        from dualact.sketch.polysketch import polysketch_init

        k_poly, k_proj, k_tens, k_pre = jax.random.split(key, 4)
        d_in = dims.phi
        params = {}
        if d_in > 2 * self.sketch_dim:  # e.g. conv patches (|k|·d): one SRHT first, then PolySketch in R^sketch_dim
            params["pre"] = project_init(k_pre, d_in, self.sketch_dim, dims.segments("phi"))
            d_in = self.sketch_dim
        params |= {
            "poly": polysketch_init(k_poly, d_in, self.sketch_dim, max(self.q, 1)),
            "proj": project_init(k_proj, self.concat_dim, self.nngp_dim, self._concat_segments),
            "w_nngp": jnp.sqrt(jnp.asarray(self.approx.kappa)),
            "w_ntk": jnp.sqrt(jnp.asarray(self.approx.kappa_prime)),
        }
        psi = None
        if dims.track_ntk and dims.psi is not None and self.has_derivative:
            params["tensor"] = tensor_init(k_tens, dims.psi, self.concat_dim, self.ntk_dim, dims.segments("psi"),
                                           self._concat_segments)
            psi = self.ntk_dim
        return params, dataclasses.replace(dims, phi=self.nngp_dim, psi=psi, gaussian=False, phi_segments=None,
                                           psi_segments=None)

    def _expand(self, Z, weights):
        """⊕_j w_j Z_j (degree 0: a constant coordinate)."""
        n = Z.shape[1]
        parts = [jnp.broadcast_to(weights[0].astype(Z.dtype), (n, 1))]
        parts += [weights[j].astype(Z.dtype) * Z[j] for j in range(1, self.q + 1)]
        return jnp.concatenate(parts, axis=-1)

    def apply(self, params, s: FeatureState, dims: Dims) -> FeatureState:
        from dualact.sketch.polysketch import polysketch_apply

        lead = s.phi.shape[:-1]
        phi = _flat(s.phi)
        norm2 = jnp.sum(phi * phi, axis=-1)
        norm = jnp.sqrt(norm2)
        u = phi / jnp.where(norm > 0, norm, 1.0)[:, None]
        var = norm2 if s.var is None else s.var.reshape(-1)
        if "pre" in params:
            u = project_apply(params["pre"], u)
            un = jnp.sqrt(jnp.sum(u * u, axis=-1, keepdims=True))
            u = u / jnp.where(un > 0, un, 1.0)
        Z = polysketch_apply(params["poly"], u)
        if self.q == 0:
            Z = Z[:1]
        feats = self._expand(Z, params["w_nngp"])
        new_phi = project_apply(params["proj"], feats) * _safe_pow(var, self.k / 2)[:, None]
        new_psi = None
        if "tensor" in params and s.psi is not None:
            deriv = self._expand(Z, params["w_ntk"]) * _safe_pow(var, (self.k - 1) / 2)[:, None]
            new_psi = tensor_apply(params["tensor"], _flat(s.psi), deriv).reshape(lead + (-1,))
        new_var = None if s.var is None else self.dual.diag(s.var, **self.params).astype(s.var.dtype)
        return FeatureState(phi=new_phi.reshape(lead + (-1,)), psi=new_psi, var=new_var)
