"""Numerically safe elementary functions used by the generated catalog modules.

All functions are jit/vmap/grad compatible and never produce NaN for inputs at the edges of their domain
(ρ = ±1, zero variance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


@jax.custom_jvp
def safe_atan2(y, x):
    """atan2(y, x) with the value π/2 at (0, 0) and a finite derivative everywhere.

    The angle θ between two pre-activations is ``safe_atan2(√(q11 q22 − q12²), q12)``; at zero variance
    (both arguments 0) the two variables are independent, which θ = π/2 expresses.

    >>> float(safe_atan2(0.0, 0.0)) == float(jnp.pi / 2)
    True
    """
    both_zero = (y == 0) & (x == 0)
    return jnp.where(both_zero, jnp.pi / 2, jnp.arctan2(y, jnp.where(both_zero, 1.0, x)))


@safe_atan2.defjvp
def _safe_atan2_jvp(primals, tangents):
    (y, x), (dy, dx) = primals, tangents
    r2 = jnp.maximum(x * x + y * y, 1e-300)
    return safe_atan2(y, x), (x * dy - y * dx) / r2


def positive_part(x):
    return jnp.maximum(x, 0.0)
