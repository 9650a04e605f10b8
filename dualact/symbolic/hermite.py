"""Hermite fallback: scale-dependent Hermite coefficients of σ and their Chebyshev tables.

For σ without a closed-form dual kernel the engine falls back to the Mehler/Hermite series

    K(a, b, c) = Σ_j c_j(√a) c_j(√b) ρ^j,        c_j(s) = E[σ(s z) h_j(z)],  z ~ N(0, 1),

with h_j = He_j/√(j!) and ρ = c/√(ab); the NTK factor uses d_j(s) = E[σ'(s z) h_j(z)] (σ' the a.e.
derivative). This module computes the coefficients and tabulates them for the JAX runtime
(:mod:`dualact.runtime.hermite_series`).

Method (engine-study Q3):

* c_j(s) by **composite Gauss–Legendre with panel edges on the kinks** of σ (at k/s in z) and on a geometric
  grid in the argument of σ, one node set for all j, h_j at every node by the normalised three-term
  recurrence h_{j+1} = (z h_j − √j h_{j−1})/√(j+1). Cramér's bound |h_j(z)| e^{−z²/4} ≤ 1.09 makes the
  truncation radius independent of j.
* :func:`hermite_coefficients` is the high-precision (mpmath) version, e.g. 40 digits for ReLU.
* :func:`build_table` tabulates the **normalised** coefficients ĉ_j(s) = c_j(s)/√E[σ(sz)²] (|ĉ_j| ≤ 1 by
  Parseval) as Chebyshev interpolants in log s over ``s_range`` (not re-expanded from unit scale, which
  diverges for s > √2; not in the radial monomial form, which diverges for kinked σ at norm > 1), plus a
  second Chebyshev interpolant in s on [0, s_min] for the small-scale limit. The table is built in float64
  (the coefficients are bounded by √E[σ²] and the quadrature is exact to ~1e-16 in these normalised units,
  far below any tolerance the series can certify); it is fast enough for an interactive ``dualact add``.
* J is chosen from ``tol`` by the Parseval tail t_J(s) = 1 − Σ_{j<J} ĉ_j(s)², which bounds the normalised
  truncation error by |ρ|^J·max_s t_J(s) (Cauchy–Schwarz); the Chebyshev degree by doubling the node count
  until the trailing coefficients are below tolerance.

Out of range: for s < s_min the small-scale interpolant (exact limit as s → 0, including σ with a kink at
0). Above the certified s_max the table continues, with the same J, up to ``s_extend`` (default 10⁴, variances
up to 1e8): there the truncation bound |ρ|^J·t_J(s) is recorded (``extension_*`` statistics) but not
certified against ``tol`` — for |ρ| ≤ 0.9 it is negligible, near |ρ| = 1 it grows with s since σ(s·) sharpens.
Beyond, the normalised coefficients are clamped at s_extend (the build records the resulting error at
2·s_extend and 10·s_extend, which is small for σ with a positively homogeneous limit, e.g. tanh → sign).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
import zipfile
from collections.abc import Sequence
from typing import Any

import mpmath
import numpy as np
import sympy as sp

from dualact.errors import DerivationError
from dualact.symbolic.quadrature import (
    _X_GEO,
    _numpy_log_abs,
    ae_derivative,
    find_kinks,
    gauss_legendre,
    gaussian_radius,
    lambdify_mpmath,
    lambdify_numpy,
    log_abs_function,
    mp_edges,
    mp_panel_rule,
)

__all__ = ["HermiteTable", "RadiusProfile", "build_table", "hermite_coefficients", "hermite_coefficients_f64"]

_FORMAT_VERSION = 1
_RHO_CERT = 0.99


# ------------------------------------------------------------------------------------------------
# High precision coefficients (mpmath)
# ------------------------------------------------------------------------------------------------
def hermite_coefficients(
    expr,
    s,
    J: int,
    kinks: Sequence[float] | None = None,
    dps: int = 30,
    *,
    n: int | None = None,
    L: float | None = None,
) -> list:
    """c_j(s) = E[σ(s z) h_j(z)] for j < J at ``dps`` digits (list of ``mpmath.mpf``).

    Composite Gauss–Legendre on [−L, L] with panel edges on the unit grid, on a geometric grid ±2^k/4
    in the argument of σ, and on the kinks (k/s in z); h_j by the three-term recurrence at every node.
    ``expr`` is a SymPy σ(x) with numeric parameters (or a scalar mpmath callable, then pass ``kinks``).

    >>> from dualact.symbolic.symbols import x
    >>> c = hermite_coefficients(sp.Max(x, 0), 1, 4, dps=30)
    >>> [round(float(v), 12) for v in c[:3]], abs(float(c[3])) < 1e-35  # 1/√(2π), 1/2, 1/(2√π); 0
    ([0.398942280401, 0.5, 0.282094791774], True)
    """
    if callable(expr) and not isinstance(expr, sp.Basic):
        f_mp = expr
        kinks = tuple(kinks or ())
    else:
        expr = sp.sympify(expr)
        kinks = find_kinks(expr) if kinks is None else tuple(kinks)
        f_mp = lambdify_mpmath(expr)
    J = int(J)
    work = dps + 8
    with mpmath.workdps(work):
        s = mpmath.mpf(s)
        if s == 0:
            v0 = f_mp(mpmath.mpf(0))
            return [+v0] + [mpmath.mpf(0)] * (J - 1)
        if L is None:  # e^{−z²/4} below 10^{−(dps+3)}, further where σ grows exponentially at this scale
            tail = (dps + 3) * math.log(10)
            L = math.ceil(2 * math.sqrt(tail)) + 2
            log_abs = log_abs_function(expr) if isinstance(expr, sp.Basic) else _mp_log_abs(f_mp)
            L = gaussian_radius([log_abs], [float(s)], tail=tail, floor=L, cap=max(float(L), _RADIUS_CAP))
        if n is None:
            n = int(0.6 * dps) + 12 + int(math.ceil(math.sqrt(2 * J)))
        edges = mp_edges([(s, kinks)], L, work)
        nodes, weights = mp_panel_rule(edges, n, work)
        norm = 1 / mpmath.sqrt(2 * mpmath.pi)
        sq = [mpmath.sqrt(j) for j in range(J + 1)]
        inv = [1 / v if v else mpmath.mpf(0) for v in sq]
        acc = [mpmath.mpf(0)] * J
        for z, w in zip(nodes, weights, strict=True):
            y = w * norm * mpmath.exp(-z * z / 2) * f_mp(s * z)
            if not y:
                continue
            h0, h1 = mpmath.mpf(1), z
            acc[0] += y
            if J > 1:
                acc[1] += y * z
            for j in range(1, J - 1):
                h0, h1 = h1, (z * h1 - sq[j] * h0) * inv[j + 1]
                acc[j + 1] += y * h1
        with mpmath.workdps(dps):
            return [+v for v in acc]


def _mp_log_abs(f_mp):
    """Vectorised log|f| of a scalar mpmath callable (−∞ where f is 0 or undefined)."""

    def log_abs(t):
        out = []
        for v in np.asarray(t, dtype=np.float64).ravel():
            try:
                y = abs(f_mp(mpmath.mpf(float(v))))
                out.append(float(mpmath.log(y)) if y else -math.inf)
            except (ZeroDivisionError, ValueError, TypeError):
                out.append(-math.inf)
        return np.asarray(out).reshape(np.shape(t))

    return log_abs


# ------------------------------------------------------------------------------------------------
# float64 coefficients, vectorised over scales and nodes
# ------------------------------------------------------------------------------------------------
_L_TABLE = 14.0  # truncation radius in z of the coefficient quadrature for σ without exponential growth
# Truncation radii follow σ's growth (quadrature.gaussian_radius): a σ growing like e^{β|x|} makes
# σ(sz)²φ(z) peak at z = 2βs, so the radius grows with the scale. The builder's radius leaves e^{−2·40} of
# the integrand's peak (e^{−40} of √E[σ²] per coefficient), at least _L_TABLE; the runtime's
# (hermite_series, ``HermiteTable.radii``) e^{−2·24.5}, at least 10, the radius of σ of at most quadratic
# growth. Nodes beyond the radius of their scale are dropped (where σ(sz) may overflow float64 while
# σ(sz)²φ(z) is negligible), and the quadrature weights are carried as √(w·φ(z)), which does not underflow
# before z ≈ 54 (σ(sz)²φ(z) is formed as (√(wφ)·σ(sz))²).
_TABLE_TAIL = 40.0
_RUNTIME_TAIL, _RUNTIME_RADIUS = 24.5, 10.0
_RADIUS_CAP = 64.0
_ROOT_PHI = (2 * math.pi) ** -0.25


def _root_weights(half, wi, z):
    """√(w·φ(z)) of Gauss–Legendre weights w = half·wi (no underflow of φ for |z| up to ~54)."""
    return np.sqrt(half * wi) * np.exp(-0.25 * z * z) * _ROOT_PHI


@dataclasses.dataclass(frozen=True)
class RadiusProfile:
    """Piecewise-constant truncation radius R(s) in z: ``steps`` = ((t_1, R_1), ..., (t_n, R_n)) with
    t_1 < ... < t_n; R(s) = R_i for the first i with log s ≤ t_i, R_n beyond t_n."""

    steps: tuple[tuple[float, float], ...]

    @property
    def max(self) -> float:
        return max(r for _, r in self.steps)

    def at(self, scales) -> np.ndarray:
        t = np.log(np.maximum(np.abs(np.asarray(scales, dtype=np.float64)), 1e-300))
        ts = np.array([v for v, _ in self.steps])
        rs = np.array([r for _, r in self.steps])
        return rs[np.minimum(np.searchsorted(ts, t, side="left"), ts.size - 1)]

    def to_json(self) -> list[list[float]]:
        return [[float(t), float(r)] for t, r in self.steps]


def _node_grid(scales: np.ndarray, kinks: Sequence[float], J: int, L: float = _L_TABLE):
    """Composite GL nodes and root weights √(w·φ) of shape (M, N) for every scale (fixed N: out-of-range
    edges collapse)."""
    n = _nodes_per_panel(J)
    base = np.arange(-L, L + 0.5, 1.0)
    xe = np.concatenate([_X_GEO, np.asarray(kinks, dtype=float)])
    with np.errstate(divide="ignore", invalid="ignore"):
        moving = np.clip(xe[None, :] / scales[:, None], -L, L)
    moving = np.where(np.isfinite(moving), moving, L)
    edges = np.sort(np.concatenate([np.broadcast_to(base, (scales.size, base.size)), moving], axis=1), axis=1)
    xi, wi = gauss_legendre(n)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = 0.5 * (hi - lo)
    z = 0.5 * (hi + lo) + half * xi
    return z.reshape(scales.size, -1), _root_weights(half, wi, z).reshape(scales.size, -1)


def _nodes_per_panel(J: int) -> int:
    # GL on unit-width panels must resolve h_j up to its top wavenumber √(2J+1)
    return 24 + int(math.ceil(0.5 * math.sqrt(2 * J + 1)))


def _shared_grid(s_max: float, J: int, L: float = _L_TABLE, with_edges: bool = False):
    """One node set (nodes, root weights √(w·φ)) valid for every scale s ≤ s_max of a σ whose kinks are all
    at 0.

    The geometric grid ±2^k/(4 s_max) around z = 0 is scale invariant: a feature of σ at |x| ~ X lies, for
    any s ≤ s_max, in a panel whose width is proportional to its distance from 0.
    """
    n = _nodes_per_panel(J)
    base = np.arange(-L, L + 0.5, 1.0)
    geo = _X_GEO / s_max
    edges = np.unique(np.concatenate([base, geo[np.abs(geo) < L], [0.0]]))
    xi, wi = gauss_legendre(n)
    lo, hi = edges[:-1, None], edges[1:, None]
    half = 0.5 * (hi - lo)
    z = 0.5 * (hi + lo) + half * xi
    r = _root_weights(half, wi, z).ravel()
    return (edges, z.ravel(), r) if with_edges else (z.ravel(), r)


def _weighted(f, scales: np.ndarray, z: np.ndarray, r: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """g = √(w·φ(z))·f(s z) (shape (M, N)) at the nodes within the radius of their scale, 0 elsewhere: σ(sz)
    may overflow float64 there, where σ(sz)²φ(z) is negligible (and would be re-evaluated in mpmath for
    nothing)."""
    zz = np.broadcast_to(z, (scales.size, z.shape[-1]))
    rr = np.broadcast_to(r, zz.shape)
    keep = (rr > 0) & (np.abs(zz) <= radii[:, None])
    out = np.zeros(zz.shape)
    out[keep] = rr[keep] * f((scales[:, None] * zz)[keep])
    return out


def _hermite_matrix(z: np.ndarray, J: int) -> np.ndarray:
    """h_j(z_i) for j < J (shape (J, N)) by the normalised three-term recurrence."""
    H = np.empty((J, z.size))
    H[0] = 1.0
    if J > 1:
        H[1] = z
    for j in range(1, J - 1):
        H[j + 1] = (z * H[j] - math.sqrt(j) * H[j - 1]) * (1.0 / math.sqrt(j + 1))
    return H


def _scale_radii(f, scales: np.ndarray) -> np.ndarray:
    """The builder's truncation radius of f at every scale (numpy log|f|)."""
    la = [_numpy_log_abs(f)]
    return np.array([gaussian_radius(la, [s], tail=_TABLE_TAIL, floor=_L_TABLE, cap=_RADIUS_CAP) for s in scales])


def hermite_coefficients_f64(
    f, scales, J: int, kinks: Sequence[float] = (), radii=None
) -> tuple[np.ndarray, np.ndarray]:
    """c_j(s) for j < J at every scale (float64), and E[f(s z)²]: (c of shape (M, J), E of shape (M,)).

    ``f`` is a vectorised numpy callable. Accuracy ~1e-16·√E[f(sz)²] per coefficient. When every kink is
    at 0 one node set serves all scales (a single matrix product); otherwise each scale gets its own
    panels with edges on k/s. ``radii``: truncation radius in z per scale (default: at least
    :data:`_L_TABLE`, larger where f grows exponentially, :func:`~dualact.symbolic.quadrature.gaussian_radius`).
    """
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    radii = _scale_radii(f, np.abs(scales)) if radii is None else np.broadcast_to(radii, scales.shape)
    L = float(np.max(radii, initial=_L_TABLE))
    if all(k == 0 for k in kinks):
        z, r = _shared_grid(float(np.max(np.abs(scales))), J, L)
        g = _weighted(f, scales, z, r, radii)
        return (g * r) @ _hermite_matrix(z, J).T, np.sum(g * g, axis=1)
    z, r = _node_grid(scales, kinks, J, L)
    g = _weighted(f, scales, z, r, radii)
    E = np.sum(g * g, axis=1)
    y = g * r
    c = np.empty((scales.size, J))
    h0 = np.ones_like(z)
    h1 = z.copy()
    c[:, 0] = y.sum(axis=1)
    if J > 1:
        c[:, 1] = np.einsum("mn,mn->m", y, h1)
    for j in range(1, J - 1):
        h0, h1 = h1, (z * h1 - math.sqrt(j) * h0) * (1.0 / math.sqrt(j + 1))
        c[:, j + 1] = np.einsum("mn,mn->m", y, h1)
    return c, E


class _Coefficients:
    """Normalised coefficients ĉ_j(s) = c_j(s)/√E[f(sz)²] of one function, with the node set and the Hermite
    matrix cached across calls.

    All scales share one node set (:func:`_shared_grid`, out to the largest radius of ``profile``) and one
    Hermite matrix, so the coefficients are a single matrix product. A kink k ≠ 0 falls at z = k/s, which
    depends on s: for every scale the panel that contains it is dropped from the shared sum and replaced by
    two sub-panels split at the kink, whose Hermite values come from a small separate recurrence.
    """

    def __init__(self, f, kinks: Sequence[float], J: int, s_top: float, profile: RadiusProfile | None = None):
        self.profile = RadiusProfile(((math.inf, _L_TABLE),)) if profile is None else profile
        self.f, self.J, self.s_top = f, J, s_top
        self.kinks = tuple(k for k in kinks if k != 0)
        self.edges, self.z, self.r = _shared_grid(s_top, J, self.profile.max, with_edges=True)
        self.n = _nodes_per_panel(J)
        self.H = _hermite_matrix(self.z, J).T  # (N, J)

    def _split(self, scales):
        """Per-scale replacement panels for the kinks: (mask (M, P), extra z (M, X), extra √(w·φ) (M, X))."""
        e, n = self.edges, self.n
        xi, wi = gauss_legendre(n)
        L = e[-1]
        mask = np.ones((scales.size, e.size - 1))
        rows = []
        for m, s in enumerate(scales):
            by_panel: dict[int, list[float]] = {}
            for k in self.kinks:
                v = k / s
                if abs(v) >= L:
                    continue
                p = int(np.searchsorted(e, v, side="right")) - 1
                if e[p] != v:
                    by_panel.setdefault(p, []).append(v)
            zz, rr = [], []
            for p, vs in by_panel.items():
                mask[m, p] = 0.0
                cuts = [e[p], *sorted(vs), e[p + 1]]
                for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                    half = 0.5 * (hi - lo)
                    zz.append(0.5 * (hi + lo) + half * xi)
                    rr.append(_root_weights(half, wi, zz[-1]))
            rows.append((np.concatenate(zz), np.concatenate(rr)) if zz else (np.zeros(0), np.zeros(0)))
        X = max(r[0].size for r in rows)
        zx = np.zeros((scales.size, X))
        rx = np.zeros((scales.size, X))
        for m, (zz, rr) in enumerate(rows):
            zx[m, : zz.size] = zz
            rx[m, : rr.size] = rr
        return mask, zx, rx

    def __call__(self, scales, J: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        J = self.J if J is None else J
        scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
        radii = self.profile.at(scales)
        if np.max(np.abs(scales)) > self.s_top:
            c, E = hermite_coefficients_f64(self.f, scales, J, self.kinks, radii)
        else:
            g = _weighted(self.f, scales, self.z, self.r, radii)
            if self.kinks:
                mask, zx, rx = self._split(scales)
                g = g * np.repeat(mask, self.n, axis=1)
            E = np.sum(g * g, axis=1)
            c = (g * self.r) @ self.H[:, :J]
            if self.kinks and zx.shape[1]:
                gx = np.stack([_weighted(self.f, scales[m : m + 1], zx[m], rx[m], radii[m : m + 1])[0]
                               for m in range(scales.size)])
                yx = gx * rx
                E = E + np.sum(gx * gx, axis=1)
                h0, h1 = np.ones_like(zx), zx
                c[:, 0] += yx.sum(axis=1)
                if J > 1:
                    c[:, 1] += np.sum(yx * h1, axis=1)
                for j in range(1, J - 1):
                    h0, h1 = h1, (zx * h1 - math.sqrt(j) * h0) * (1.0 / math.sqrt(j + 1))
                    c[:, j + 1] += np.sum(yx * h1, axis=1)
        tiny = ~(E > 1e-290)
        nrm = np.sqrt(np.where(tiny, 1.0, E))
        chat = np.where(tiny[:, None], 0.0, c / nrm[:, None])
        return chat, E


# ------------------------------------------------------------------------------------------------
# Chebyshev helpers
# ------------------------------------------------------------------------------------------------
def _lobatto(M: int) -> np.ndarray:
    """Chebyshev–Lobatto points cos(πk/(M−1)), k = 0..M−1 (descending from 1 to −1)."""
    return np.cos(np.pi * np.arange(M) / (M - 1))


def _lobatto_coeffs(values: np.ndarray) -> np.ndarray:
    """Chebyshev coefficients (last axis) of the interpolant through values at the Lobatto points."""
    M = values.shape[-1]
    k = np.arange(M)
    C = np.cos(np.pi * np.outer(k, k) / (M - 1))
    wts = np.ones(M)
    wts[0] = wts[-1] = 0.5
    a = (2.0 / (M - 1)) * (values * wts) @ C.T
    a[..., 0] *= 0.5
    a[..., -1] *= 0.5
    return a


def _gauss_cheb(M: int) -> np.ndarray:
    """Chebyshev points of the first kind cos(π(k+½)/M)."""
    return np.cos(np.pi * (np.arange(M) + 0.5) / M)


def _gauss_cheb_coeffs(values: np.ndarray) -> np.ndarray:
    M = values.shape[-1]
    k = np.arange(M)
    C = np.cos(np.pi * np.outer(k, k + 0.5) / M)
    a = (2.0 / M) * values @ C.T
    a[..., 0] *= 0.5
    return a


def chebval_rows(coef: np.ndarray, tau) -> np.ndarray:
    """Σ_m coef[j, m] T_m(τ) for every row j and every τ (Clenshaw) → shape (len(τ), J)."""
    tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))[:, None]
    b1 = np.zeros((tau.shape[0], coef.shape[0]))
    b2 = np.zeros_like(b1)
    for m in range(coef.shape[1] - 1, 0, -1):
        b1, b2 = 2 * tau * b1 - b2 + coef[:, m], b1
    return tau * b1 - b2 + coef[:, 0]


def _truncate_len(A: np.ndarray, tol: float) -> tuple[int, float]:
    """Smallest column count K with Σ_{m≥K} ‖A[:, m]‖₂ ≤ tol; return (K, dropped sum)."""
    col = np.sqrt(np.sum(A * A, axis=0))
    tail = np.concatenate([np.cumsum(col[::-1])[::-1], [0.0]])  # tail[m] = Σ_{k≥m} col[k]
    K = A.shape[1]
    while K > 1 and tail[K - 1] <= tol:
        K -= 1
    return K, float(tail[K])


# ------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class HermiteTable:
    """Chebyshev tables of the normalised Hermite coefficients of σ (and of σ' for the NTK).

    log s ∈ [t0, t1] is split into P equal pieces; on piece p = ⌊P(t − t0)/(t1 − t0)⌋ with local variable
    τ ∈ [−1, 1]:  ĉ_j(s) = Σ_m c_cheb[p, j, m] T_m(τ). For 0 < s < s_min = e^{t0}:
    ĉ_j(s) = Σ_m c_small[j, m] T_m(2s/s_min − 1). For s > e^{t1}: clamped at s = e^{t1}.
    ``d_cheb``/``d_small`` hold d̂_j(s) (σ' instead of σ) the same way. Normalised means divided by
    √E[σ(sz)²] (resp. √E[σ'(sz)²]); the runtime multiplies by the exact one-dimensional value.

    Attributes:
      t_range: (t0, t1) = (log s_min, log s_extend), the whole table (certified up to ``meta["s_range"]``).
      c_cheb, d_cheb: float64 arrays (P, J, M) and (P, J_ntk, M_ntk), zero padded in m.
      c_small, d_small: float64 arrays (J, m) and (J_ntk, m_ntk).
      meta: scalar metadata (J, node counts, certified error bounds, ...); JSON-serialisable, no timings.
      build_seconds: wall-clock build time (not saved, so that rebuilt files are byte-identical).
    """

    t_range: tuple[float, float]
    c_cheb: np.ndarray
    d_cheb: np.ndarray
    c_small: np.ndarray
    d_small: np.ndarray
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    build_seconds: float | None = None

    @property
    def J(self) -> int:
        return int(self.c_cheb.shape[1])

    @property
    def J_ntk(self) -> int:
        return int(self.d_cheb.shape[1])

    @property
    def pieces(self) -> int:
        return int(self.c_cheb.shape[0])

    @property
    def radii(self) -> tuple[tuple[float, float], ...]:
        """The runtime's truncation radius in z as :attr:`RadiusProfile.steps` ((log s, R) pairs): 10 unless σ
        grows exponentially (tables without the record predate it and use 10)."""
        steps = self.meta.get("radii") or [[math.inf, _RUNTIME_RADIUS]]
        return tuple((float(t), float(r)) for t, r in steps)

    @property
    def s_range(self) -> tuple[float, float]:
        return (math.exp(self.t_range[0]), math.exp(self.t_range[1]))

    def coefficients(self, s, which: str = "c") -> np.ndarray:
        """Normalised ĉ_j(s) (``which="c"``) or d̂_j(s) (``"d"``) for an array of s > 0 (numpy reference)."""
        big, small = (self.c_cheb, self.c_small) if which == "c" else (self.d_cheb, self.d_small)
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        t0, t1 = self.t_range
        P = big.shape[0]
        t = np.clip(np.log(np.maximum(s, 1e-300)), t0, t1)
        u = (t - t0) / (t1 - t0) * P
        p = np.clip(np.floor(u), 0, P - 1).astype(int)
        tau = 2 * (u - p) - 1
        out = np.empty((s.size, big.shape[1]))
        for i in range(s.size):
            out[i] = chebval_rows(big[p[i]], tau[i])[0]
        lo = s < math.exp(t0)
        if np.any(lo):
            out[lo] = chebval_rows(small, 2 * s[lo] / math.exp(t0) - 1)
        return out

    # ---- serialisation -----------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """Scalar metadata for the Derivation record's ``hermite`` field (deterministic, no timings)."""
        d = dict(self.meta)
        d["t_range"] = [float(self.t_range[0]), float(self.t_range[1])]
        d["J"] = self.J
        d["J_ntk"] = self.J_ntk
        d["pieces"] = self.pieces
        d["format_version"] = _FORMAT_VERSION
        return json.loads(json.dumps(d, sort_keys=True))

    def save(self, path) -> None:
        """Write a deterministic ``.npz`` (fixed zip dates and member order, no pickles)."""
        arrays = {
            "c_cheb": self.c_cheb,
            "c_small": self.c_small,
            "d_cheb": self.d_cheb,
            "d_small": self.d_small,
            "meta": np.frombuffer(json.dumps(self.to_json_dict(), sort_keys=True).encode(), dtype=np.uint8),
            "t_range": np.asarray(self.t_range, dtype=np.float64),
        }
        with open(path, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())

    @classmethod
    def load(cls, path) -> HermiteTable:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            t = z["t_range"]
            return cls(
                t_range=(float(t[0]), float(t[1])),
                c_cheb=z["c_cheb"].copy(),
                d_cheb=z["d_cheb"].copy(),
                c_small=z["c_small"].copy(),
                d_small=z["d_small"].copy(),
                meta={k: v for k, v in meta.items() if k not in _DERIVED_KEYS},
            )


_DERIVED_KEYS = ("t_range", "J", "J_ntk", "pieces", "format_version")


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------
def _tails(chat: np.ndarray) -> np.ndarray:
    """t_J(s) = 1 − Σ_{j<J} ĉ_j(s)² for J = 0..Jcap (shape (M, Jcap+1)), floored at 0 (0 where ĉ ≡ 0)."""
    cs = np.concatenate([np.zeros((chat.shape[0], 1)), np.cumsum(chat * chat, axis=1)], axis=1)
    norm = np.where(np.any(chat != 0, axis=1), 1.0, 0.0)[:, None]
    return np.maximum(norm - cs, 0.0)


_FLOOR = 64 * np.finfo(float).eps  # resolution of the float64 Parseval tail


def _piece_nodes(t0, t1, P, M):
    """Lobatto nodes of every piece: array (P, M) of log s."""
    e = np.linspace(t0, t1, P + 1)
    mid, half = 0.5 * (e[1:] + e[:-1]), 0.5 * (e[1:] - e[:-1])
    return mid[:, None] + half[:, None] * _lobatto(M)[None, :]


def _build_one(f, kinks, tol, t0, t1, P, max_terms, m_start, m_max, deadline, t_cert=None, profile=None):
    """Piecewise Chebyshev tables of ĉ_j(s) for one function f. Returns (big (P,J,M), small (J,m), stats).

    J and the certified statistics use the scales s ≤ e^{t_cert} (default: all); the table runs to e^{t1}.
    """
    s_top = math.exp(t1)
    t_cert = t1 if t_cert is None else t_cert
    # 1. J from the Parseval tails on the coarse grid (certified range only)
    coeffs = _Coefficients(f, kinks, max_terms, s_top, profile)
    M = m_start
    tk = _piece_nodes(t0, t1, P, M)
    chat, _ = coeffs(np.exp(tk.ravel()))
    in_cert = tk.ravel() <= t_cert + 1e-12
    tail_all = np.max(_tails(chat[in_cert]), axis=0) + _FLOOR
    bound = _RHO_CERT ** np.arange(tail_all.size) * tail_all
    ok = np.nonzero(bound <= tol / 2)[0]
    J, tol_met = (max(2, int(ok[0])), True) if ok.size else (max_terms, False)
    vals = [chat[p * M : (p + 1) * M, :J] for p in range(P)]  # per piece, (M_p, J)
    # 2. per piece: double the Lobatto node count until the trailing coefficients are negligible
    tol_cheb = tol / 8
    Ms, conv, coefs = [], [], []
    for p in range(P):
        Mp, v = M, vals[p]
        e0, e1 = t0 + (t1 - t0) * p / P, t0 + (t1 - t0) * (p + 1) / P
        while True:
            A = _lobatto_coeffs(v.T)  # (J, Mp)
            col = np.sqrt(np.sum(A * A, axis=0))
            converged = float(np.sum(col[-max(2, Mp // 8) :])) <= tol_cheb / 4
            if converged or Mp >= m_max or time.monotonic() > deadline:
                break
            M2 = 2 * Mp - 1
            tk2 = 0.5 * (e0 + e1) + 0.5 * (e1 - e0) * _lobatto(M2)
            new, _ = coeffs(np.exp(tk2[1::2]), J)
            full = np.empty((M2, J))
            full[0::2], full[1::2] = v, new
            Mp, v = M2, full
        Ms.append(Mp)
        conv.append(converged)
        coefs.append(A)
    # common column count: what the converged pieces need (a piece that did not converge is inaccurate
    # anyway, and its measured error below includes this truncation)
    lens = [_truncate_len(A, tol_cheb)[0] for A in coefs]
    K = max([k for k, ok in zip(lens, conv, strict=True) if ok] or lens)
    big = np.zeros((P, J, K))
    for p, A in enumerate(coefs):
        k = min(K, A.shape[1])
        big[p, :, :k] = A[:, :k]
    # 3. independent check at the midpoints between the finest nodes of every piece
    tm, approx = [], []
    for p in range(P):
        e0, e1 = t0 + (t1 - t0) * p / P, t0 + (t1 - t0) * (p + 1) / P
        nodes = 0.5 * (e0 + e1) + 0.5 * (e1 - e0) * _lobatto(Ms[p])
        mids = 0.5 * (nodes[:-1] + nodes[1:])
        tm.append(mids)
        approx.append(chebval_rows(big[p], (2 * mids - e0 - e1) / (e1 - e0)))
    tm = np.concatenate(tm)
    exact_mid, _ = coeffs(np.exp(tm), J)
    err_mid = np.sqrt(np.sum((exact_mid - np.concatenate(approx)) ** 2, axis=1))
    tails_mid = _tails(exact_mid)[:, J]
    s_mid = np.exp(tm)
    core = (s_mid >= 0.25) & (s_mid <= 4.0)
    cert = tm <= t_cert + 1e-12
    ext = ~cert
    # 4. small-scale piece: Chebyshev in s on [0, s_min] (first-kind nodes avoid s = 0)
    s_min = math.exp(t0)
    ms = 12
    while True:
        vals_s, _ = coeffs(0.5 * s_min * (1 + _gauss_cheb(ms)), J)
        small = _gauss_cheb_coeffs(vals_s.T)
        col = np.sqrt(np.sum(small * small, axis=0))
        if float(np.sum(col[-3:])) <= tol_cheb / 4 or ms >= 48:
            break
        ms *= 2
    small = small[:, : _truncate_len(small, tol_cheb)[0]].copy()
    # 5. clamping error above the table
    with np.errstate(all="ignore"):  # NaN where E[f(sz)²] overflows there (exponentially growing f)
        far, _ = _Coefficients(f, kinks, J, 10 * s_top, profile)(np.array([2 * s_top, 10 * s_top]))
    at_max = chebval_rows(big[-1], np.array([1.0]))[0]
    clamp = np.sqrt(np.sum((far - at_max) ** 2, axis=1))
    coarse_tail = _tails(chat)[:, J] if chat.shape[1] > J else np.zeros(chat.shape[0])
    tmax = float(max(np.max(coarse_tail[in_cert]), np.max(tails_mid[cert]))) + _FLOOR
    if np.any(ext):
        t_ext = float(max(np.max(coarse_tail[~in_cert], initial=0.0), np.max(tails_mid[ext]))) + _FLOOR
        extension = {
            "extension_tail_rho099": _RHO_CERT**J * t_ext,
            "extension_tail_rho09": 0.9**J * t_ext,
            "extension_tail_rho1": t_ext,
            "extension_interp_error_l2": float(np.max(err_mid[ext])),
        }
    else:
        extension = {}
    tcore = float(np.max(tails_mid[core])) + _FLOOR if np.any(core) else None
    return (
        big,
        small,
        {
            "J": J,
            "tol_met": bool(tol_met and all(conv)),
            "chebyshev_pieces": P,
            "chebyshev_nodes": [int(m) for m in Ms],
            "chebyshev_terms": int(K),
            "chebyshev_converged": bool(all(conv)),
            "interp_error_l2": float(np.max(err_mid[cert])),
            "interp_error_l2_q16": float(np.max(err_mid[core])) if np.any(core) else None,
            "small_s_terms": int(small.shape[1]),
            "tail_rho099": _RHO_CERT**J * tmax,
            "tail_rho1": tmax,
            "tail_rho099_q16": None if tcore is None else _RHO_CERT**J * tcore,
            "tail_rho1_q16": tcore,
            "clamp_error_2x_smax": float(clamp[0]),
            "clamp_error_10x_smax": float(clamp[1]),
            **extension,
        },
    )


_FINITE_LIMIT = 1e290  # E[σ(sz)²] above this is treated as overflowing (the kernel multiplies two norms)


def _finite_scale_limit(
    fns, kinks, t0: float, t1: float, probes: int = 241, stride: int = 10, profile: RadiusProfile | None = None
) -> float:
    """The largest log-scale t ≤ t1 below which E[f(e^t z)²] stays finite for every f (t1 if it does), on a
    grid of ``probes`` points: every ``stride``-th point first, then the points just below the first failure
    (E[f(sz)²] overflows from some scale on; a σ whose float64 formula overflows is evaluated in mpmath, so
    each probe can be slow)."""
    t = np.linspace(t0, t1, probes)

    def finite(idx):
        ok = np.ones(len(idx), bool)
        with np.errstate(all="ignore"):
            for fn in fns:
                scales = np.exp(t[idx])
                radii = None if profile is None else profile.at(scales)
                E = hermite_coefficients_f64(fn, scales, 1, kinks, radii)[1]
                ok &= np.isfinite(E) & (E < _FINITE_LIMIT)
        return ok

    coarse = np.unique(np.r_[np.arange(0, probes, stride), probes - 1])
    ok = finite(coarse)
    if ok.all():
        return t1
    first = int(np.argmin(ok))
    if first == 0:
        raise DerivationError(f"no Hermite table: E[σ(sz)²] is not finite in float64 at the smallest scale s = "
                              f"{math.exp(t0):.3g} (σ undefined or overflowing on a set the quadrature sees)")
    fine = np.arange(coarse[first - 1] + 1, coarse[first])
    fine_ok = finite(fine) if fine.size else np.ones(0, bool)
    bad = coarse[first] if fine_ok.all() else fine[int(np.argmin(fine_ok))]
    return float(t[bad - 1])


class _Radii:
    """Truncation radii in z of σ and σ' at log-scales t_0 < ... < t_n: the builder's (tail e^{−40}, at least
    :data:`_L_TABLE`) and the runtime's (tail e^{−24.5}, at least :data:`_RUNTIME_RADIUS`), both at most
    :data:`_RADIUS_CAP`, and the :class:`RadiusProfile` of a table up to a given scale (on (t_{i−1}, t_i]
    the larger radius of the two ends)."""

    def __init__(self, exprs, t0: float, t1: float, probes: int = 97):
        t = np.linspace(t0, t1, probes)
        las = [log_abs_function(e) for e in exprs]
        builder, runtime = [], []
        for v in t:  # ascending; beyond the first scale at the cap the table cannot go (see reach)
            b, r = gaussian_radius(las, [math.exp(v)], tail=(_TABLE_TAIL, _RUNTIME_TAIL),
                                   floor=(_L_TABLE, _RUNTIME_RADIUS), cap=_RADIUS_CAP)
            builder.append(b)
            runtime.append(r)
            if b >= _RADIUS_CAP:
                break
        self.t, self.builder, self.runtime = t[: len(builder)], np.array(builder), np.array(runtime)

    def reach(self) -> float:
        """The largest t below which the builder's radius stays under the cap (t1 if it does)."""
        if self.builder[-1] < _RADIUS_CAP:
            return float(self.t[-1])
        if self.builder.size == 1:
            raise DerivationError(
                f"no Hermite table: σ(sz)²φ(z) is not negligible within |z| ≤ {_RADIUS_CAP:g} at the smallest "
                f"scale s = {math.exp(self.t[0]):.3g} (σ grows too fast)"
            )
        return float(self.t[-2])

    def profiles(self, t_top: float) -> tuple[RadiusProfile, RadiusProfile]:
        """(builder, runtime) profiles for a table up to e^{t_top}."""
        k = min(int(np.searchsorted(self.t, t_top - 1e-12)), self.t.size - 1)
        return self._profile(self.builder[: k + 1]), self._profile(self.runtime[: k + 1])

    def _profile(self, radii) -> RadiusProfile:
        upper = np.maximum(radii, np.concatenate([radii[:1], radii[:-1]]))
        steps: list[tuple[float, float]] = []
        for t, r in zip(self.t, upper, strict=False):
            if steps and steps[-1][1] == r:
                steps[-1] = (float(t), float(r))
            else:
                steps.append((float(t), float(r)))
        return RadiusProfile(tuple(steps))


_CORE_SCALE = 4.0  # a table must reach this scale (variance 16), or its s_max if smaller
_SCALES_PER_PIECE = 60  # scales a piece of the table evaluates (coarse grid, one refinement, midpoints)


def _projected_seconds(fns, kinks, t_from: float, t_to: float, sample: int = 64, L: float = _L_TABLE) -> float:
    """Seconds the table would spend on log-scales (t_from, t_to], timed on ``sample`` nodes at three scales
    of that range (a float64 formula that overflows is re-evaluated in mpmath, more often at larger scales)."""
    scales = np.exp(np.linspace(t_from, t_to, 4)[1:])
    z, _ = _node_grid(scales, kinks, 1, L)
    pick = np.linspace(0, z.shape[1] - 1, sample).astype(int)
    with np.errstate(all="ignore"):
        for fn in fns:  # the first call of a re-evaluating callable builds its mpmath twin: not timed
            fn(scales[-1] * z[-1, pick[:: sample // 4]])
        start = time.monotonic()
        for fn in fns:
            fn((scales[:, None] * z[:, pick]).ravel())
    per_scale = (time.monotonic() - start) / scales.size * z.shape[1] / sample
    return per_scale * _SCALES_PER_PIECE * math.ceil((t_to - t_from) / 1.2)


def build_table(
    expr,
    derivative_expr=None,
    *,
    kinks: Sequence[float] | None = None,
    tol: float = 1e-10,
    s_range: tuple[float, float] = (math.sqrt(1e-3), math.sqrt(1e3)),
    s_extend: float | None = 1e4,
    max_terms: int = 640,
    pieces: int | None = None,
    time_budget: float = 40.0,
    m_start: int = 17,
    m_max: int = 129,
) -> HermiteTable:
    """Build the Chebyshev tables of ĉ_j(s) and d̂_j(s) for a SymPy σ(x) with numeric parameters.

    Args:
      expr: σ(x).
      derivative_expr: σ'(x) (a.e. derivative); default ``sympy.diff`` with Dirac deltas dropped.
      kinks: non-smooth points of σ and σ'; default :func:`find_kinks` of both.
      tol: target normalised error of the kernel for |ρ| ≤ 0.99: half for the series truncation, an eighth
        for the Chebyshev interpolation of each coefficient vector.
      s_range: (s_min, s_max): the certified range of the log-s interpolant, s = √variance.
      s_extend: the table continues above s_max to this scale with the same J, uncertified (its truncation
        bounds are recorded as ``extension_*``); ``None``: stop at s_max.
      max_terms: cap on J; if ``tol`` needs more, J = max_terms and ``meta["tol_met"]`` is False.
      pieces: number of equal pieces of the whole log-s range (default: pieces of length ≤ 1.2).
      time_budget: seconds after which the Chebyshev refinement stops (recorded as not converged).

    ``meta["nngp"]`` and ``meta["ntk"]`` record J, node and term counts, the certified normalised truncation
    bounds |ρ|^J·max_s t_J(s) at |ρ| = 0.99 (``tail_rho099``) and at |ρ| = 1 (``tail_rho1``), the same over
    s ∈ [1/4, 4] (``*_q16``), the interpolation error measured at the midpoints of the Chebyshev grids (ℓ2
    over j), the same bounds over the extension (``extension_*``) and the error of clamping above the table.
    The runtime computes |ρ| = 1 and the diagonal exactly.
    """
    start = time.monotonic()
    expr = sp.sympify(expr)
    if derivative_expr is None:
        derivative_expr = ae_derivative(expr)
    derivative_expr = sp.sympify(derivative_expr)
    if kinks is None:
        kinks = tuple(sorted(set(find_kinks(expr)) | set(find_kinks(derivative_expr))))
    kinks = tuple(float(k) for k in kinks)
    s_lo, s_hi = (float(v) for v in s_range)
    if not 0 < s_lo < s_hi:
        raise ValueError(f"s_range must satisfy 0 < s_min < s_max, got {s_range}")
    t0, t_cert = math.log(s_lo), math.log(s_hi)
    t_cert_requested = t_cert
    t1 = math.log(max(s_hi, float(s_extend))) if s_extend is not None else t_cert
    deadline = start + time_budget
    f = lambdify_numpy(expr)
    fd = lambdify_numpy(derivative_expr)
    radii = _Radii((expr, derivative_expr), t0, t1)
    t_reach = radii.reach()
    if t_reach < t1:  # σ grows faster than exponentially: the table stops where the quadrature cannot reach
        t1, t_cert = t_reach, min(t_cert, t_reach)
    dropped = None
    if t1 > t_cert:  # the extension, where a σ whose float64 formula overflows is evaluated in mpmath
        seconds = _projected_seconds((f, fd), kinks, t_cert, t1, L=radii.profiles(t1)[0].max)
        if seconds > 0.5 * (deadline - time.monotonic()):
            t1, dropped = t_cert, seconds
    t_top = _finite_scale_limit((f, fd), kinks, t0, t1, profile=radii.profiles(t1)[0])
    if t_top < t1:  # σ grows exponentially (exp(0.7x) + tanh(x)): E[σ(sz)²] overflows float64 beyond e^{t_top}
        t1, t_cert = t_top, min(t_cert, t_top)
        if t_top < min(math.log(_CORE_SCALE), t_cert_requested):
            raise DerivationError(
                f"no Hermite table: E[σ(sz)²] or E[σ'(sz)²] is not finite in float64 beyond s = {math.exp(t_top):.3g} "
                f"(variance {math.exp(2 * t_top):.3g}; the table must reach variance {_CORE_SCALE**2:g}): σ overflows "
                "there, or cannot be evaluated near a singular point"
            )
    if t1 < math.log(_CORE_SCALE) and t1 < t_cert_requested:
        raise DerivationError(
            f"no Hermite table: σ grows too fast for the quadrature beyond s = {math.exp(t1):.3g} (variance "
            f"{math.exp(2 * t1):.3g}; the table must reach variance {_CORE_SCALE**2:g})"
        )
    P = pieces if pieces is not None else max(1, int(math.ceil((t1 - t0) / 1.2)))
    profile, runtime_profile = radii.profiles(t1)
    build = (tol, t0, t1, P, max_terms, m_start, m_max, deadline, t_cert, profile)
    c_big, c_small, c_stats = _build_one(f, kinks, *build)
    d_big, d_small, d_stats = _build_one(fd, kinks, *build)
    meta = {
        "activation": sp.srepr(expr),
        "derivative": sp.srepr(derivative_expr),
        "kinks": list(kinks),
        "tol": float(tol),
        "s_range": [s_lo, math.exp(t_cert)],
        "s_extend": math.exp(t1),
        "max_terms": int(max_terms),
        "rho_certified": _RHO_CERT,
        "outside_range": "s<s_min: Chebyshev in s on [0,s_min]; s_max<s<=s_extend: tabulated with the same J, "
                         "not certified; s>s_extend: clamped at s_extend",
        **({} if dropped is None else {"extension_dropped": f"s_extend lowered to s_max: tabulating up to "
                                       f"{float(s_extend):g} would take ~{dropped:.0f} s (σ overflows float64 "
                                       "there and is evaluated in mpmath)"}),
        "quadrature": "composite Gauss-Legendre float64, edges on kinks and on a geometric x-grid, truncated "
                      f"at |z| <= {profile.max:g} (scale-dependent where σ grows exponentially)",
        "radii": runtime_profile.to_json(),
        "nngp": c_stats,
        "ntk": d_stats,
        "tail_rho099": max(c_stats["tail_rho099"], d_stats["tail_rho099"]),
        "tail_rho1": max(c_stats["tail_rho1"], d_stats["tail_rho1"]),
        "interp_error": max(c_stats["interp_error_l2"], d_stats["interp_error_l2"]),
        "tol_met": bool(c_stats["tol_met"] and d_stats["tol_met"]),
    }
    return HermiteTable(
        t_range=(t0, t1),
        c_cheb=c_big,
        d_cheb=d_big,
        c_small=c_small,
        d_small=d_small,
        meta=meta,
        build_seconds=time.monotonic() - start,
    )
