"""E[f(u)·g(v)] in closed form for f, g piecewise polynomial × e^{βx}, via truncated bivariate normal moments.

f and g are given as pieces ``((lo, hi, ((β, (p_0, p_1, …)), …)), …)`` (see :mod:`dualact.runtime.quadrature_1d`).
Each product of a term p(u)·e^{βu} on u ∈ I with a term r(v)·e^{γv} on v ∈ J is, after exponential tilting,

    E[p(u) e^{βu} 1_I(u) · r(v) e^{γv} 1_J(v)] = e^m · E'[p(u) r(v) 1_I(u) 1_J(v)],

with m = ½(β²q11 + 2βγ q12 + γ² q22) and (u, v) under E' normal with the same covariance Q and mean
μ = Q·(β, γ). The truncated moments M_ab = E'[u^a v^b 1_I(u) 1_J(v)] follow from Stein's identity
E'[(u − μ1)·h] = q11 E'[∂_u h] + q12 E'[∂_v h] applied to h = u^{a−1} v^b 1_I(u) 1_J(v):

    M_ab = μ1 M_{a−1,b} + q11 [(a−1) M_{a−2,b} + Σ_{t ∈ ∂I} ± t^{a−1} D^u_b(t)]
                        + q12 [b M_{a−1,b−1} + Σ_{t ∈ ∂J} ± t^b D^v_{a−1}(t)],

(+ at a lower end, − at an upper end), and likewise in v for M_{0b}. The boundary terms are one-dimensional:
D^u_b(t) = p_u(t)·E'[v^b 1_J(v) | u = t], the density of u at the end times a truncated moment of the
conditional normal v | u = t, with mean μ2 + q12 (t − μ1)/q11 and standard deviation √(q11 q22 − q12²)/√q11.
M_00 = e^m·P'(u ∈ I, v ∈ J) is a rectangle probability of the bivariate normal
(:mod:`dualact.runtime.bivariate_normal`). Nothing is integrated numerically except inside that
probability (two 20-node Gauss–Legendre rules per orthant).

The formulas are exact, but the tilt e^m (β²q/2 in the exponent) and the inclusion–exclusion of the
rectangle cancel when the variances are large or the pieces' ends lie far in the Gaussian tails: callers use
them where those stay moderate (:class:`~dualact.runtime.quadrature_1d.Kernel1D` checks this per call and
otherwise integrates numerically).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from . import branching
from .bivariate_normal import RULES, normal_cdf, rectangle, rules_needed
from .normal_tails import truncated_moments
from .taylor_pieces import needs_taylor

__all__ = ["expectation", "max_rate", "within_reach"]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _truncated(lo, hi, mu, s, n):
    """[E[x^j 1{x ∈ [lo, hi]}] for j ≤ n], x ~ N(mu, s²), s ≥ 0 (a point mass at s = 0, half weight on an end);
    ``lo``/``hi`` static floats or ``None`` (∓∞)."""
    pos = s > 0
    s_safe = jnp.where(pos, s, 1.0)
    inv = 1.0 / s_safe
    al = None if lo is None else (lo - mu) * inv
    be = None if hi is None else (hi - mu) * inv
    if al is None and be is None:
        mass = jnp.ones_like(mu)
    elif al is None:
        mass = normal_cdf(be)
    elif be is None:
        mass = normal_cdf(-al)
    else:
        mass = jnp.where(al > 0, normal_cdf(-al) - normal_cdf(-be), normal_cdf(be) - normal_cdf(al))
    pl = None if al is None else jnp.exp(-0.5 * al * al) * _INV_SQRT_2PI * s_safe
    ph = None if be is None else jnp.exp(-0.5 * be * be) * _INV_SQRT_2PI * s_safe
    out = truncated_moments(mass, mu, s_safe, ((lo, pl), (hi, ph)), n)
    # s = 0: the point mass at mu
    weight = jnp.ones_like(mu)
    if lo is not None:
        weight = jnp.where(mu < lo, 0.0, jnp.where(mu == lo, 0.5 * weight, weight))
    if hi is not None:
        weight = jnp.where(mu > hi, 0.0, jnp.where(mu == hi, 0.5 * weight, weight))
    return [jnp.where(pos, o, weight * mu**j) for j, o in enumerate(out)]


def _ends(lo, hi):
    return [(t, sign) for t, sign in ((lo, 1.0), (hi, -1.0)) if t is not None]


def _boundary(ends, other, mu_self, tilt_other, q_self, q12, root_self, sgd, log_tilt, n):
    """{t: [D_j(t) for j ≤ n]}: e^m·density of this variable at each end t times the truncated moments of the
    other variable given this one = t (``other`` its interval)."""
    out = {}
    for t, _ in ends:
        dt = t - mu_self
        density = jnp.exp(log_tilt - 0.5 * dt * dt / q_self) * _INV_SQRT_2PI / root_self
        # μ_other + (q12/q_self)(t − μ_self) = (q12/q_self)·t + tilt_other·(q11 q22 − q12²)/q_self, formed so:
        # the two terms of the first form cancel near ρ = ±1, where the conditional deviation sgd/root_self is
        # small; at ρ = ±1 a kink at 0 maps to exactly 0, where the point mass takes half its weight
        cond_mean = q12 / q_self * t + tilt_other * (sgd * sgd) / q_self
        out[t] = [density * c for c in _truncated(*other, cond_mean, sgd / root_self, n)]
    return out


def _pair(I, J, p, c, q11, q12, q22, a1, a2, r, ra, sgd, beta, gamma, rules):
    """Σ_ab p_a c_b e^m·M_ab for the term pair p(u)·e^{βu} on I, c(v)·e^{γv} on J."""
    A, B = len(p) - 1, len(c) - 1
    log_tilt = 0.5 * (beta * beta * q11 + 2.0 * beta * gamma * q12 + gamma * gamma * q22)
    mu1 = beta * q11 + gamma * q12
    mu2 = beta * q12 + gamma * q22
    ends_i, ends_j = _ends(*I), _ends(*J)
    du = _boundary(ends_i, J, mu1, gamma, q11, q12, a1, sgd, log_tilt, B)
    dv = _boundary(ends_j, I, mu2, beta, q22, q12, a2, sgd, log_tilt, max(A - 1, 0))

    def std(t, mu, root):
        return None if t is None else (t - mu) / root

    sgd_safe = jnp.where(sgd > 0, sgd, 1.0)

    def corner_gaps(i, j):  # (h − ρk)/a and (k − ρh)/a at the corner (I[i], J[j]), without cancellation
        t1, t2 = I[i], J[j]
        gh = a2 * (t1 - q12 / q22 * t2) / sgd_safe - beta * sgd / a2
        gk = a1 * (t2 - q12 / q11 * t1) / sgd_safe - gamma * sgd / a1
        return gh, gk

    m00 = jnp.exp(log_tilt) * rectangle(std(I[0], mu1, a1), std(I[1], mu1, a1),
                                        std(J[0], mu2, a2), std(J[1], mu2, a2), r, ra, corner_gaps, rules)
    recursion = _unrolled if max(A, B) <= _UNROLL else _scanned
    return recursion(m00, du, dv, ends_i, ends_j, mu1, mu2, q11, q12, q22, p, c)


# Degrees up to _UNROLL (the activations' own pieces) run the recursion unrolled, entry by entry: fused, it is
# 25% faster than the scan at n = 1000. Higher degrees (Taylor polynomials, :mod:`.taylor_pieces`) run it as
# scans, whose program does not grow with the degree: unrolled, a pair of degree-13 polynomials compiled for
# minutes under grad.
_UNROLL = 3


def _unrolled(m00, du, dv, ends_i, ends_j, mu1, mu2, q11, q12, q22, p, c):
    A, B = len(p) - 1, len(c) - 1
    M = [[None] * (B + 1) for _ in range(A + 1)]
    M[0][0] = m00
    for b in range(1, B + 1):
        nxt = mu2 * M[0][b - 1] + (b - 1) * q22 * (M[0][b - 2] if b > 1 else 0.0)
        nxt = nxt + q22 * sum(sign * t ** (b - 1) * dv[t][0] for t, sign in ends_j)
        nxt = nxt + q12 * sum(sign * du[t][b - 1] for t, sign in ends_i)
        M[0][b] = nxt
    for a in range(1, A + 1):
        for b in range(B + 1):
            nxt = mu1 * M[a - 1][b]
            if a > 1:
                nxt = nxt + (a - 1) * q11 * M[a - 2][b]
            nxt = nxt + q11 * sum(sign * t ** (a - 1) * du[t][b] for t, sign in ends_i)
            if b:
                nxt = nxt + b * q12 * M[a - 1][b - 1]
            nxt = nxt + q12 * sum(sign * t**b * dv[t][a - 1] for t, sign in ends_j)
            M[a][b] = nxt
    return sum(pa * cb * M[ia][ib] for ia, pa in enumerate(p) for ib, cb in enumerate(c) if pa and cb)


def _scanned(m00, du, dv, ends_i, ends_j, mu1, mu2, q11, q12, q22, p, c):
    """The recursion of :func:`_unrolled` as two scans: row 0 in b, then whole rows in a (b on the last axis)."""
    A, B = len(p) - 1, len(c) - 1
    dtype, batch = jnp.result_type(m00), jnp.shape(m00)
    m00 = jnp.broadcast_to(m00, batch)
    zero = jnp.zeros(batch, dtype)

    def stacked(values):  # batch arrays → (len, *batch)
        return jnp.stack([jnp.broadcast_to(v, batch).astype(dtype) for v in values]) if values else \
            jnp.zeros((0, *batch), dtype)

    def powers(ends, n):  # (n + 1, len(ends)): sign·t^k for k ≤ n
        return jnp.asarray([[sign * float(t) ** k for t, sign in ends] for k in range(n + 1)], dtype).reshape(
            n + 1, len(ends))

    signs_i = jnp.asarray([sign for _, sign in ends_i], dtype).reshape((-1,) + (1,) * len(batch))
    expand = (-1,) + (1,) * len(batch)
    dv0 = sum((dv[t][0] * powers(ends_j, B)[:, j].reshape(expand) for j, (t, _) in enumerate(ends_j)),
              jnp.zeros((B + 1, *batch), dtype))  # Σ_t sign·t^b·dv[t][0]

    def step_b(carry, xs):
        r2, r1 = carry
        b, dv_b, du_b = xs
        nxt = mu2 * r1 + (b - 1.0) * q22 * r2 + q22 * dv_b + q12 * jnp.sum(signs_i * du_b, 0)
        return (r1, nxt), nxt

    du_cols = jnp.stack([stacked([du[t][b] for t, _ in ends_i]) for b in range(B)]) if B else None
    if B:  # step b takes sign·t^{b−1}·dv[t][0] and du[t][b − 1]
        _, rest = jax.lax.scan(step_b, (zero, m00), (jnp.arange(1, B + 1, dtype=dtype), dv0[:-1], du_cols))
        row0 = jnp.moveaxis(jnp.concatenate([m00[None], rest]), 0, -1)
    else:
        row0 = m00[..., None]
    rows = row0[None]
    if A:
        bs = jnp.arange(B + 1, dtype=dtype)
        mu1_, q11_, q12_ = (jnp.asarray(v, dtype)[..., None] for v in (mu1, q11, q12))
        du_rows = [jnp.moveaxis(stacked(du[t]), 0, -1) for t, _ in ends_i]  # (*batch, B + 1) per end of I
        pw_jb = powers(ends_j, B)  # sign·t^b
        dv_a = jnp.stack([stacked([dv[t][a - 1] for t, _ in ends_j]) for a in range(1, A + 1)])

        def step_a(carry, xs):
            prev2, prev1 = carry
            a, pw_i, dv_j = xs
            nxt = mu1_ * prev1 + (a - 1.0) * q11_ * prev2
            for i, row in enumerate(du_rows):
                nxt = nxt + q11_ * pw_i[i] * row
            shifted = jnp.concatenate([jnp.zeros_like(prev1[..., :1]), prev1[..., :-1]], -1)
            nxt = nxt + q12_ * bs * shifted
            for j in range(len(ends_j)):
                nxt = nxt + q12_ * pw_jb[:, j] * dv_j[j][..., None]
            return (prev1, nxt), nxt

        xs = (jnp.arange(1, A + 1, dtype=dtype), powers(ends_i, A)[:-1], dv_a)  # sign·t^{a−1}, dv[t][a − 1]
        _, more = jax.lax.scan(step_a, (jnp.zeros_like(row0), row0), xs)
        rows = jnp.concatenate([rows, more])
    weighted = jnp.tensordot(jnp.asarray(p, dtype), rows, axes=(0, 0))
    return jnp.sum(weighted * jnp.asarray(c, dtype), -1)


def expectation(pieces_u, pieces_v, q11, q12, q22, sgd):
    """E[f(u)·g(v)] for (u, v) ~ N(0, [[q11, q12], [q12, q22]]), q11, q22 > 0, f and g given by their pieces;
    ``sgd`` = √(q11 q22 − q12²) (:func:`~dualact.runtime.numerics.sqrt_gram_det`, exactly 0 at ρ = ±1)."""
    a1, a2 = jnp.sqrt(q11), jnp.sqrt(q22)
    r = q12 / (a1 * a2)
    ra = sgd / (a1 * a2)

    def total(rules):
        out = jnp.zeros_like(q12)
        for lo1, hi1, terms1 in pieces_u:
            for beta, p in terms1:
                for lo2, hi2, terms2 in pieces_v:
                    for gamma, c in terms2:
                        out = out + _pair((lo1, hi1), (lo2, hi2), p, c, q11, q12, q22, a1, a2, r, ra, sgd, beta,
                                          gamma, rules)
        return out

    # the batch's correlations decide which of the orthant's two formulas are evaluated (typical kernel
    # blocks have no abs(ρ) ≥ 0.925 off the diagonal: one formula instead of two, 2.5 times faster)
    branches = [functools.partial(total, rules) for rules in RULES]
    return branching.switch(rules_needed(jax.lax.stop_gradient(r), jax.lax.stop_gradient(ra)), branches)


# Where the closed form keeps ~1e-13 normalised accuracy in float64 (measured against the numerical rule on
# 3000 random entries per range, ρ up to 1 − 1e-9 and ±1):
# * the tilt e^{βu} cancels against the Gaussian tail for β²q beyond ~20 (ELU's NTK factor was 3e-13 off at
#   q = 30, 8e-10 at q = 60);
# * e^{βu} − 1 cancels against itself for small β²q, as eps/(β²q) (SELU 1.5e-13 at q = 2e-3, 2e-10 at 1e-6),
#   where a piece is a sum of such terms (a single term p(u)·e^{βu} does not cancel);
# * a kink k ≠ 0 far in the tail, k²/q > 4, leaves moments that are small differences of large boundary terms
#   (shifted ReLU 6e-7 off at q = 1e-3);
# * a bounded piece much narrower than the standard deviation cancels in the moment recurrence (hard-tanh
#   5e-13 at q = 2e3).
_TILT_MAX = 20.0
_TILT_MIN = 1.0 / 512.0
_KINK_DEPTH = 4.0
_NARROW_RATIO = 16.0


def max_rate(pieces) -> float:
    """max abs(β) over the exponential factors e^{βx} of the pieces (0.0 for piecewise polynomials)."""
    return max((abs(float(beta)) for _, _, terms in pieces for beta, _ in terms), default=0.0)


def within_reach(pieces, q11, q22):
    """Whether :func:`expectation` is accurate (see above) for every variance in the arrays q11 and q22 (one
    boolean for the whole batch, without gradient; variances must be positive)."""
    qs = jax.lax.stop_gradient(jnp.concatenate([jnp.ravel(q11), jnp.ravel(q22)]))
    q_min, q_max = jnp.min(qs), jnp.max(qs)
    ok = jnp.asarray(True)
    rate = max_rate(pieces)
    if rate:
        ok = ok & (rate * rate * q_max <= _TILT_MAX)
        if needs_taylor(pieces):  # a sum of terms that cancel as the tilt vanishes
            ok = ok & (rate * rate * q_min >= _TILT_MIN)
    ends = [t for lo, hi, terms in pieces if terms for t in (lo, hi) if t is not None]
    depth = max((t * t for t in ends), default=0.0)
    if depth:
        ok = ok & (depth <= _KINK_DEPTH * q_min)
    widths = [hi - lo for lo, hi, terms in pieces if terms and lo is not None and hi is not None]
    if widths:
        ok = ok & (q_max <= jnp.square(_NARROW_RATIO * min(widths)))
    return ok
