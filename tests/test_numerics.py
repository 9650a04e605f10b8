"""dualact.runtime.numerics: the vectorised arctan2 behind safe_atan2."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dualact.runtime.numerics import fast_atan2, gram_det, safe_atan2, safe_sqrt, sqrt_gram_det


def _grid(dtype):
    fi = np.finfo(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mags = np.concatenate(
            [
                [0.0, fi.tiny, fi.max, np.inf],
                np.geomspace(fi.tiny, fi.max, 200),
                np.geomspace(0.25, 4, 401),
                np.random.default_rng(0).uniform(0, 3, 200),
            ]
        ).astype(dtype)
    vals = np.concatenate([mags, -mags])
    Y, X = np.meshgrid(vals, vals, indexing="ij")
    rng = np.random.default_rng(1)
    Y = np.concatenate([Y.ravel(), rng.normal(size=200_000).astype(dtype)])
    X = np.concatenate([X.ravel(), rng.normal(size=200_000).astype(dtype)])
    return Y, X


@pytest.mark.parametrize("dtype, max_ulp", [(np.float64, 2), (np.float32, 3)])
def test_fast_atan2_matches_arctan2(dtype, max_ulp):
    Y, X = _grid(dtype)
    fast = np.asarray(jax.jit(fast_atan2)(Y, X))
    ref = np.asarray(jnp.arctan2(Y, X))
    assert fast.dtype == dtype
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    ok = ~np.isnan(ref) & (np.abs(ref) >= np.finfo(dtype).tiny)  # XLA flushes subnormal results to 0
    ulp = np.abs(fast[ok].astype(np.float64) - ref[ok]) / np.spacing(np.abs(ref[ok])).astype(np.float64)
    assert ulp.max() <= max_ulp
    zero = ref == 0  # signed zeros: atan2(±0, x ≥ +0) = ±0
    assert np.array_equal(np.signbit(fast[zero]), np.signbit(ref[zero]))
    assert np.array_equal(np.signbit(fast[ok]), np.signbit(ref[ok]))


def test_fast_atan2_special_values():
    inf, nan, pi = np.inf, np.nan, np.pi
    cases = [
        (0.0, 0.0, 0.0), (-0.0, 0.0, -0.0), (0.0, -0.0, pi), (-0.0, -0.0, -pi),
        (1.0, 0.0, pi / 2), (-1.0, -0.0, -pi / 2), (0.0, -1.0, pi), (-0.0, -1.0, -pi),
        (inf, inf, pi / 4), (inf, -inf, 3 * pi / 4), (-inf, -inf, -3 * pi / 4), (1.0, inf, 0.0),
        (1.0, -inf, pi), (inf, 1.0, pi / 2), (1e308, 1e308, pi / 4), (1e-300, 1e-300, pi / 4),
    ]  # fmt: skip
    for y, x, want in cases:
        got = float(fast_atan2(y, x))
        assert got == pytest.approx(want, rel=1e-15, abs=0), (y, x)
        assert np.signbit(got) == np.signbit(want), (y, x)
    assert np.isnan(float(fast_atan2(nan, 1.0))) and np.isnan(float(fast_atan2(1.0, nan)))


def test_safe_atan2_keeps_its_conventions():
    assert float(safe_atan2(0.0, 0.0)) == pytest.approx(np.pi / 2, rel=1e-16)
    assert float(safe_atan2(0.0, -0.0)) == pytest.approx(np.pi / 2, rel=1e-16)
    gy, gx = jax.grad(safe_atan2, argnums=(0, 1))(0.0, 0.0)
    assert np.isfinite(float(gy)) and np.isfinite(float(gx))
    y, x = 0.3, -1.2
    gy, gx = jax.grad(safe_atan2, argnums=(0, 1))(y, x)
    assert float(gy) == pytest.approx(x / (x * x + y * y), rel=1e-15)
    assert float(gx) == pytest.approx(-y / (x * x + y * y), rel=1e-15)
    v = jnp.linspace(-3, 3, 101)
    np.testing.assert_allclose(jax.vmap(safe_atan2)(v, v[::-1] + 0.1), jnp.arctan2(v, v[::-1] + 0.1), rtol=5e-16)


# --------------------------------------------------------------------------------------------- sqrt_gram_det
def test_sqrt_gram_det_equals_the_plain_root_where_that_is_representable():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.01, 50, 2000), rng.uniform(0.01, 50, 2000)
    c = rng.uniform(-1, 1, 2000) * np.sqrt(a * b)
    got = np.asarray(sqrt_gram_det(a, c, b))
    want = np.asarray(safe_sqrt(gram_det(a, c, b)))
    # the power-of-two scalings are exact: the same rounding as the unscaled formula
    assert np.all(np.abs(got - want) <= 4e-16 * want + 1e-15 * np.sqrt(a * b))
    # independent check in exact rational arithmetic
    from fractions import Fraction

    for i in range(0, 2000, 97):
        det = Fraction(a[i]) * Fraction(b[i]) - Fraction(c[i]) ** 2
        assert abs(got[i] - np.sqrt(float(det))) <= 1e-14 * np.sqrt(a[i] * b[i])


@pytest.mark.parametrize("k", [-500, -250, -100, 100, 250, 500])
def test_sqrt_gram_det_is_exactly_scale_covariant_at_extreme_variances(k):
    """q → 4^k·q scales the root by 4^k exactly, also where q11·q22 over- or underflows (|k| ≥ 250)."""
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0.5, 8, 500), rng.uniform(0.5, 8, 500)
    c = rng.uniform(-1, 1, 500) * np.sqrt(a * b)
    s = 4.0**k
    np.testing.assert_array_equal(
        np.asarray(sqrt_gram_det(a * s, c * s, b * s)), np.asarray(sqrt_gram_det(a, c, b)) * s
    )


def test_sqrt_gram_det_is_exactly_zero_at_rho_pm1_for_any_magnitude():
    q = 10.0 ** np.arange(-300, 301, 7)
    for a, c, b in [(q, q, q), (q, -q, q), (4 * q, 2 * q, q), (q / 4, -q / 2, q)]:
        np.testing.assert_array_equal(np.asarray(jax.jit(sqrt_gram_det)(a, c, b)), 0.0)


def test_sqrt_gram_det_float32_and_gradient():
    v = sqrt_gram_det(jnp.float32(1e30), jnp.float32(3e29), jnp.float32(1e30))
    assert v.dtype == jnp.float32 and abs(float(v) / 1e30 - np.sqrt(1 - 0.09)) < 1e-6  # q11·q22 = 1e60 overflows
    g = jax.grad(sqrt_gram_det, argnums=(0, 1, 2))(2.0, 0.5, 3.0)
    r = np.sqrt(2.0 * 3.0 - 0.25)
    np.testing.assert_allclose(np.asarray(g), [3.0 / (2 * r), -0.5 / r, 2.0 / (2 * r)], rtol=1e-15)
    # clamped at ρ = 1, as safe_sqrt: finite (zero) derivative
    assert np.all(np.asarray(jax.grad(sqrt_gram_det, argnums=(0, 1, 2))(2.0, 2.0, 2.0)) == 0.0)
