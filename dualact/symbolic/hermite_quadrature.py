"""Hermite coefficients by quadrature: c_j(s) = E[σ(s z) h_j(z)] at high precision (mpmath) and in float64.

Composite Gauss–Legendre with panel edges on the kinks of σ (at k/s in z) and on a geometric grid in the
argument of σ, one node set for all j, h_j at every node by the normalised three-term recurrence
h_{j+1} = (z h_j − √j h_{j−1})/√(j+1). Cramér's bound |h_j(z)| e^{−z²/4} ≤ 1.09 makes the truncation radius
independent of j; it depends on σ's growth instead: for σ ~ e^{β|x|} the integrand σ(sz)²φ(z) peaks at
z = 2βs, so the radius follows the scale (:class:`RadiusProfile`, :func:`~dualact.symbolic.quadrature.gaussian_radius`).
:mod:`dualact.symbolic.hermite` tabulates these coefficients for the JAX runtime.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import mpmath
import numpy as np
import sympy as sp

from dualact.errors import DerivationError
from dualact.symbolic.quadrature import (
    _X_GEO,
    _log_abs_mp,
    _numpy_log_abs,
    find_kinks,
    gauss_legendre,
    gaussian_radii,
    gaussian_radius,
    lambdify_mpmath,
    log_abs_function,
    mp_edges,
    mp_panel_rule,
)

__all__ = ["RadiusProfile", "hermite_coefficients", "hermite_coefficients_f64", "hermite_matrix"]


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
        values = [_log_abs_mp(f_mp, float(v), undefined=-math.inf) for v in np.asarray(t, dtype=np.float64).ravel()]
        return np.asarray(values).reshape(np.shape(t))

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


def hermite_matrix(z: np.ndarray, J: int) -> np.ndarray:
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
    return gaussian_radii([_numpy_log_abs(f)], scales, tail=_TABLE_TAIL, floor=_L_TABLE, cap=_RADIUS_CAP)


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
        return (g * r) @ hermite_matrix(z, J).T, np.sum(g * g, axis=1)
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
        self.H = hermite_matrix(self.z, J).T  # (N, J)

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
