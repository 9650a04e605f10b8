"""Hermite fallback: scale-dependent Hermite coefficients of σ and their Chebyshev tables.

For σ without a closed-form dual kernel the engine falls back to the Mehler/Hermite series

    K(a, b, c) = Σ_j c_j(√a) c_j(√b) ρ^j,        c_j(s) = E[σ(s z) h_j(z)],  z ~ N(0, 1),

with h_j = He_j/√(j!) and ρ = c/√(ab); the NTK factor uses d_j(s) = E[σ'(s z) h_j(z)] (σ' the a.e.
derivative). This module computes the coefficients and tabulates them for the JAX runtime
(:mod:`dualact.runtime.hermite_series`).

Method (engine-study Q3):

* c_j(s) by **composite Gauss–Legendre with panel edges on the kinks** of σ (at k/s in z) and on a geometric
  grid in the argument of σ, truncated at a radius that follows σ's growth
  (:mod:`dualact.symbolic.hermite_quadrature`; :func:`hermite_coefficients` is the high-precision mpmath
  version, e.g. 40 digits for ReLU).
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

import numpy as np
import sympy as sp

from dualact.errors import DerivationError
from dualact.symbolic.hermite_quadrature import (
    _L_TABLE,
    _RUNTIME_RADIUS,
    RadiusProfile,
    _Coefficients,
    _node_grid,
    _Radii,
    hermite_coefficients,
    hermite_coefficients_f64,
)
from dualact.symbolic.quadrature import ae_derivative, find_kinks, lambdify_numpy

__all__ = ["HermiteTable", "RadiusProfile", "build_table", "hermite_coefficients", "hermite_coefficients_f64"]

_FORMAT_VERSION = 1
_RHO_CERT = 0.99


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


def _build_one(
    f, kinks, tol, t0, t1, P, max_terms, m_start, m_max, deadline, t_cert=None, profile=None, overflows=False
):
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
    # 5. clamping error above the table (none where the table ends because E[f(sz)²] overflows beyond it:
    # there f itself overflows float64, and every node would be re-evaluated in mpmath for a NaN)
    if overflows:
        clamp = [math.nan, math.nan]
    else:
        with np.errstate(all="ignore"):
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
    first = None
    for i in range(coarse.size):  # ascending, one scale at a time: beyond the first failure σ overflows
        if not finite(coarse[i : i + 1])[0]:
            first = i
            break
    if first is None:
        return t1
    if first == 0:
        raise DerivationError(f"no Hermite table: E[σ(sz)²] is not finite in float64 at the smallest scale s = "
                              f"{math.exp(t0):.3g} (σ undefined or overflowing on a set the quadrature sees)")
    fine = np.arange(coarse[first - 1] + 1, coarse[first])
    fine_ok = finite(fine) if fine.size else np.ones(0, bool)
    bad = coarse[first] if fine_ok.all() else fine[int(np.argmin(fine_ok))]
    return float(t[bad - 1])


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
    overflows = t_reach < t1  # the table ends where σ(sz)²φ(z) has mass beyond |z| = 64 (σ grows fast)
    if overflows:
        t1, t_cert = t_reach, min(t_cert, t_reach)
    dropped = None
    if t1 > t_cert:  # the extension, where a σ whose float64 formula overflows is evaluated in mpmath
        seconds = _projected_seconds((f, fd), kinks, t_cert, t1, L=radii.profiles(t1)[0].max)
        if seconds > 0.5 * (deadline - time.monotonic()):
            t1, dropped = t_cert, seconds
    t_top = _finite_scale_limit((f, fd), kinks, t0, t1, profile=radii.profiles(t1)[0])
    if t_top < t1:  # σ grows exponentially (exp(0.7x) + tanh(x)): E[σ(sz)²] overflows float64 beyond e^{t_top}
        t1, t_cert, overflows = t_top, min(t_cert, t_top), True
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
    build = (tol, t0, t1, P, max_terms, m_start, m_max, deadline, t_cert, profile, overflows)
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
