"""JAX evaluation of Hermite-fallback dual kernels (jit/vmap/grad compatible, float64 and float32).

The table (:class:`dualact.symbolic.hermite.HermiteTable`) holds the normalised coefficients
ĉ_j(s) = c_j(s)/√E[σ(sz)²] as piecewise Chebyshev interpolants in log s. With s_a = √q11, s_b = √q22,
ρ = q12/√(q11 q22) clipped to [−1, 1]:

    T = N·[ S(ρ) + R_e ρ^{J_e} + R_o ρ^{J_o} ],   S(ρ) = Σ_{j<J} ĉ_j(s_a) ĉ_j(s_b) ρ^j,
    N = √(E[σ(s_a z)²] E[σ(s_b z)²]),

where the four one-dimensional expectations E[σ(s_a z)²], E[σ(s_b z)²], E[σ(s_a z)σ(±s_b z)] are computed
exactly (fixed-size composite Gauss–Legendre with panel edges on the kinks and on a geometric grid in the
argument of σ), and the even/odd tail corrections R_e, R_o (J_e, J_o the first even/odd index ≥ J) are
fixed so that T is **exact at ρ = ±1** (hence on the diagonal). For |ρ| < 1 the correction never makes
the truncation error worse than |ρ|^J·√(t_J(s_a) t_J(s_b)), the bound the table certifies.

Zero variance (q11 = 0 or q22 = 0) gives T = E[σ(√q11 z)σ(√q22 z)] = σ(0)E[σ(√q z)] exactly, without NaN
(also under grad). The NTK factor is the same construction with σ' (a.e. derivative) and the d̂ table.

Memory: every call materialises (..., J) arrays; for an n×n kernel matrix compute the coefficient vectors
per input once with :func:`scaled_coefficients` and combine them with :func:`series_from_coefficients`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "diag",
    "nngp",
    "ntk_diag",
    "ntk_factor",
    "one_dimensional",
    "scaled_coefficients",
    "series_from_coefficients",
]

_L = 10.0
_N_NODES = 16
# Static edge grid in z: unit panels on [−L, L] plus a geometric grading ±L·2^{−k} (k = 1..14) towards 0,
# which resolves σ(s z) around z = 0 for every s up to ~2000 (the kinks are added per call).
_GRID = np.unique(
    np.concatenate(
        [np.arange(-_L, _L + 0.5, 1.0), _L * 2.0 ** -np.arange(1, 15), -_L * 2.0 ** -np.arange(1, 15), [0.0]]
    )
)


def _dtype(*args):
    dt = jnp.result_type(*args)
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


# ------------------------------------------------------------------------------------------------
# One-dimensional expectations (exact diagonal and |ρ| = 1)
# ------------------------------------------------------------------------------------------------
def _rule(scales_kinks, dtype):
    """Composite GL nodes and weights·φ(z) on the static grid plus the kinks k/s (static shape)."""
    pts = [jnp.asarray(_GRID, dtype)]
    for s, ks in scales_kinks:
        if not ks:
            continue
        s = jax.lax.stop_gradient(s)  # the integral does not depend on where the panels are cut
        pos = s > 0
        inv = jnp.where(pos, 1.0 / jnp.where(pos, s, 1.0), 0.0)
        # s has a trailing axis of length 1; s = 0 sends the kink edges to +L (zero-width panels)
        pts.append(jnp.where(pos, jnp.asarray(ks, dtype) * inv, _L))
    batch = jnp.broadcast_shapes(*[p.shape[:-1] for p in pts])
    e = jnp.concatenate([jnp.broadcast_to(p, batch + p.shape[-1:]) for p in pts], axis=-1)
    if len(pts) > 1:
        e = jnp.sort(jnp.clip(e, -_L, _L), axis=-1)
    xi, wi = np.polynomial.legendre.leggauss(_N_NODES)
    xi, wi = jnp.asarray(xi, dtype), jnp.asarray(wi, dtype)
    lo, hi = e[..., :-1, None], e[..., 1:, None]
    half = 0.5 * (hi - lo)
    z = (0.5 * (hi + lo) + half * xi).reshape(batch + (-1,))
    w = (half * wi).reshape(batch + (-1,)) * jnp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return z, w


def one_dimensional(fn: Callable, kinks: Sequence[float], sa, sb):
    """(E[f(sa z)²], E[f(sb z)²], E[f(sa z) f(sb z)], E[f(sa z) f(−sb z)]) for z ~ N(0, 1), sa, sb ≥ 0.

    Exact to ~1e-15 (float64) for f with kinks at ``kinks`` and growth at most polynomial·e^{o(x²)}.
    """
    kinks = tuple(float(k) for k in kinks)
    sa, sb = jnp.asarray(sa), jnp.asarray(sb)
    dtype = _dtype(sa, sb)
    sa, sb = sa.astype(dtype), sb.astype(dtype)
    z, w = _rule(
        [(sa[..., None], kinks), (sb[..., None], kinks), (sb[..., None], tuple(-k for k in kinks))], dtype
    )
    fa = fn(sa[..., None] * z)
    fb = fn(sb[..., None] * z)
    # without kinks the node set is symmetric, so f(−sb z_i) = f(sb z_{N−1−i})
    fm = fb[..., ::-1] if not kinks else fn(-sb[..., None] * z)
    return (
        jnp.sum(w * fa * fa, -1),
        jnp.sum(w * fb * fb, -1),
        jnp.sum(w * fa * fb, -1),
        jnp.sum(w * fa * fm, -1),
    )


def _mean_square(fn, kinks, q):
    return _mean_square_jit(q, fn=fn, kinks=tuple(float(k) for k in kinks))


@functools.partial(jax.jit, static_argnames=("fn", "kinks"))
def _mean_square_jit(q, *, fn, kinks):
    q = jnp.asarray(q)
    dtype = _dtype(q)
    s = _safe_sqrt(q.astype(dtype))
    z, w = _rule([(s[..., None], kinks)], dtype)
    f = fn(s[..., None] * z)
    return jnp.sum(w * f * f, -1)


def diag(activation: Callable, kinks: Sequence[float], q):
    """T(q, q, q) = E[σ(√q z)²] exactly (one-dimensional quadrature)."""
    return _mean_square(activation, kinks, q)


def ntk_diag(derivative: Callable, kinks: Sequence[float], q):
    """Ṫ(q, q, q) = E[σ'(√q z)²] exactly (one-dimensional quadrature)."""
    return _mean_square(derivative, kinks, q)


# ------------------------------------------------------------------------------------------------
# Series
# ------------------------------------------------------------------------------------------------
def _safe_sqrt(y):
    pos = y > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, y, 1.0)), 0.0)


def _clenshaw_scan(cols, tau):
    """Clenshaw recurrence over the leading axis of ``cols`` (column m of the Chebyshev coefficients, each
    shaped like the result) — a scan keeps compilation time independent of the degree."""
    tau = tau[..., None]

    def step(carry, col):
        b1, b2 = carry
        return (2 * tau * b1 - b2 + col, b1), None

    zero = jnp.zeros(jnp.broadcast_shapes(tau.shape, cols.shape[1:]), tau.dtype)
    (b1, b2), _ = jax.lax.scan(step, (zero, zero), cols[:0:-1])
    return tau * b1 - b2 + cols[0]


def _clenshaw_pieces(cheb, idx, tau):
    """Σ_m cheb[idx, :, m] T_m(τ) → (..., J)."""
    P, J, M = cheb.shape
    sel = jax.nn.one_hot(idx, P, dtype=cheb.dtype)  # (..., P)
    tau = tau[..., None]

    def step(carry, col):  # col: (P, J)
        b1, b2 = carry
        return (2 * tau * b1 - b2 + sel @ col, b1), None

    zero = jnp.zeros(tau.shape[:-1] + (J,), tau.dtype)
    cols = jnp.moveaxis(cheb, -1, 0)  # (M, P, J)
    (b1, b2), _ = jax.lax.scan(step, (zero, zero), cols[:0:-1])
    return tau * b1 - b2 + sel @ cols[0]


def _clenshaw(coef, tau):
    """Σ_m coef[:, m] T_m(τ) → (..., J)."""
    return _clenshaw_scan(jnp.moveaxis(coef, -1, 0), tau)


def _normalised_coefficients(table, which: str, s):
    """ĉ_j(s) (or d̂_j(s)) from the table, s ≥ 0 (s = 0 returns the s → 0 limit of the small-s piece)."""
    cheb = jnp.asarray(getattr(table, which + "_cheb"), s.dtype)
    small = jnp.asarray(getattr(table, which + "_small"), s.dtype)
    t0, t1 = (float(v) for v in table.t_range)
    s_min = math.exp(t0)
    P = cheb.shape[0]
    lo = s < s_min
    t = jnp.clip(jnp.log(jnp.where(lo, s_min, s)), t0, t1)
    u = (t - t0) * (P / (t1 - t0))
    idx = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, P - 1).astype(jnp.int32)
    big = _clenshaw_pieces(cheb, idx, 2 * (u - idx) - 1)
    sm = _clenshaw(small, 2 * jnp.where(lo, s, s_min) / s_min - 1)
    return jnp.where(lo[..., None], sm, big)


def scaled_coefficients(table, fn: Callable, kinks: Sequence[float], q, which: str = "c"):
    """Unnormalised coefficients c_j(√q) (``which="c"``, fn = σ) or d_j(√q) (``"d"``, fn = σ').

    Shape (..., J); combine with :func:`series_from_coefficients` for kernel matrices.
    """
    q = jnp.asarray(q)
    dtype = _dtype(q)
    s = _safe_sqrt(q.astype(dtype))
    return _normalised_coefficients(table, which, s) * jnp.sqrt(_mean_square(fn, kinks, q))[..., None]


def _horner(coef, rho):
    """Σ_j coef[..., j] ρ^j by Horner (scan over j)."""
    cs = jnp.moveaxis(coef, -1, 0)[::-1]

    def step(acc, c):
        return acc * rho + c, None

    out, _ = jax.lax.scan(step, jnp.zeros_like(rho), cs)
    return out


class _Arrays:
    def __init__(self, cheb, small, t_range):
        self.c_cheb = cheb
        self.c_small = small
        self.t_range = t_range


def _series(table, which, fn, kinks, q11, q12, q22):
    kinks = tuple(float(k) for k in kinks)
    t_range = tuple(float(v) for v in table.t_range)
    cheb = getattr(table, which + "_cheb")
    small = getattr(table, which + "_small")
    return _series_jit(cheb, small, q11, q12, q22, fn=fn, kinks=kinks, t_range=t_range)


@functools.partial(jax.jit, static_argnames=("fn", "kinks", "t_range"))
def _series_jit(cheb, small, q11, q12, q22, *, fn, kinks, t_range):
    table, which = _Arrays(cheb, small, t_range), "c"
    q11, q12, q22 = jnp.asarray(q11), jnp.asarray(q12), jnp.asarray(q22)
    dtype = _dtype(q11, q12, q22)
    q11, q12, q22 = jnp.broadcast_arrays(q11.astype(dtype), q12.astype(dtype), q22.astype(dtype))
    sa, sb = _safe_sqrt(q11), _safe_sqrt(q22)
    Eaa, Ebb, Pp, Pm = one_dimensional(fn, kinks, sa, sb)
    zero = (q11 <= 0) | (q22 <= 0)
    P = q11 * q22
    denom = jnp.sqrt(jnp.where(zero, 1.0, P))
    rho = jnp.clip(jnp.where(zero, 0.0, q12 / denom), -1.0, 1.0)
    ca = _normalised_coefficients(table, which, sa)
    cb = _normalised_coefficients(table, which, sb)
    prod = ca * cb
    J = prod.shape[-1]
    sign = jnp.asarray((-1.0) ** np.arange(J), dtype)
    N2 = Eaa * Ebb
    good = (~zero) & (N2 > 0)
    N = jnp.sqrt(jnp.where(good, N2, 1.0))
    S = _horner(prod, rho)
    Rp = Pp / N - jnp.sum(prod, -1)
    Rm = Pm / N - jnp.sum(prod * sign, -1)
    Re, Ro = 0.5 * (Rp + Rm), 0.5 * (Rp - Rm)
    Je, Jo = (J, J + 1) if J % 2 == 0 else (J + 1, J)
    T = N * (S + Re * jax.lax.integer_pow(rho, Je) + Ro * jax.lax.integer_pow(rho, Jo))
    # zero variance: E[σ(0)σ(√q z)] exactly; N = 0 (σ ≡ 0 on the support): 0
    return jnp.where(good, T, jnp.where(zero, Pp, 0.0))


def series_from_coefficients(ca, cb, rho):
    """Σ_j ca_j cb_j ρ^j for precomputed (unnormalised) coefficient vectors (no endpoint correction)."""
    return _horner(ca * cb, jnp.clip(rho, -1.0, 1.0))


def nngp(table, activation: Callable, kinks: Sequence[float], q11, q12, q22):
    """T(q11, q12, q22) = E[σ(u)σ(v)] from the Hermite table (exact at ρ = ±1, on the diagonal, at q = 0)."""
    return _series(table, "c", activation, kinks, q11, q12, q22)


def ntk_factor(table, derivative: Callable, kinks: Sequence[float], q11, q12, q22):
    """Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)] (σ' the a.e. derivative) from the Hermite table."""
    return _series(table, "d", derivative, kinks, q11, q12, q22)
