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

Memory: every elementwise call materialises (..., J) arrays. Kernel *matrices* whose variances depend on the
row alone (q11_i) and on the column alone (q22_k) — the structure of every activation layer — go through
:func:`nngp_matrix` / :func:`ntk_factor_matrix`: the coefficient vectors and one-dimensional moments are
computed once per row and per column, the series is a Horner recurrence over j carrying one (R, C)
accumulator (O(J·R·C) flops, O(R·C) memory), and the endpoint correction is a matrix product over the
quadrature nodes. Two savings keep the result within ``rtol``·N of the elementwise formula (``rtol`` = the
dtype's machine epsilon by default): only the first J' terms are summed, J' the smallest number with
√(max_i t'_{J'}(s_i) · max_k t'_{J'}(s_k)) ≤ rtol where t'_{J'}(s) = Σ_{J' ≤ j < J} ĉ_j(s)² (Cauchy–Schwarz
bounds the dropped terms by that), and the endpoint correction — whose normalised size is at most
4·|ρ|^J — is skipped when 4·max|ρ|^J ≤ rtol. The correction, when applied, uses the same J' terms, so
T stays exact at ρ = ±1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import branching

__all__ = [
    "diag",
    "nngp",
    "nngp_matrix",
    "ntk_diag",
    "ntk_factor",
    "ntk_factor_matrix",
    "one_dimensional",
    "scaled_coefficients",
    "series_from_coefficients",
]

_L = 10.0  # truncation radius in z of σ without exponential growth
_DEFAULT_RADII = ((math.inf, _L),)
_N_NODES = 16


@functools.cache
def _grid(radius: float) -> np.ndarray:
    """Static edge grid in z: unit panels on [−radius, radius] plus a geometric grading ±L·2^{−k}
    (k = 1..17, L = :data:`_L`) towards 0, which resolves σ(s z) around z = 0 for every s up to ~1e4 (the
    tables' extended range; kinks are added per call)."""
    grading = _L * 2.0 ** -np.arange(1, 18)
    return np.unique(np.concatenate([np.arange(-radius, radius + 0.5, 1.0), grading, -grading, [0.0]]))


def _table_radii(table) -> tuple[tuple[float, float], ...]:
    return tuple(getattr(table, "radii", _DEFAULT_RADII))


def _outer(radii) -> float:
    return max(r for _, r in radii)


def _limit(radii, s):
    """The truncation radius R(s) in z at scale s (``HermiteTable.radii``: R_i for the first step with
    log s ≤ t_i, the last beyond). 10 unless σ grows exponentially, e^{β|x|}: then σ(sz)²φ(z) peaks near
    z = 2βs, and σ(sz) may overflow beyond R(s), where the integrand is negligible."""
    if len(radii) == 1:
        return jnp.asarray(radii[0][1], s.dtype)
    ts = jnp.asarray([t for t, _ in radii[:-1]], s.dtype)
    rs = jnp.asarray([r for _, r in radii], s.dtype)
    s = jax.lax.stop_gradient(s)
    t = jnp.log(jnp.where(s > 0, s, 1.0))
    return jnp.where(s > 0, rs[jnp.searchsorted(ts, t, side="left")], rs[0])


# Edges ±2^k in the argument x of σ, k = −8..5, which the rules of the one-dimensional expectations add at
# x/s in z: they resolve σ's own features at every scale s, where the static grading above stops at
# s ~ 1e4 (tanh's E[σ'(sz)²] was 14% off at q = 1e12 and 1e-19 instead of 1.7e-8 at q = 1e15).
_X_GRADES = tuple(float(v) for v in np.concatenate([2.0 ** np.arange(-8, 6), -(2.0 ** np.arange(-8, 6))]))
_SHARED_X_GRADES = tuple(float(v) for v in 2.0 ** np.arange(-8, 16))  # see _half_rule
_STATIC_REACH = 1e4  # the largest s at which the static grid alone resolves σ(s z)


def _dtype(*args):
    dt = jnp.result_type(*args)
    return dt if jnp.issubdtype(dt, jnp.floating) else jnp.result_type(float)


# ------------------------------------------------------------------------------------------------
# One-dimensional expectations (exact diagonal and |ρ| = 1)
# ------------------------------------------------------------------------------------------------
def _moving_edges(s, xs, dtype, radius):
    """Panel edges x/s in z for the arguments ``xs`` of σ (s = 0 sends them to +radius: zero-width panels)."""
    s = jax.lax.stop_gradient(s)  # the integral does not depend on where the panels are cut
    pos = s > 0
    inv = jnp.where(pos, 1.0 / jnp.where(pos, s, 1.0), 0.0)
    return jnp.where(pos, jnp.asarray(xs, dtype) * inv, radius)


def _panels(e, dtype):
    """Composite Gauss–Legendre nodes z and root weights √(w·φ(z)) on the sorted panel edges ``e`` (..., E).

    The root is computed as √w·e^{−z²/4}/(2π)^{1/4}, so it underflows only where z²/4 does (|z| ≈ 54 in
    float64, not 38), and σ(sz)²φ(z) is formed as (√(wφ)·σ(sz))²: σ(sz) near float64's limit times a tiny
    weight is then representable (E[cosh(3√q z)²] at q = 30 peaks at z = 33)."""
    xi, wi = (jnp.asarray(a, dtype) for a in np.polynomial.legendre.leggauss(_N_NODES))
    lo, hi = e[..., :-1, None], e[..., 1:, None]
    half = 0.5 * (hi - lo)
    z = (0.5 * (hi + lo) + half * xi).reshape(e.shape[:-1] + (-1,))
    r = jnp.sqrt(half * wi).reshape(e.shape[:-1] + (-1,)) * jnp.exp(-0.25 * z * z) * (2 * math.pi) ** -0.25
    return z, r


# Argument at which σ is evaluated in place of the nodes that are dropped (see _weighted).
_SAFE_X = 1.0 / math.pi


def _weighted(fn, s, z, r, radii):
    """√(w·φ(z))·fn(s z) at the nodes of positive weight within the radius R(s), 0 at the others.

    Coinciding edges (a kink on a grid point, edges clipped at ±R) make zero-width panels, whose nodes sit
    on the edge itself: on a kink, where σ' may be undefined (2/x at x = 0 for a log(x²) piece), and 0·NaN
    spoiled the whole sum. Beyond R(s) an exponentially growing σ(sz) may overflow. Both kinds of node are
    evaluated at :data:`_SAFE_X` instead (so no NaN reaches the gradient either) and dropped."""
    keep = (r > 0) & (jnp.abs(z) <= _limit(radii, jnp.abs(s)))
    x = jnp.where(keep, s * z, jnp.asarray(_SAFE_X, z.dtype))
    return jnp.where(keep, r * fn(x), 0.0)


def _rule(scales_kinks, dtype, graded=(), radius=_L):
    """Composite GL nodes and root weights √(w·φ(z)) on the static grid of ``radius`` plus the kinks k/s and, for each
    scale s in ``graded``, the σ-scale grading ±2^k/s (:data:`_X_GRADES`) (static shape; each s has a
    trailing axis of length 1)."""
    pts = [jnp.asarray(_grid(radius), dtype)]  # radius: the largest of the table's radii
    pts += [_moving_edges(s, ks, dtype, radius) for s, ks in scales_kinks if ks]
    pts += [_moving_edges(s, _X_GRADES, dtype, radius) for s in graded]
    batch = jnp.broadcast_shapes(*[p.shape[:-1] for p in pts])
    e = jnp.concatenate([jnp.broadcast_to(p, batch + p.shape[-1:]) for p in pts], axis=-1)
    if len(pts) > 1:
        e = jnp.sort(jnp.clip(e, -radius, radius), axis=-1)
    return _panels(e, dtype)


def one_dimensional(fn: Callable, kinks: Sequence[float], sa, sb, *, radii=_DEFAULT_RADII):
    """(E[f(sa z)²], E[f(sb z)²], E[f(sa z) f(sb z)], E[f(sa z) f(−sb z)]) for z ~ N(0, 1), sa, sb ≥ 0.

    Exact to ~1e-15 (float64) for f with kinks at ``kinks`` whose integrand f(sz)²φ(z) is negligible
    beyond the radius R(s) of ``radii`` (the table's :attr:`~dualact.symbolic.hermite.HermiteTable.radii`;
    the default, 10 at every scale, serves growth up to polynomial).
    """
    radius = _outer(radii)
    kinks = tuple(float(k) for k in kinks)
    sa, sb = jnp.asarray(sa), jnp.asarray(sb)
    dtype = _dtype(sa, sb)
    sa, sb = sa.astype(dtype), sb.astype(dtype)

    def sums(s_ref):
        z, r = _rule(
            [(sa[..., None], kinks), (sb[..., None], kinks), (sb[..., None], tuple(-k for k in kinks))],
            dtype,
            graded=() if s_ref is None else (sa[..., None], sb[..., None]),
            radius=radius,
        )
        ga = _weighted(fn, sa[..., None], z, r, radii)
        gb = _weighted(fn, sb[..., None], z, r, radii)
        # without kinks the node set is symmetric, so f(−sb z_i) = f(sb z_{N−1−i})
        gm = gb[..., ::-1] if not kinks else _weighted(fn, -sb[..., None], z, r, radii)
        return jnp.sum(ga * ga, -1), jnp.sum(gb * gb, -1), jnp.sum(ga * gb, -1), jnp.sum(ga * gm, -1)

    return _by_reach(sums, sa, sb)


def _by_reach(sums, *scales):
    """``sums(s_ref)``, s_ref the largest of the scales, where it exceeds :data:`_STATIC_REACH` (the rule then
    needs the σ-scale grading), else ``sums(None)`` (the static rule): one branch per call, since the
    grading costs as many nodes again as the static rule."""
    s_ref = jax.lax.stop_gradient(functools.reduce(jnp.maximum, [jnp.max(s, initial=0.0) for s in scales]))
    return branching.cond(s_ref > _STATIC_REACH, lambda: sums(s_ref), lambda: sums(None))


def _mean_square(fn, kinks, q, radii):
    radii = tuple((float(t), float(r)) for t, r in radii)
    return _mean_square_jit(q, fn=fn, kinks=tuple(float(k) for k in kinks), radii=radii)


@functools.partial(jax.jit, static_argnames=("fn", "kinks", "radii"))
def _mean_square_jit(q, *, fn, kinks, radii):
    q = jnp.asarray(q)
    dtype = _dtype(q)
    s = _safe_sqrt(q.astype(dtype))
    return _moments(fn, kinks, s, radii)[0]


def diag(activation: Callable, kinks: Sequence[float], q, *, radii=_DEFAULT_RADII):
    """T(q, q, q) = E[σ(√q z)²] exactly (one-dimensional quadrature truncated at the radius R(√q) of
    ``radii``, the table's :attr:`~dualact.symbolic.hermite.HermiteTable.radii`)."""
    return _mean_square(activation, kinks, q, radii)


def ntk_diag(derivative: Callable, kinks: Sequence[float], q, *, radii=_DEFAULT_RADII):
    """Ṫ(q, q, q) = E[σ'(√q z)²] exactly (one-dimensional quadrature, as :func:`diag`)."""
    return _mean_square(derivative, kinks, q, radii)


# ------------------------------------------------------------------------------------------------
# Series
# ------------------------------------------------------------------------------------------------
def _safe_sqrt(y):
    pos = y > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, y, 1.0)), 0.0)


def _chebyshev_basis(tau, M: int):
    """T_0(τ), ..., T_{M−1}(τ) by the three-term recurrence (stable for |τ| ≤ 1) → (..., M)."""
    Ts = [jnp.ones_like(tau), tau][:M]
    while len(Ts) < M:
        Ts.append(2 * tau * Ts[-1] - Ts[-2])
    return jnp.stack(Ts, -1)


def _normalised_coefficients(table, which: str, s):
    """ĉ_j(s) (or d̂_j(s)) from the table, s ≥ 0 (s = 0 returns the s → 0 limit of the small-s piece).

    Σ_m cheb[p, j, m] T_m(τ) for all j at once is one matrix product of the (piece one-hot ⊗ T_m(τ)) basis,
    shape (..., P·M), with the table reshaped to (P·M, J).
    """
    cheb = jnp.asarray(getattr(table, which + "_cheb"), s.dtype)
    small = jnp.asarray(getattr(table, which + "_small"), s.dtype)
    t0, t1 = (float(v) for v in table.t_range)
    s_min = math.exp(t0)
    P, J, M = cheb.shape
    lo = s < s_min
    t = _clamp(jnp.log(jnp.where(lo, s_min, s)), t0, t1)
    u = (t - t0) * (P / (t1 - t0))
    idx = jnp.clip(jnp.floor(jax.lax.stop_gradient(u)), 0, P - 1).astype(jnp.int32)
    sel = jax.nn.one_hot(idx, P, dtype=s.dtype)  # (..., P)
    basis = sel[..., :, None] * _chebyshev_basis(2 * (u - idx) - 1, M)[..., None, :]
    big = basis.reshape(s.shape + (P * M,)) @ jnp.transpose(cheb, (0, 2, 1)).reshape(P * M, J)
    sm = _chebyshev_basis(2 * jnp.where(lo, s, s_min) / s_min - 1, small.shape[-1]) @ small.T
    return jnp.where(lo[..., None], sm, big)


def scaled_coefficients(table, fn: Callable, kinks: Sequence[float], q, which: str = "c"):
    """Unnormalised coefficients c_j(√q) (``which="c"``, fn = σ) or d_j(√q) (``"d"``, fn = σ').

    Shape (..., J); :func:`series_from_coefficients` combines them (without the endpoint correction);
    :func:`nngp_matrix` does the whole kernel matrix from per-input quantities.
    """
    q = jnp.asarray(q)
    dtype = _dtype(q)
    s = _safe_sqrt(q.astype(dtype))
    scale = jnp.sqrt(_mean_square(fn, kinks, q, _table_radii(table)))
    return _normalised_coefficients(table, which, s) * scale[..., None]


def _horner(coef, rho):
    """Σ_j coef[..., j] ρ^j by Horner (scan over j)."""
    cs = jnp.moveaxis(coef, -1, 0)[::-1]

    def step(acc, c):
        return acc * rho + c, None

    out, _ = jax.lax.scan(step, jnp.zeros_like(rho), cs)
    return out


class _Arrays:
    def __init__(self, cheb, small, t_range, radii):
        self.c_cheb = cheb
        self.c_small = small
        self.t_range = t_range
        self.radii = radii


def _table_arrays(table, which, *args):
    """The table's Chebyshev and small-scale arrays in the dtype of the computation, as numpy constants: JAX
    then never sees a float64 table beside float32 variances (which failed to lower when the same process
    had computed kernels under ``jax.enable_x64`` before)."""
    dtype = np.dtype(_dtype(*args))
    return (np.asarray(getattr(table, which + "_cheb"), dtype), np.asarray(getattr(table, which + "_small"), dtype))


def _series(table, which, fn, kinks, q11, q12, q22):
    kinks = tuple(float(k) for k in kinks)
    t_range = tuple(float(v) for v in table.t_range)
    cheb, small = _table_arrays(table, which, q11, q12, q22)
    return _series_jit(cheb, small, q11, q12, q22, fn=fn, kinks=kinks, t_range=t_range, radii=_table_radii(table))


def _clamp(v, lo, hi):
    """min(max(v, lo), hi) whose derivative is 1 on the closed interval (``jnp.clip`` gives 1/2 at a bound)."""
    return jnp.where(v > hi, hi, jnp.where(v < lo, lo, v))


def _correlation(q11, q12, q22):
    """(zero, ρ): which entries have a zero variance, and ρ = q12/√(q11 q22) clipped to [−1, 1] (0 there)."""
    zero = (q11 <= 0) | (q22 <= 0)
    # √q11·√q22, not √(q11·q22): the product over- or underflows for variances beyond ~1e±154
    denom = jnp.sqrt(jnp.where(zero, 1.0, q11)) * jnp.sqrt(jnp.where(zero, 1.0, q22))
    return zero, _clamp(jnp.where(zero, 0.0, q12 / denom), -1.0, 1.0)


def _endpoint_terms(Re, Ro, rho, J: int):
    """R_e ρ^{J_e} + R_o ρ^{J_o}, J_e/J_o the first even/odd index ≥ J."""
    Je, Jo = (J, J + 1) if J % 2 == 0 else (J + 1, J)
    return Re * jax.lax.integer_pow(rho, Je) + Ro * jax.lax.integer_pow(rho, Jo)


@functools.partial(jax.jit, static_argnames=("fn", "kinks", "t_range", "radii"))
def _series_jit(cheb, small, q11, q12, q22, *, fn, kinks, t_range, radii):
    table, which = _Arrays(cheb, small, t_range, radii), "c"
    q11, q12, q22 = jnp.asarray(q11), jnp.asarray(q12), jnp.asarray(q22)
    dtype = _dtype(q11, q12, q22)
    q11, q12, q22 = jnp.broadcast_arrays(q11.astype(dtype), q12.astype(dtype), q22.astype(dtype))
    sa, sb = _safe_sqrt(q11), _safe_sqrt(q22)
    Eaa, Ebb, Pp, Pm = one_dimensional(fn, kinks, sa, sb, radii=radii)
    zero, rho = _correlation(q11, q12, q22)
    ca = _normalised_coefficients(table, which, sa)
    cb = _normalised_coefficients(table, which, sb)
    prod = ca * cb
    J = prod.shape[-1]
    sign = jnp.asarray((-1.0) ** np.arange(J), dtype)
    N = _safe_sqrt(Eaa) * _safe_sqrt(Ebb)  # √(Eaa·Ebb) without over- or underflow of the product
    good = (~zero) & (N > 0)
    N = jnp.where(good, N, 1.0)
    S = _horner(prod, rho)
    Rp = Pp / N - jnp.sum(prod, -1)
    Rm = Pm / N - jnp.sum(prod * sign, -1)
    T = N * (S + _endpoint_terms(0.5 * (Rp + Rm), 0.5 * (Rp - Rm), rho, J))
    # zero variance: E[σ(0)σ(√q z)] exactly; N = 0 (σ ≡ 0 on the support): 0
    return jnp.where(good, T, jnp.where(zero, Pp, 0.0))


# ------------------------------------------------------------------------------------------------
# Kernel matrices: per-row and per-column quantities, an (R, C) Horner accumulator
# ------------------------------------------------------------------------------------------------
_BLOCK = 16  # terms per Horner block (one fused pass over the (R, C) accumulator); even


def _moments(fn, kinks, s, radii):
    """(E[f(s z)²], E[f(s z)]) per entry of s ≥ 0 (the rule of :func:`diag`)."""

    def sums(s_ref):
        graded = () if s_ref is None else (s[..., None],)
        z, r = _rule([(s[..., None], kinks)], s.dtype, graded=graded, radius=_outer(radii))
        g = _weighted(fn, s[..., None], z, r, radii)
        return jnp.sum(g * g, -1), jnp.sum(r * g, -1)

    return _by_reach(sums, s)


@functools.cache
def _static_half_rule_np(radius):
    xi, wi = np.polynomial.legendre.leggauss(_N_NODES)
    e = _grid(radius)[_grid(radius) >= 0]
    lo, hi = e[:-1, None], e[1:, None]
    half = 0.5 * (hi - lo)
    z = (0.5 * (hi + lo) + half * xi).reshape(-1)
    r = np.sqrt(half * wi).reshape(-1) * np.exp(-0.25 * z * z) * (2 * math.pi) ** -0.25
    return z, r


def _static_half_rule(dtype, radius):
    """Nodes z > 0 and root weights √(w·φ(z)) of the static rule of :func:`_rule` (the grid is symmetric
    about 0, so the rule folds onto z > 0); it resolves σ(s z) for every s ≤ :data:`_STATIC_REACH`."""
    z, r = _static_half_rule_np(radius)
    return jnp.asarray(z, dtype), jnp.asarray(r, dtype)


def _half_rule(dtype, s_ref, radius):
    """Nodes z > 0 and weights·φ(z) of a rule shared by all rows and columns of a block whose largest scale
    s_ref exceeds :data:`_STATIC_REACH`: the static rule plus edges 2^k/s_ref (k = −8..15,
    :data:`_SHARED_X_GRADES`), which resolve every row and column with s ≥ 2^-10·s_ref (s_ref itself at any
    size). Scales in between (1e4 < s < 2^-10·s_ref: variances spread over more than six decades above 1e8
    within one block) get the coarser of the two gradings."""
    static = jnp.asarray(_grid(radius)[_grid(radius) >= 0], dtype)
    moving = jnp.clip(_moving_edges(s_ref, _SHARED_X_GRADES, dtype, radius), 0.0, radius)
    return _panels(jnp.sort(jnp.concatenate([static, moving])), dtype)


def _terms_needed(ca, cb, rtol):
    """J': the smallest number of leading terms with √(max_i t'(s_i) max_k t'(s_k)) ≤ rtol, where
    t'_{J'}(s) = Σ_{j ≥ J'} ĉ_j(s)² bounds (Cauchy–Schwarz) the normalised size of the dropped terms."""

    def worst_suffix(c):
        c = jax.lax.stop_gradient(c)
        c2 = (c * c).reshape(-1, c.shape[-1])
        return jnp.max(jnp.cumsum(c2[:, ::-1], axis=-1)[:, ::-1], axis=0)

    bound = jnp.sqrt(worst_suffix(ca) * worst_suffix(cb))  # non-increasing in J'
    return jnp.sum(bound > rtol).astype(jnp.int32)


def _outer_horner(ca, cb, rho, n_terms):
    """Σ_{j < J''} ca[..., i, j] cb[..., k, j] ρ[..., i, k]^j with J'' = n_terms rounded up to a block.

    Horner over blocks of ``_BLOCK`` terms from the top; blocks at or above ``n_terms`` are skipped (their
    terms are below tolerance and the accumulator is still zero there).
    """
    J = ca.shape[-1]
    nb = -(-J // _BLOCK)

    def blocks(c):  # (..., n, J) -> (nb, B, ..., n)
        c = jnp.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, nb * _BLOCK - J)])
        c = c.reshape(c.shape[:-1] + (nb, _BLOCK))
        return jnp.moveaxis(c, (-2, -1), (0, 1))

    def run(acc, a, b):
        for t in reversed(range(_BLOCK)):
            acc = acc * rho + a[t][..., :, None] * b[t][..., None, :]
        return acc

    def body(acc, xs):
        a, b, start = xs
        return jax.lax.cond(start < n_terms, lambda c: run(c, a, b), lambda c: c, acc), None

    zero = jnp.zeros(jnp.broadcast_shapes(rho.shape, ca.shape[:-2] + (1, 1), cb.shape[:-2] + (1, 1)), rho.dtype)
    starts = jnp.arange(nb, dtype=jnp.int32) * _BLOCK
    S, _ = jax.lax.scan(jax.checkpoint(body), zero, (blocks(ca), blocks(cb), starts), reverse=True)
    return S


def _matrix_endpoint(fn, kinks, sa, sb, ua, ub, rho, J: int, radii):
    """N·(R_e ρ^{J_e} + R_o ρ^{J_o}) for all (i, k), with ``ua``, ``ub`` the unnormalised coefficients c_j
    actually summed (zero beyond them), so that the result is exact at ρ = ±1.

    N·R_e = ½(P₊ + P₋) − Σ_{even j} c_j(s_a) c_j(s_b), N·R_o = ½(P₊ − P₋) − Σ_{odd j} ..., with
    P_± = E[σ(s_a z) σ(±s_b z)]. Without kinks away from 0 the static rule is shared by all rows and columns
    and folds onto z > 0: ½(P₊ ± P₋) = Σ_{z>0} (w/2) e_a e_b (resp. o_a o_b), e/o = σ(sz) ± σ(−sz), so each of
    N·R_e, N·R_o is one matrix product over [nodes | coefficients].
    """
    dtype, radius = rho.dtype, _outer(radii)
    par = np.arange(J) % 2
    even, odd = jnp.asarray(par == 0, dtype), jnp.asarray(par == 1, dtype)

    def mm(a, b):
        return jnp.einsum("...ix,...kx->...ik", a, b)

    if all(k == 0.0 for k in kinks):

        def products(rule):
            z, r = rule

            def folded(s):
                gp, gm = _weighted(fn, s[..., None], z, r, radii), _weighted(fn, -s[..., None], z, r, radii)
                return (gp + gm) * math.sqrt(0.5), (gp - gm) * math.sqrt(0.5)

            ea, oa = folded(sa)
            eb, ob = folded(sb)
            return (mm(jnp.concatenate([ea, ua * even], -1), jnp.concatenate([eb, -ub * even], -1)),
                    mm(jnp.concatenate([oa, ua * odd], -1), jnp.concatenate([ob, -ub * odd], -1)))

        # the static rule where it resolves every scale of the block, else the one graded at the largest
        NRe, NRo = _by_reach(
            lambda s_ref: products(
                _static_half_rule(dtype, radius) if s_ref is None else _half_rule(dtype, s_ref, radius)
            ),
            sa,
            sb,
        )
    else:  # panel edges at k/s differ per pair: elementwise one-dimensional quadrature
        _, _, Pp, Pm = one_dimensional(fn, kinks, sa[..., :, None], sb[..., None, :], radii=radii)
        NRe = 0.5 * (Pp + Pm) - mm(ua * even, ub)
        NRo = 0.5 * (Pp - Pm) - mm(ua * odd, ub)
    return _endpoint_terms(NRe, NRo, rho, J)


@functools.partial(jax.jit, static_argnames=("fn", "kinks", "t_range", "rtol", "radii"))
def _matrix_jit(cheb, small, q1, q12, q2, *, fn, kinks, t_range, rtol, radii):
    table = _Arrays(cheb, small, t_range, radii)
    q1, q12, q2 = jnp.asarray(q1), jnp.asarray(q12), jnp.asarray(q2)
    dtype = _dtype(q1, q12, q2)
    q1, q12, q2 = q1.astype(dtype), q12.astype(dtype), q2.astype(dtype)
    tol = float(jnp.finfo(dtype).eps) if rtol is None else rtol
    sa, sb = _safe_sqrt(q1), _safe_sqrt(q2)
    Ea, Ma = _moments(fn, kinks, sa, radii)
    Eb, Mb = _moments(fn, kinks, sb, radii)
    ca = _normalised_coefficients(table, "c", sa)  # (..., R, J)
    cb = _normalised_coefficients(table, "c", sb)  # (..., C, J)
    J = ca.shape[-1]
    za = (q1 <= 0)[..., :, None]
    zero, rho = _correlation(q1[..., :, None], q12, q2[..., None, :])
    N = _safe_sqrt(Ea)[..., :, None] * _safe_sqrt(Eb)[..., None, :]  # √(Ea·Eb), no over/underflow
    good = (~zero) & (N > 0)
    N = jnp.where(good, N, 1.0)
    n_terms = _terms_needed(ca, cb, tol)
    S = _outer_horner(ca, cb, rho, n_terms)
    # endpoint correction: normalised size ≤ 4|ρ|^J, skipped when that is below tolerance everywhere
    rmax = jnp.max(jnp.where(good, jnp.abs(jax.lax.stop_gradient(rho)), 0.0))
    kept = jnp.asarray(np.arange(J), jnp.int32) < -(-n_terms // _BLOCK) * _BLOCK

    def correction(_):
        ua = jnp.where(kept, ca, 0.0) * _safe_sqrt(Ea)[..., None]
        ub = jnp.where(kept, cb, 0.0) * _safe_sqrt(Eb)[..., None]
        return _matrix_endpoint(fn, kinks, sa, sb, ua, ub, rho, J, radii)

    corr = jax.lax.cond(4 * jax.lax.integer_pow(rmax, J) > tol, correction, lambda _: jnp.zeros_like(S), None)
    T = N * S + corr
    # zero variance: E[σ(0)σ(√q z)] = σ(0)·E[σ(√q z)] exactly; N = 0 (σ ≡ 0 on the support): 0
    f0 = fn(jnp.zeros((), dtype))
    T0 = f0 * jnp.where(za, Mb[..., None, :], Ma[..., :, None])
    return jnp.where(good, T, jnp.where(zero, T0, 0.0))


def _matrix(table, which, fn, kinks, q1, q12, q2, rtol):
    kinks = tuple(float(k) for k in kinks)
    t_range = tuple(float(v) for v in table.t_range)
    cheb, small = _table_arrays(table, which, q1, q12, q2)
    rtol = None if rtol is None else float(rtol)
    return _matrix_jit(
        cheb, small, q1, q12, q2, fn=fn, kinks=kinks, t_range=t_range, rtol=rtol, radii=_table_radii(table)
    )


def nngp_matrix(table, activation: Callable, kinks: Sequence[float], q1, q12, q2, *, rtol=None):
    """T_ik = T(q1_i, q12_ik, q2_k) for q1 (..., R), q12 (..., R, C), q2 (..., C) (leading axes broadcast).

    Equals :func:`nngp` on the broadcast arguments within ``rtol``·√(E[σ(√q1 z)²] E[σ(√q2 z)²]) (default:
    machine epsilon of the dtype), exactly at ρ = ±1 and at zero variance, with O(R·C) memory.

    >>> import jax.numpy as jnp, sympy as sp
    >>> from dualact.symbolic.hermite import build_table
    >>> from dualact.symbolic.symbols import x
    >>> t = build_table(sp.tanh(x), tol=1e-6, max_terms=64)
    >>> q1, q2 = jnp.array([0.5, 1.0]), jnp.array([1.0, 2.0, 0.0])
    >>> q12 = jnp.array([[0.3, -0.2, 0.0], [1.0, 0.5, 0.0]])
    >>> M = nngp_matrix(t, jnp.tanh, (), q1, q12, q2)
    >>> E = nngp(t, jnp.tanh, (), q1[:, None], q12, q2[None, :])
    >>> M.shape, bool(jnp.allclose(M, E, rtol=0, atol=1e-6))
    ((2, 3), True)
    """
    return _matrix(table, "c", activation, kinks, q1, q12, q2, rtol)


def ntk_factor_matrix(table, derivative: Callable, kinks: Sequence[float], q1, q12, q2, *, rtol=None):
    """Ṫ_ik = Ṫ(q1_i, q12_ik, q2_k), the NTK factor counterpart of :func:`nngp_matrix`."""
    return _matrix(table, "d", derivative, kinks, q1, q12, q2, rtol)


def series_from_coefficients(ca, cb, rho):
    """Σ_j ca_j cb_j ρ^j for precomputed (unnormalised) coefficient vectors (no endpoint correction)."""
    return _horner(ca * cb, _clamp(rho, -1.0, 1.0))


def nngp(table, activation: Callable, kinks: Sequence[float], q11, q12, q22):
    """T(q11, q12, q22) = E[σ(u)σ(v)] from the Hermite table (exact at ρ = ±1, on the diagonal, at q = 0)."""
    return _series(table, "c", activation, kinks, q11, q12, q22)


def ntk_factor(table, derivative: Callable, kinks: Sequence[float], q11, q12, q22):
    """Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)] (σ' the a.e. derivative) from the Hermite table."""
    return _series(table, "d", derivative, kinks, q11, q12, q22)
