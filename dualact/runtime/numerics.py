"""Numerically safe elementary functions used by the generated catalog modules.

All functions are jit/vmap/grad compatible and never produce NaN for inputs at the edges of their domain
(ρ = ±1, zero variance).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


@jax.custom_jvp
def safe_sqrt(y):
    """√max(y, 0), with derivative 0 where y ≤ 0 (clamped square root).

    >>> float(safe_sqrt(-1e-17)), float(safe_sqrt(4.0))
    (0.0, 2.0)
    """
    return jnp.sqrt(jnp.maximum(y, 0.0))


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (y,), (dy,) = primals, tangents
    out = safe_sqrt(y)
    pos = y > 0
    denom = jnp.where(pos, 2.0 * out, 1.0)
    return out, jnp.where(pos, dy / denom, 0.0)


def _unit_gram_det(q11, q12, q22):
    """(det, h1, h2, dtype): q11·q22 − q12² of the variances scaled by exact powers of four,
    q11·4^{−h1}, q22·4^{−h2} ∈ [1/2, 2) (and q12·2^{−h1−h2}), so det·4^{h1+h2} is the determinant."""
    q11, q12, q22 = jnp.broadcast_arrays(*(jnp.asarray(a) for a in (q11, q12, q22)))
    dtype = jnp.result_type(q11, q12, q22, float)
    q11, q12, q22 = q11.astype(dtype), q12.astype(dtype), q22.astype(dtype)
    h1, h2 = jnp.frexp(q11)[1] >> 1, jnp.frexp(q22)[1] >> 1
    d1, d2 = _power_of_two(-h1, dtype), _power_of_two(-h2, dtype)
    a, c, b = (q11 * d1) * d1, (q12 * d1) * d2, (q22 * d2) * d2
    s = jnp.sqrt(jnp.maximum(a * b, 0.0))
    return (s - c) * (s + c), h1, h2, dtype


def gram_det(q11, q12, q22):
    """q11·q22 − q12², the determinant of the 2×2 covariance, written so that it is exactly 0 at ρ = ±1.

    Computed as (s − q12)(s + q12) with s = √(q11·q22): when q12 = ±√(q11 q22) (in particular
    q11 = q12 = q22) this is exactly zero, whereas ``q11*q22 - q12**2`` is compiled by XLA into a fused
    multiply-add whose result is the rounding error of q12², ~1e-16·q², and whose square root is then
    ~1e-8·q — an error of √eps in every arcsine kernel at ρ = ±1. The variances are first scaled by
    exact powers of four (as in :func:`sqrt_gram_det`), so q11·q22 overflows only where the result does
    (before: from q ≈ 1e154 in float64 and 1e19 in float32).

    >>> float(gram_det(0.1, 0.1, 0.1)), float(gram_det(4.0, 1.0, 1.0))
    (0.0, 3.0)
    >>> float(gram_det(1e20, 0.0, 1e10)) == 1e30  # float32 would overflow in q11·q22 unscaled only above 1e38
    True

    Elsewhere the error is that of the plain formula, a few ulp of q11·q22.
    """
    det, h1, h2, dtype = _unit_gram_det(q11, q12, q22)
    u1, u2 = _power_of_two(h1, dtype), _power_of_two(h2, dtype)
    return (((det * u1) * u1) * u2) * u2


def _power_of_two(n, dtype):
    """2**n as ``dtype`` from its bit pattern (exact; n an int32 array within the normal exponent range)."""
    if np.dtype(dtype) == np.float64:
        bits = (n.astype(jnp.int64) + 1023) << 52
        return jax.lax.bitcast_convert_type(bits, jnp.float64)
    bits = (n.astype(jnp.int32) + 127) << 23
    return jax.lax.bitcast_convert_type(bits, jnp.float32).astype(dtype)


def variance_scale(*variances, degree=None):
    """s = 4^k, the scale by which generated formulas divide the variances, without gradient (exact).

    Generated formulas with polynomials of high degree are evaluated in p = q/s and multiplied by s^D
    (see :mod:`dualact.codegen.scaling`), which keeps q11²·q22² from overflowing where the result does not.
    Without ``degree``, s is the largest power of four not above max(1, variances…), so p ≤ 1. With the
    formula's largest degree ``degree`` (static), p is allowed up to 4^h with p^(2·degree) ≤ 2^(7/8·emax)
    (autodiff squares denominators: GeLU's gradient overflowed at q = 1e53 in float64 with p^degree as the
    bound), that is up to 2^18 for degree 3 in float32 and 2^112 for degree 4 in float64; s = 1 below
    that. A formula whose leading terms cancel (ρ = ±1, where q11·q22 − q12² = 0) is then left with terms
    like r·p (r = 1/s) instead of r: at q = 1e30, (r·p)^(3/2) ~ 2e-31 is a normal float32 number where
    r^(3/2) ~ 1e-45 was not (the NTK factors of the Gaussian and GeLU were inf from q ≈ 1e25 in float32).

    >>> float(variance_scale(0.5, 3.0)), float(variance_scale(1e10, 2.0)) == 4.0**16
    (1.0, True)
    >>> float(variance_scale(1e10, 2.0, degree=3)), float(variance_scale(np.float32(2.0**60), degree=3)) == 4.0**22
    (1.0, True)
    """
    dtype = jnp.result_type(*variances, float)
    m = jnp.asarray(1.0, dtype)
    for v in variances:
        m = jnp.maximum(m, jnp.asarray(v, dtype))
    k = (jnp.frexp(m)[1] - 1) >> 1  # m ∈ [2^(e−1), 2^e): k = floor((e − 1)/2)
    if degree:
        emax = jnp.finfo(dtype).maxexp  # 128 (float32), 1024 (float64)
        headroom = max(int(7 * emax) // (32 * int(math.ceil(float(degree)))) - 1, 0)
        k = jnp.maximum(k - headroom, 0)
    return jax.lax.stop_gradient(_power_of_two(2 * k, dtype))


def unscale(value, s, degree):
    """value·s^degree for a scale s = 4^k (:func:`variance_scale`) and a static degree, one factor s (or
    1/s) at a time after the value: a rescaled formula f̃ can be of order s^{-3/2} where its leading term
    vanishes (ρ = ±1), and s^D formed first over- or underflows although f̃·s^D is representable.

    >>> float(unscale(2.0, 4.0, -1.5))
    0.25
    """
    value = jnp.asarray(value)
    whole, rest = divmod(abs(float(degree)), 1.0)
    step = s if degree > 0 else 1 / s
    for _ in range(int(whole)):
        value = value * step
    if rest:
        value = value * step**rest
    return value


@jax.custom_jvp
def sqrt_gram_det(q11, q12, q22):
    """√max(q11·q22 − q12², 0) for variances of any magnitude the dtype can hold, exactly 0 at ρ = ±1.

    :func:`gram_det` forms q11·q22, which overflows for variances above ~1e154 (float64) and falls into
    the flushed subnormals below ~1e-154 — although the root itself is at most √(q11 q22) ≤ max(q11, q22).
    Here q11 and q22 are first scaled by even powers of two, 4^{−h1} and 4^{−h2}, into [1/2, 2), and q12 by
    2^{−h1−h2}; these scalings are exact, so the result equals 2^{h1+h2}·√gram_det of the scaled arguments
    to the last bit, and q12 = ±√(q11 q22) (in particular q11 = q12 = q22) still gives exactly 0.

    >>> round(float(sqrt_gram_det(1e30, 0.5e30, 1e30) / 1e30), 5)  # in float32, q11·q22 = 1e60 overflows
    0.86603
    >>> float(sqrt_gram_det(3e-30, 3e-30, 3e-30)), round(float(sqrt_gram_det(4.0, 1.0, 1.0)) ** 2, 5)
    (0.0, 3.0)
    """
    det, h1, h2, dtype = _unit_gram_det(q11, q12, q22)
    root = jnp.sqrt(jnp.maximum(det, 0.0))
    return (root * _power_of_two(h1, dtype)) * _power_of_two(h2, dtype)


@sqrt_gram_det.defjvp
def _sqrt_gram_det_jvp(primals, tangents):
    (q11, q12, q22), (d11, d12, d22) = primals, tangents
    root = sqrt_gram_det(q11, q12, q22)
    pos = root > 0
    half_inv = jnp.where(pos, 0.5 / jnp.where(pos, root, 1.0), 0.0)  # clamped at 0, as safe_sqrt
    return root, (q22 * half_inv) * d11 + (q11 * half_inv) * d22 - (2.0 * q12 * half_inv) * d12


@jax.custom_jvp
def safe_atan2(y, x):
    """atan2(y, x) with the value π/2 at (0, 0) and a finite derivative everywhere.

    The angle θ between two pre-activations is ``safe_atan2(√(q11 q22 − q12²), q12)``; at zero variance
    (both arguments 0) the two variables are independent, which θ = π/2 expresses.

    >>> float(safe_atan2(0.0, 0.0)) == float(jnp.pi / 2)
    True
    """
    both_zero = (y == 0) & (x == 0)
    return jnp.where(both_zero, jnp.pi / 2, fast_atan2(y, jnp.where(both_zero, 1.0, x)))


@safe_atan2.defjvp
def _safe_atan2_jvp(primals, tangents):
    (y, x), (dy, dx) = primals, tangents
    r2 = jnp.maximum(x * x + y * y, 1e-300)
    return safe_atan2(y, x), (x * dy - y * dx) / r2


def _atan_coefficients(degree: int = 13) -> tuple[float, ...]:
    """q(z) = (atan(u)/u − 1)/z, z = u² ≤ 1/4, as a polynomial: a Chebyshev fit (≈ minimax) of the Taylor
    series Σ_{k≥1} (−1)^k z^{k−1}/(2k+1) (no cancellation), error ≈ 1e-17."""
    zmax = 0.25
    nodes = (np.cos((2 * np.arange(64) + 1) * np.pi / 128) + 1) / 2 * zmax
    q = np.zeros_like(nodes)
    for k in range(80, 0, -1):
        q = q * nodes + (-1) ** k / (2 * k + 1)
    cheb = np.polynomial.Chebyshev.fit(nodes, q, degree, domain=[0, zmax])
    return tuple(float(c) for c in cheb.convert(kind=np.polynomial.Polynomial).coef)


_ATAN_POLY = _atan_coefficients()


def _split(value: float, dtype) -> tuple[float, float]:
    """π/k (``value`` = math.pi/k, k a power of 2) as hi + lo, hi the nearest number of ``dtype``."""
    hi = float(np.asarray(value, dtype))
    if np.dtype(dtype) == np.float64:  # π = math.pi + 1.2246467991473532e-16 (the tail scales with 1/k)
        return hi, 1.2246467991473532e-16 * value / math.pi
    return hi, float(np.asarray(value - hi, dtype))


def fast_atan2(y, x):
    """``jnp.arctan2(y, x)`` from vectorisable arithmetic: within 2 ulp of it in float64; in float32 within
    2.2 ulp of the exact value (3 ulp of ``jnp.arctan2``, itself 1.5 ulp from exact).

    XLA's CPU arctan2 is a scalar libm call; this is one division and a polynomial, atan u = u + u·z·q(z)
    (z = u²), after the reductions t = min/max ≤ 1 and, for t > 1/2, atan t = π/4 + atan((t − 1)/(t + 1)).
    IEEE special values as ``arctan2``: signed zeros (atan2(±0, −0) = ±π), infinities (atan2(±∞, ±∞) = ±π/4,
    ±3π/4), NaN in → NaN out. Subnormal inputs and results are flushed to zero, as in all XLA CPU arithmetic.
    Differentiable by autodiff away from (0, 0); :func:`safe_atan2` wraps it with the exact derivative and
    the value π/2 at (0, 0).

    >>> round(float(fast_atan2(1.0, -1.0) / jnp.pi), 15)
    0.75
    """
    y, x = jnp.asarray(y), jnp.asarray(x)
    dtype = jnp.result_type(y, x, float)
    y, x = y.astype(dtype), x.astype(dtype)
    ax, ay = jnp.abs(x), jnp.abs(y)
    mx, mn = jnp.maximum(ax, ay), jnp.minimum(ax, ay)
    both_inf = jnp.isinf(ax) & jnp.isinf(ay)
    big = mn > 0.5 * mx  # then mn − mx is exact (Sterbenz) and |u| ≤ 1/3; else u = t ≤ 1/2
    # exact power-of-two scalings: mn ± mx must neither overflow nor fall into the (flushed) subnormals
    fi = jnp.finfo(dtype)
    up = float(2.0 ** (fi.nmant + 2))
    scale = jnp.where(mx > fi.max / 4, 0.25, jnp.where(mx < float(fi.tiny) * up, up, 1.0)).astype(dtype)
    mx, mn = mx * scale, mn * scale
    num = jnp.where(big, mn - mx, mn)
    den = jnp.where(big, mn + mx, mx)
    u = num / jnp.where(den == 0, 1.0, den)
    u = jnp.where(both_inf, 0.0, u)
    z = u * u
    poly = jnp.asarray(_ATAN_POLY[-1], dtype)
    for c in _ATAN_POLY[-2::-1]:
        poly = poly * z + c
    a = u + u * (z * poly)
    # π/4, π/2, π as hi + lo pairs of the dtype: the low parts keep the reductions within an ulp
    (q4, q4_lo), (q2, q2_lo), (pi, pi_lo) = (_split(math.pi / k, dtype) for k in (4, 2, 1))
    a = jnp.where(big | both_inf, q4 + (a + q4_lo), a)
    a = jnp.where(ay > ax, (q2 - a) + q2_lo, a)
    a = jnp.where(jnp.signbit(x), (pi - a) + pi_lo, a)
    a = jnp.where(jnp.signbit(y), -a, a)
    return jnp.where(jnp.isnan(x) | jnp.isnan(y), jnp.nan, a)


def positive_part(x):
    return jnp.maximum(x, 0.0)


def exp_diff(a, b, d):
    """e^a − e^b with relative accuracy where a ≈ b, given d = a − b formed exactly by the caller (the
    generated code passes the symbolically simplified difference, e.g. 2·q12 for e^{q12 − t} − e^{−q12 − t}):
    −e^a·expm1(−d) for d ≥ 0, e^b·expm1(d) for d < 0, so no factor exceeds the result's own size and both
    branches and their gradients stay finite.

    >>> round(float(exp_diff(1e-9, -1e-9, 2e-9)) / 2e-9, 12)  # 2·sinh(1e-9)/2e-9; plain e^a − e^b: 1.0000000272
    1.0
    """
    a, b, d = jnp.broadcast_arrays(*(jnp.asarray(v, jnp.result_type(a, b, d, float)) for v in (a, b, d)))
    up = d >= 0
    zero = jnp.zeros_like(d)
    down = jnp.exp(b) * jnp.expm1(jnp.where(up, zero, d))
    return jnp.where(up, -jnp.exp(a) * jnp.expm1(-jnp.where(up, d, zero)), down)


def gate(g, value, at_zero=0.5):
    """Heaviside(g)·value with Heaviside(0) = ``at_zero``, by selection: 0 where g < 0 even where ``value`` is
    inf or NaN (ELU's e^x for x > 709, a log of a negative number), which the product 0·inf = NaN is not.

    >>> import jax.numpy as jnp
    >>> [float(v) for v in gate(jnp.array([-1.0, 0.0, 1.0]), jnp.array([jnp.inf, 2.0, 3.0]))]
    [0.0, 1.0, 3.0]
    """
    return by_sign(g, value, jnp.zeros_like(value), at_zero * value)


def by_sign(g, positive, negative, zero):
    """``positive`` where g > 0, ``negative`` where g < 0, ``zero`` where g = 0 (a sum of Heaviside products
    of one argument, each branch simplified on its own: exact zeros, no 0·inf = NaN)."""
    dtype = jnp.result_type(g, positive, negative, zero)
    dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
    return jnp.where(g > 0, positive, jnp.where(g < 0, negative, zero)).astype(dtype)
