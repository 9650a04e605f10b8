"""Non-negative polynomial approximations of homogeneous dual activations, for sketching.

A positively homogeneous activation of degree k has T(q11, q12, q22) = (q11 q22)^(k/2)·κ(ρ) and
Ṫ = (q11 q22)^((k-1)/2)·κ'(ρ). The sketches (:mod:`dualact.sketch.arccos`) need κ and κ' as polynomials
Σ_j c_j ρ^j with c_j ≥ 0 (so that √c_j weights tensor-power features). The Taylor coefficients come from
the engine (:meth:`dualact.runtime.dual_kernel.DualKernel.taylor_coefficients`); two ways of closing the
truncated tail are offered:

* ``"fold"`` (default): keep the Taylor coefficients up to degree q and add the truncated tail to the top
  coefficient *of each parity*, using the exact values κ(±1) of the catalog. The polynomial is then exact at
  ρ = 1 and ρ = −1, coefficients stay non-negative, and the error on (−1, 1) is at most the Taylor tail.
* ``"nnls"``: a non-negative least-squares fit of the exact κ (resp. κ') on Chebyshev points of [−1, 1]
  (``scipy.optimize.nnls``), with the values at ρ = ±1 enforced by heavy weights.

For κ'_ReLU = (π − θ)/(2π) (arc-cosine κ0, infinite slope at ρ = 1) the Taylor tail decays like q^(-1/2);
``benchmarks/taylor_fit.py`` compares the two closures (max error on [−1, 1] and downstream NTK error).

>>> approx = taylor_approximation("relu", 8)
>>> approx.homogeneity, len(approx.kappa), bool((approx.kappa_prime >= 0).all())
(1, 9, True)
>>> round(float(approx.kappa_fn(1.0)), 12), round(float(approx.kappa_prime_fn(1.0)), 12)   # exact at ρ = 1
(0.5, 0.5)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dualact.sketch.srht import SketchArgumentError

__all__ = ["METHODS", "TaylorApprox", "approximation_error", "taylor_approximation"]

METHODS = ("fold", "nnls")


@dataclasses.dataclass(frozen=True)
class TaylorApprox:
    """Polynomials p(ρ) ≈ κ(ρ) and p'(ρ) ≈ κ'(ρ) with non-negative coefficients (lowest degree first).

    Attributes:
      name: catalog name of the dual kernel.
      homogeneity: k in T = (q11 q22)^(k/2)·κ(ρ).
      kappa, kappa_prime: float64 arrays of length ``degree + 1``.
      method: ``"fold"`` or ``"nnls"``.
      params: the activation parameters the coefficients were computed for.
    """

    name: str
    homogeneity: int
    kappa: np.ndarray
    kappa_prime: np.ndarray
    method: str
    params: tuple = ()

    @property
    def degree(self) -> int:
        return len(self.kappa) - 1

    def kappa_fn(self, rho):
        """The polynomial approximation of κ at ``rho`` (any array; JAX-traceable)."""
        return _polyval(self.kappa, rho)

    def kappa_prime_fn(self, rho):
        """The polynomial approximation of κ' at ``rho``."""
        return _polyval(self.kappa_prime, rho)


def _polyval(coeffs, rho):
    rho = jnp.asarray(rho)
    out = jnp.zeros_like(rho, dtype=jnp.result_type(rho, float))
    for c in coeffs[::-1]:
        out = out * rho + float(c)
    return out


def _resolve(dual):
    if isinstance(dual, str):
        from dualact import catalog

        return catalog.get(dual)
    return dual


def exact_functions(dual, params: dict):
    """``(κ, κ')`` of a homogeneous dual kernel as NumPy functions of ρ (float64), from the catalog formulas."""
    dual = _resolve(dual)

    def kappa(rho):
        with jax.enable_x64(True):
            rho = jnp.asarray(np.asarray(rho, np.float64))
            return np.asarray(dual.nngp(jnp.ones_like(rho), rho, jnp.ones_like(rho), **params), np.float64)

    def kappa_prime(rho):
        with jax.enable_x64(True):
            rho = jnp.asarray(np.asarray(rho, np.float64))
            return np.asarray(dual.ntk_factor(jnp.ones_like(rho), rho, jnp.ones_like(rho), **params), np.float64)

    return kappa, kappa_prime


def _fold(coeffs: np.ndarray, at_plus: float, at_minus: float) -> np.ndarray:
    """Add the truncated tail to the top even and top odd coefficient so that p(±1) equals the exact values."""
    c = np.array(coeffs, dtype=np.float64)
    q = len(c) - 1
    even_total, odd_total = (at_plus + at_minus) / 2, (at_plus - at_minus) / 2
    top_even = q if q % 2 == 0 else q - 1
    top_odd = q if q % 2 == 1 else q - 1
    even_tail = max(even_total - c[0::2].sum(), 0.0)
    odd_tail = max(odd_total - c[1::2].sum(), 0.0)
    c[top_even] += even_tail
    if top_odd >= 1:
        c[top_odd] += odd_tail
    else:  # degree 0: only exact at ρ = 1
        c[0] += odd_tail
    return c


def _nnls(fn, degree: int, n_points: int | None = None, endpoint_weight: float = 1e3) -> np.ndarray:
    """argmin_{c ≥ 0} Σ_i (f(ρ_i) − Σ_j c_j ρ_i^j)² on Chebyshev points, p(±1) = f(±1) via heavy weights."""
    from scipy.optimize import nnls

    n = n_points or max(400, 40 * (degree + 1))
    rho = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    rho = np.concatenate([rho, [1.0, -1.0]])
    w = np.ones_like(rho)
    w[-2:] = endpoint_weight
    y = fn(rho)
    A = rho[:, None] ** np.arange(degree + 1)[None, :]
    coef, _ = nnls(A * w[:, None], y * w, maxiter=50 * (degree + 1))
    return coef


@functools.lru_cache(maxsize=128)
def _cached(name_or_dual, degree: int, method: str, params: tuple):
    dual = _resolve(name_or_dual)
    kw = dict(params)
    if dual.homogeneity is None:
        from dualact.runtime.dual_kernel import NotHomogeneousError

        raise NotHomogeneousError(
            f"{dual.name} is not positively homogeneous: its kernel is not (q11 q22)^(k/2)·κ(ρ); use the Hermite "
            "features (dualact.sketch.hermite_features) or Monte-Carlo features instead"
        )
    kappa, kappa_prime = dual.taylor_coefficients(degree + 1, **kw)
    kappa = np.where(kappa > 1e-300, kappa, 0.0)[: degree + 1]
    kappa_prime = np.where(kappa_prime > 1e-300, kappa_prime, 0.0)[: degree + 1]
    f, fp = exact_functions(dual, kw)
    grid = np.linspace(-1.0, 1.0, 9)
    if np.max(np.abs(fp(grid))) == 0.0:  # σ' = 0 a.e. (step): the catalog's Ṫ drops δ-terms, so κ' ≡ 0
        kappa_prime = np.zeros_like(kappa_prime)
        fp = lambda r: np.zeros_like(np.asarray(r, np.float64))
    if method == "fold":
        ends = np.array([1.0, -1.0])
        k1, km1 = f(ends)
        kp1, kpm1 = fp(ends)
        kappa = _fold(kappa, float(k1), float(km1))
        kappa_prime = _fold(kappa_prime, float(kp1), float(kpm1))
    else:
        kappa = _nnls(f, degree)
        kappa_prime = _nnls(fp, degree) if kappa_prime.any() else kappa_prime
    return TaylorApprox(dual.name, int(dual.homogeneity), kappa, kappa_prime, method, params)


def taylor_approximation(dual, degree: int, method: str = "fold", **params) -> TaylorApprox:
    """Non-negative polynomial approximations of κ and κ' of a positively homogeneous dual kernel.

    Args:
      dual: catalog name (``"relu"``, ``"leaky_relu"``, ``"normalized_gaussian"``...) or a ``DualKernel``.
      degree: polynomial degree q (q + 1 coefficients).
      method: ``"fold"`` (Taylor series, tail folded into the top coefficients: exact at ρ = ±1) or
        ``"nnls"`` (non-negative least squares on [−1, 1]).
      **params: activation parameters (e.g. ``alpha=0.1``); the kernel's defaults otherwise.

    Raises:
      NotHomogeneousError: the kernel is not of the form (q11 q22)^(k/2)·κ(ρ).

    >>> a = taylor_approximation("normalized_gaussian", 6, gamma=1.0)
    >>> [round(float(c), 4) for c in a.kappa[:3]]            # e^{-γ} γ^j / j!
    [0.3679, 0.3679, 0.1839]
    """
    if method not in METHODS:
        raise SketchArgumentError(f"method must be one of {METHODS}; got {method!r}")
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 0:
        raise SketchArgumentError(f"degree must be a non-negative integer; got {degree!r}")
    dual = _resolve(dual)
    defaults = dict(getattr(dual, "defaults", {}))
    defaults.update(params)
    key = dual.name if _is_catalog_entry(dual) else dual
    return _cached(key, int(degree), method, tuple(sorted((k, float(v)) for k, v in defaults.items())))


def _is_catalog_entry(dual) -> bool:
    try:
        from dualact import catalog

        return dual.name in catalog.names() and not getattr(dual, "_bound", None)
    except Exception:
        return False


def approximation_error(approx: TaylorApprox, n: int = 20001, interval=(-1.0, 1.0)) -> dict[str, float]:
    """Max and RMS errors of both polynomials against the exact catalog functions on a uniform grid.

    >>> err = approximation_error(taylor_approximation("relu", 16))
    >>> err["kappa_max"] < 1e-3 < err["kappa_prime_max"] < 0.1
    True
    """
    dual = _resolve(approx.name)
    f, fp = exact_functions(dual, dict(approx.params))
    rho = np.linspace(*interval, n)
    e = np.abs(f(rho) - np.polynomial.polynomial.polyval(rho, approx.kappa))
    ep = np.abs(fp(rho) - np.polynomial.polynomial.polyval(rho, approx.kappa_prime))
    if not approx.kappa_prime.any():
        ep = np.zeros_like(ep)
    return {
        "kappa_max": float(e.max()),
        "kappa_rms": float(np.sqrt(np.mean(e**2))),
        "kappa_prime_max": float(ep.max()),
        "kappa_prime_rms": float(np.sqrt(np.mean(ep**2))),
    }
