"""Bivariate normal probabilities in JAX: orthants P(X > h, Y > k) and rectangles, for correlations up to ±1.

The orthant L(h, k; ρ) of a standard bivariate normal pair with correlation ρ follows the two formulas of
Drezner & Wesolowsky (1990) as refined by Genz (2004, "Numerical computation of rectangular bivariate and
trivariate normal probabilities", Statistics and Computing 14): for abs(ρ) < 0.925, Plackett's identity
∂L/∂ρ = φ₂(h, k; ρ) integrated in θ = asin(ρ'),

    L = Φ(−h)Φ(−k) + 1/(2π) ∫_0^{asin ρ} exp(−(h² + k² − 2hk sin θ)/(2 cos² θ)) dθ,

and for abs(ρ) ≥ 0.925 an expansion around abs(ρ) = 1 whose remainder is integrated in x = √(1 − ρ'²) over
[0, √(1 − ρ²)]. Each integral is a 20-node Gauss–Legendre rule, Genz's largest (both are evaluated and
one is selected, so shapes are static; the nodes are a trailing axis, not unrolled): against mpmath on 300
random (h, k, ρ), abs(h), abs(k) ≤ 6, ρ up to ±(1 − 1e-8), the absolute error is below 2e-16; in the
kernels of :mod:`~dualact.runtime.rectangle_moments` fewer nodes in the second rule cost accuracy (16: ELU
NTK factors 2e-14 off, 12: 3e-13). The complementary square root
a = √(1 − ρ²) is an argument of its own, so that callers form it without cancellation near ρ = ±1
(:func:`~dualact.runtime.numerics.sqrt_gram_det`); at a = 0 the orthant is Φ(−max(h, k)) (ρ = 1) or
max(0, Φ(−h) − Φ(k)) (ρ = −1).

Derivatives are analytic (``jax.custom_jvp``): ∂L/∂h = −φ(h)·Φ((ρh − k)/a), symmetric in k, and
∂L/∂ρ = φ₂(h, k; ρ), taken as 0 at a = 0 (where it is infinite for h = ±k) — the convention of
:func:`~dualact.runtime.numerics.sqrt_gram_det`, whose derivative also vanishes there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from .normal_tails import erfcx

__all__ = ["RULES", "gaps", "normal_cdf", "orthant", "rectangle", "rules_needed"]

_N_LOW, _N_HIGH = 20, 20
_LOW_RULE, _HIGH_RULE = (tuple(tuple(float(v) for v in a) for a in np.polynomial.legendre.leggauss(n))
                         for n in (_N_LOW, _N_HIGH))
_HIGH = 0.925  # abs(ρ) from which the expansion around abs(ρ) = 1 is used
_TWO_PI = 2.0 * math.pi
_SQRT_TWO_PI = math.sqrt(_TWO_PI)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def _nodes(rule, dtype):
    """Gauss–Legendre nodes and weights on [−1, 1] in ``dtype`` (a trailing axis of the integrands)."""
    return jnp.asarray(rule[0], dtype), jnp.asarray(rule[1], dtype)


def normal_cdf(t):
    """Φ(t) = ½ erfc(−t/√2) (relative accuracy in the lower tail).

    >>> float(normal_cdf(0.0))
    0.5
    """
    return 0.5 * erfc(-jnp.asarray(t) * _INV_SQRT_2)


def _phi(t):
    return jnp.exp(-0.5 * t * t) / _SQRT_TWO_PI


def _low(h, k, r):
    """L for abs(ρ) < 0.925: Φ(−h)Φ(−k) plus Plackett's integral in θ ∈ [0, asin ρ]."""
    hk, hs = h * k, 0.5 * (h * h + k * k)
    asr = jnp.arcsin(jnp.clip(r, -_HIGH, _HIGH))
    x, w = _nodes(_LOW_RULE, hk.dtype)
    sn = jnp.sin(0.5 * asr[..., None] * (1.0 + x))
    total = jnp.sum(w * jnp.exp((sn * hk[..., None] - hs[..., None]) / (1.0 - sn * sn)), axis=-1)
    return total * asr / (2.0 * _TWO_PI) + normal_cdf(-h) * normal_cdf(-k)


def _high(h, k, r, a, gap):
    """L for abs(ρ) ≥ 0.925 (a = √(1 − ρ²) > 0; ``gap`` = (h − k')/a with k' = sign(ρ)·k, formed by the caller
    without cancellation)."""
    k = jnp.where(r < 0, -k, k)
    hk, as_ = h * k, a * a
    bs, ratio = jnp.square(gap * a), jnp.square(gap)  # (h − k')² and (h − k')²/(1 − ρ²)
    c, d = (4.0 - hk) / 8.0, (12.0 - hk) / 16.0
    out = a * jnp.exp(-0.5 * (ratio + hk)) * (1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0
                                              + c * d * as_ * as_ / 5.0)
    b = jnp.sqrt(bs)
    # e^{−hk/2}·Φ(−b/a) in one exponent: b² ≥ −4hk, so the product never overflows
    u = jnp.abs(gap) * _INV_SQRT_2
    tail = jnp.exp(-0.5 * hk - u * u) * 0.5 * erfcx(u)
    out = out - tail * _SQRT_TWO_PI * b * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0)
    x, w = _nodes(_HIGH_RULE, hk.dtype)
    t = 0.5 * (1.0 + x)  # x_s = (a t)², so bs/x_s = ratio/t²
    xs = jnp.square(a[..., None] * t)
    rs = jnp.sqrt(1.0 - xs)
    bx = ratio[..., None] / (t * t)
    hk_, c_, d_ = hk[..., None], c[..., None], d[..., None]
    # exp(−(bs/xs + hk)/2)·(exp(−hk(1 − rs)/(2(1 + rs)))/rs − (1 + c xs (1 + d xs))), exponents combined
    terms = jnp.exp(-0.5 * bx - hk_ / (1.0 + rs)) / rs - jnp.exp(-0.5 * (bx + hk_)) * (1.0 + c_ * xs * (1.0 + d_ * xs))
    out = out + 0.5 * a * jnp.sum(w * terms, axis=-1)
    return -out / _TWO_PI


def gaps(h, k, r, a):
    """((h − ρk)/a, (k − ρh)/a), the standardized ends of each variable given the other at its end, formed
    directly (callers that know them without cancellation pass them to :func:`orthant` instead)."""
    a_safe = jnp.where(a > 0, a, 1.0)
    return (h - r * k) / a_safe, (k - r * h) / a_safe


@functools.partial(jax.custom_jvp, nondiff_argnums=(6,))
def orthant(h, k, r, a, gh, gk, rules="both"):
    """L(h, k; ρ) = P(X > h, Y > k) for standard normal X, Y with correlation ρ = r, given a = √(1 − ρ²) and
    the conditional ends gh = (h − ρk)/a, gk = (k − ρh)/a (:func:`gaps`; their value at a = 0 is unused).

    Near ρ = ±1 the result depends on h and k through gh and gk, which rounding in h and k would change by
    eps/a: pass them formed from the problem's own data where it can. ``rules`` (static) is "both", or "low"
    where no entry with abs(ρ) ≥ 0.925 has a > 0: the expansion around abs(ρ) = 1 is then skipped (see
    :func:`rules_needed`).

    >>> h, k, r, a = 0.0, 0.0, 0.5, (1 - 0.25) ** 0.5
    >>> round(float(orthant(h, k, r, a, *gaps(h, k, r, a))), 12)  # 1/4 + asin(1/2)/(2π) = 1/3
    0.333333333333
    """
    dtype = jnp.result_type(h, k, r, a, gh, gk, float)
    h, k, r, a, gh, gk = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (h, k, r, a, gh, gk)))
    high = jnp.abs(r) >= _HIGH
    inner = a > 0
    use = high & inner
    r_high = jnp.where(high, r, 1.0)
    # (h − k')/a, k' = sign(ρ)k: (gh − gk)/(1 + ρ) for ρ > 0 and (gh + gk)/(1 − ρ) for ρ < 0
    gap = jnp.where(r > 0, (gh - gk) / (1.0 + jnp.abs(r_high)), (gh + gk) / (1.0 + jnp.abs(r_high)))
    if rules == "low":
        expansion = jnp.zeros_like(h)
    else:
        expansion = jnp.where(use, _high(h, k, r_high, jnp.where(use, a, 1.0), jnp.where(use, gap, 0.0)), 0.0)
    k_signed = jnp.where(r < 0, -k, k)
    upper = expansion + normal_cdf(-jnp.maximum(h, k_signed))
    lower = jnp.maximum(0.0, normal_cdf(-h) - normal_cdf(-k_signed)) - expansion
    return jnp.where(high, jnp.where(r > 0, upper, lower), _low(h, k, jnp.where(high, 0.0, r)))


def rules_needed(r, a):
    """0 or 1: whether a batch needs only :func:`orthant`'s formula for abs(ρ) < 0.925 ("low") or both
    ("both"; a traced scalar for ``jax.lax.switch``). A "high"-only variant is not compiled: batches whose
    every correlation is beyond 0.925 are rare, and each variant costs its compile time."""
    need_high = jnp.any((jnp.abs(r) >= _HIGH) & (a > 0))
    return jnp.where(need_high, 1, 0)


RULES = ("low", "both")


@orthant.defjvp
def _orthant_jvp(rules, primals, tangents):
    h, k, r, a, gh, gk = primals
    dh, dk, dr = tangents[:3]
    out = orthant(h, k, r, a, gh, gk, rules)
    inner = a > 0
    a_safe = jnp.where(inner, a, 1.0)

    def given(t, other, g):  # P(other variable > its bound | this one = t) = Φ(−g), a step at a = 0
        return jnp.where(inner, normal_cdf(-g), jnp.where(r * t > other, 1.0, jnp.where(r * t == other, 0.5, 0.0)))

    # φ₂(h, k; ρ) = exp(−(h² + gk²)/2)/(2πa): h² − 2ρhk + k² = (1 − ρ²)(h² + gk²)
    density = jnp.where(inner, jnp.exp(-0.5 * (h * h + gk * gk)) / (_TWO_PI * a_safe), 0.0)
    dout = -_phi(h) * given(h, k, gk) * dh - _phi(k) * given(k, h, gh) * dk + density * dr
    return out, dout


def rectangle(lo1, hi1, lo2, hi2, r, a, corner_gaps=None, rules="both"):
    """P(X ∈ [lo1, hi1], Y ∈ [lo2, hi2]) by inclusion–exclusion of orthants; ``None`` ends are ∓∞ (static).

    ``corner_gaps(i, j)`` gives :func:`gaps` at the corner (end i of X, end j of Y; 0 the lower, 1 the upper),
    formed by the caller without cancellation; by default they are computed from the ends; ``rules`` as for
    :func:`orthant`. An interval
    (−∞, hi] is first reflected to [−hi, ∞) (X → −X, which flips the sign of ρ), so that a probability in
    the lower tail is an orthant of its own, not 1 − Φ − Φ + L (which cancels there).

    >>> round(float(rectangle(None, 0.0, None, 0.0, 0.0, 1.0)), 15)
    0.25
    """
    ends1, ends2 = [lo1, hi1], [lo2, hi2]
    flip1 = lo1 is None and hi1 is not None
    flip2 = lo2 is None and hi2 is not None
    if flip1:
        ends1, r = [-hi1, None], -r
    if flip2:
        ends2, r = [-hi2, None], -r

    def tail(i, j):  # P(X > end i, Y > end j) with None as −∞
        h, k = ends1[i], ends2[j]
        if h is None and k is None:
            return 1.0
        if h is None:
            return normal_cdf(-k)
        if k is None:
            return normal_cdf(-h)
        if corner_gaps is None:
            return orthant(h, k, r, a, *gaps(h, k, r, a), rules)
        gh, gk = corner_gaps(1 if flip1 else i, 1 if flip2 else j)
        return orthant(h, k, r, a, -gh if flip1 else gh, -gk if flip2 else gk, rules)

    total = tail(0, 0)
    if ends1[1] is not None:
        total = total - tail(1, 0)
    if ends2[1] is not None:
        total = total - tail(0, 1)
    if ends1[1] is not None and ends2[1] is not None:
        total = total + tail(1, 1)
    return total
