"""The closed form of the one-dimensional tier: bivariate normal orthants (Genz's formulas, in JAX) and the
truncated bivariate moments built on them (:mod:`dualact.runtime.rectangle_moments`).

References: mpmath quadrature for the orthants; for the kernels, the tier's composite Gauss–Legendre rule
(an independent numerical method, 1e-14 against a 48-node rule) and, through ``test_quadrature_1d``, 2-D
kink-aware quadrature.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

from dualact.runtime import rectangle_moments
from dualact.runtime.bivariate_normal import gaps, orthant, rectangle
from dualact.runtime.numerics import sqrt_gram_det


def _orthant_mp(h, k, r):
    """P(X > h, Y > k) by mpmath: ∫_h^∞ φ(x) Φ((ρx − k)/√(1 − ρ²)) dx, split at the layer x = k/ρ."""
    mp.mp.dps = 30
    h, k, r = mp.mpf(h), mp.mpf(k), mp.mpf(r)
    a = mp.sqrt((1 - r) * (1 + r))
    if a == 0:
        return mp.ncdf(-max(h, k)) if r > 0 else max(mp.mpf(0), mp.ncdf(-h) - mp.ncdf(k))
    centre = k / r if r != 0 else h + 2
    cuts = (centre - 10 * a, centre - a, centre, centre + a, centre + 10 * a, h + 1, h + 4, h + 10)
    return mp.quad(lambda x: mp.npdf(x) * mp.ncdf((r * x - k) / a), sorted({h, *(c for c in cuts if c > h)}) + [mp.inf])


def _orthant_points():
    rng = np.random.default_rng(11)
    pts = []
    for r in (0.0, 0.2, -0.6, 0.924, 0.926, -0.95, 0.999, -(1 - 1e-7), 1 - 1e-10, 1.0, -1.0):
        for _ in range(3):
            h, k = rng.uniform(-6, 6, 2)
            pts.append((float(h), float(k), r))
    return pts + [(0.0, 0.0, 1 - 1e-12), (7.0, 7.5, 0.99), (-2.0, 2.0, -0.9999)]


@functools.cache
def _orthant_reference():
    return [float(_orthant_mp(*p)) for p in _orthant_points()]


def _orthant(h, k, r, rules="both"):
    a = jnp.sqrt((1.0 - r) * (1.0 + r))
    return orthant(h, k, r, a, *gaps(h, k, r, a), rules)


def test_orthant_against_mpmath():
    """Absolute error ≤ 1e-15 for abs(h), abs(k) ≤ 7 and ρ in both formulas' ranges, at ±(1 − 1e-10) and ±1."""
    p = np.array(_orthant_points())
    got = np.asarray(jax.jit(_orthant)(*(jnp.asarray(p[:, i]) for i in range(3))))
    np.testing.assert_allclose(got, _orthant_reference(), rtol=0, atol=1e-15)


def test_orthant_low_rule_only_where_no_high_correlation():
    """rules="low" equals the full evaluation wherever abs(ρ) < 0.925 or ρ = ±1 exactly."""
    p = np.array([q for q in _orthant_points() if abs(q[2]) < 0.925 or abs(q[2]) == 1.0])
    args = [jnp.asarray(p[:, i]) for i in range(3)]
    np.testing.assert_array_equal(np.asarray(_orthant(*args, "low")), np.asarray(_orthant(*args)))


def test_orthant_derivatives():
    """∂L/∂h = −φ(h)Φ((ρh − k)/a), ∂L/∂ρ = φ₂(h, k; ρ) (the custom JVP) against central differences of mpmath."""
    for h, k, r in [(0.3, -0.7, 0.4), (1.1, 0.9, 0.97), (-0.5, 0.2, -0.95)]:
        g = jax.grad(_orthant, argnums=(0, 1, 2))(h, k, r)
        eps = 1e-5
        fd = [(_orthant_mp(h + eps, k, r) - _orthant_mp(h - eps, k, r)) / (2 * eps),
              (_orthant_mp(h, k + eps, r) - _orthant_mp(h, k - eps, r)) / (2 * eps),
              (_orthant_mp(h, k, r + eps) - _orthant_mp(h, k, r - eps)) / (2 * eps)]
        np.testing.assert_allclose(np.asarray(g, float), np.asarray(fd, float), rtol=1e-7, atol=1e-10)


def test_rectangle_reflects_lower_tails():
    """P(X < −8, Y < −8) at ρ = 0.5 keeps its relative accuracy (1 − Φ − Φ + L would give 0 or noise)."""
    got = float(rectangle(None, -8.0, None, -8.0, 0.5, math.sqrt(0.75)))
    want = float(_orthant_mp(8.0, 8.0, 0.5))
    assert want > 0 and abs(got - want) <= 1e-13 * want


# -- kernels ---------------------------------------------------------------------------------------------------
def _kernel(name):
    import importlib

    return importlib.import_module(f"dualact.catalog.{name}")._KERNEL


def _entries(lo, hi, n=400, seed=5):
    rng = np.random.default_rng(seed)
    q11, q22 = np.exp(rng.uniform(math.log(lo), math.log(hi), (2, n)))
    kind = rng.integers(0, 3, n)
    r = np.where(kind == 0, rng.uniform(-1, 1, n), 1 - 10.0 ** -rng.uniform(1, 10, n))
    r = np.where(kind == 2, -r, r)
    r[:6], r[6:12] = 1.0, -1.0
    return q11, r * np.sqrt(q11 * q22), q22


@pytest.mark.parametrize("name, lo, hi", [("elu", 1 / 16, 16.0), ("selu", 0.01, 16.0), ("relu_shifted", 1 / 16, 300.0)])
def test_closed_form_matches_the_rule(name, lo, hi):
    """Within its reach the closed form and the composite rule agree to 1e-13 normalised (NNGP and NTK,
    ρ up to 1 − 1e-10 and ±1), and the closed form is what the kernel uses there."""
    k = _kernel(name)
    q11, q12, q22 = (jnp.asarray(v) for v in _entries(lo, hi))
    for key, diag in (("activation", k.diag), ("derivative", k.ntk_diag)):
        pieces = k.pieces[key]
        assert bool(rectangle_moments.within_reach(pieces, q11, q22))
        closed = jax.jit(lambda a, b, c, p=pieces: rectangle_moments.expectation(p, p, a, b, c, sqrt_gram_det(a, b, c)))
        got = np.asarray(closed(q11, q12, q22))
        want = np.asarray(jax.jit(k._rule(key))(q11, q12, q22))
        norm = np.sqrt(np.asarray(diag(q11)) * np.asarray(diag(q22)))
        assert np.max(np.abs(got - want) / norm) < 1e-13, (name, key)
    np.testing.assert_array_equal(np.asarray(jax.jit(k.ntk_factor)(q11, q12, q22)), got)


def test_outside_reach_the_rule_is_used():
    """ELU at q = 100 (tilt e^{q/2}) and shifted ReLU at q = 1e-3 (kink 16 standard deviations out) fall back
    to the rule, with its values."""
    for name, q in (("elu", 100.0), ("relu_shifted", 1e-3)):
        k = _kernel(name)
        q11, q22 = jnp.asarray([q, 2 * q]), jnp.asarray([q, q])
        q12 = 0.6 * jnp.sqrt(q11 * q22)
        assert not bool(rectangle_moments.within_reach(k.pieces["activation"], q11, q22))
        want = k._rule("activation")(q11, q12, q22)
        np.testing.assert_array_equal(np.asarray(k.nngp(q11, q12, q22)), np.asarray(want))


def test_closed_form_gradients_match_the_rule():
    """∂T/∂q11, ∂T/∂q22 (autodiff through the orthants' analytic JVP) and ∂T/∂q12 = Ṫ (Price) agree with the
    rule's, and ∂T/∂q12 with a central difference."""
    k = _kernel("elu")
    q11, q12, q22 = 0.7, -0.4, 1.9
    grad = jax.grad(k.nngp, argnums=(0, 1, 2))(q11, q12, q22)
    rule = k._rule("activation")
    grad_rule = jax.grad(rule, argnums=(0, 2))(jnp.asarray(q11), jnp.asarray(q12), jnp.asarray(q22))
    np.testing.assert_allclose([grad[0], grad[2]], grad_rule, rtol=1e-11)
    eps = 1e-6
    fd = (k.nngp(q11, q12 + eps, q22) - k.nngp(q11, q12 - eps, q22)) / (2 * eps)
    np.testing.assert_allclose(float(grad[1]), float(fd), rtol=1e-8)
    np.testing.assert_allclose(float(grad[1]), float(k.ntk_factor(q11, q12, q22)), rtol=1e-13)


def test_closed_form_float32():
    """The float32 closed form is within 1e-5 normalised of float64 (ρ up to ±1)."""
    k = _kernel("selu")
    q11, q12, q22 = _entries(0.05, 10.0, n=200)
    want = np.asarray(k.nngp(*(jnp.asarray(v) for v in (q11, q12, q22))))
    got32 = k.nngp(*(jnp.asarray(v, jnp.float32) for v in (q11, q12, q22)))
    assert got32.dtype == jnp.float32
    norm = np.sqrt(np.asarray(k.diag(jnp.asarray(q11))) * np.asarray(k.diag(jnp.asarray(q22))))
    assert np.max(np.abs(np.asarray(got32, np.float64) - want) / norm) < 1e-5
