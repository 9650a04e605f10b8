"""Small variances in the one-dimensional tier: pieces like ELU's α(e^x − 1), whose terms cancel, replaced by
Taylor polynomials (:mod:`dualact.runtime.taylor_pieces`), and the scanned moment recursion that keeps their
closed form small (:mod:`dualact.runtime.rectangle_moments`).

References: 50-digit mpmath (a 1-D quadrature of σ(√q11 z) times the conditional mean g(c z, s) in closed form,
evaluated in mpmath, so nothing cancels), float64 for the float32 path, and the unrolled recursion for the
scanned one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest

import dualact.catalog
from dualact.runtime import rectangle_moments, taylor_pieces
from dualact.runtime.numerics import sqrt_gram_det

_SCALE = {"elu": ("1", "1"), "selu": ("1.0507009873554804934193349852946", "1.6732632423543772848170429916717")}


def _sigma(name, x, der):
    lam, al = (mp.mpf(v) for v in _SCALE[name])
    if der:
        return lam if x > 0 else lam * al * mp.exp(x)
    return lam * x if x > 0 else lam * al * mp.expm1(x)


def _g(name, mu, s, der):
    """E[σ(μ + s z)] (or σ') in closed form, in mpmath."""
    lam, al = (mp.mpf(v) for v in _SCALE[name])
    if s == 0:
        return _sigma(name, mu, der)
    tilted = mp.exp(mu + s * s / 2) * mp.ncdf(-(mu + s * s) / s)
    if der:
        return lam * mp.ncdf(mu / s) + lam * al * tilted
    return lam * (mu * mp.ncdf(mu / s) + s * mp.npdf(mu / s)) + lam * al * (tilted - mp.ncdf(-mu / s))


def _dual_mp(name, q11, q12, q22, der=False):
    mp.mp.dps = 50
    q11, q12, q22 = mp.mpf(q11), mp.mpf(q12), mp.mpf(q22)
    a = mp.sqrt(q11)
    c, s = q12 / a, mp.sqrt(max(q11 * q22 - q12 * q12, 0) / q11)
    return mp.quad(lambda z: mp.npdf(z) * _sigma(name, a * z, der) * _g(name, c * z, s, der), [-30, -5, 0, 5, 30])


def _mean_mp(name, q, square=False):
    mp.mp.dps = 50
    s = mp.sqrt(mp.mpf(q))
    return mp.quad(lambda z: mp.npdf(z) * _sigma(name, s * z, False) ** (2 if square else 1), [-30, -5, 0, 5, 30])


def test_taylor_pieces_merge_cancelling_terms_exactly():
    elu = dualact.catalog.elu._KERNEL.pieces
    assert taylor_pieces.needs_taylor(elu["activation"]) and taylor_pieces.needs_taylor(elu["activation_sq"])
    assert not taylor_pieces.needs_taylor(elu["derivative"])  # a single term α·e^x does not cancel
    (_, _, ((beta, coeffs),)), positive = taylor_pieces.taylor_pieces(elu["activation"], 7)
    assert beta == 0.0 and positive == elu["activation"][1]
    assert coeffs == tuple([0.0] + [1.0 / math.factorial(k) for k in range(1, 8)])
    (_, _, ((_, sq),)), _ = taylor_pieces.taylor_pieces(elu["activation_sq"], 13)
    # (e^x − 1)² = Σ_{k ≥ 2} (2^k − 2)/k! x^k: constant and linear terms cancel to exactly zero
    assert sq[:2] == (0.0, 0.0)
    np.testing.assert_allclose(sq[2:], [(2.0**k - 2.0) / math.factorial(k) for k in range(2, 14)], rtol=1e-15)


@pytest.mark.parametrize("name", ["elu", "selu"])
def test_float64_diagonals_means_and_kernels_at_small_variances(name):
    """Relative accuracy of the diagonal (was 1e-2 off at q = 1e-14, 2e-7 at 1e-10) and normalised kernels."""
    k = dualact.catalog.get(name)
    qs = [1e-14, 1e-10, 1e-6, 3e-3]
    np.testing.assert_allclose(np.asarray(k.diag(jnp.asarray(qs))), [float(_mean_mp(name, q, True)) for q in qs],
                               rtol=1e-14)
    if name == "selu":  # ELU's mean is q/4 + O(q²) from two pieces of size √q: relative accuracy eps/√q there
        means = np.asarray(dualact.catalog.selu._KERNEL.mean(jnp.asarray(qs)))
        np.testing.assert_allclose(means, [float(_mean_mp(name, q)) for q in qs], rtol=1e-14)
    for q11, q12, q22 in ((1e-12, 0.5e-12, 2e-12), (1e-8, -0.7e-8, 0.5e-8)):
        for fn, der, diag in ((k.nngp, False, k.diag), (k.ntk_factor, True, k.ntk_diag)):
            norm = math.sqrt(float(diag(q11)) * float(diag(q22)))
            assert abs(float(fn(q11, q12, q22)) - float(_dual_mp(name, q11, q12, q22, der))) <= 5e-11 * norm


@pytest.mark.parametrize("name", ["elu", "selu"])
def test_float32_at_small_variances_matches_float64(name):
    """Normalised float32 error ≤ 1e-6 from q = 1e-12 to 7.5e-3 (the Taylor branch, with a zero variance in the
    batch); before, 1e-3 at q = 1e-12 and 2e-5 at 2.5e-3, and the diagonal 7e-3 off at 1e-6. (Batches reaching
    beyond β²q = 1/64 take the closed form: 4e-6 at q = 0.01..0.03.)"""
    k = dualact.catalog.get(name)
    for q in (1e-12, 1e-6, 2.5e-3):
        q11 = np.array([q, 2 * q, q, q, 0.0])
        q22 = np.array([q, 0.5 * q, 3 * q, q, q])
        q12 = np.array([0.5, -0.7, 0.99, 1.0, 0.0]) * np.sqrt(q11 * q22)
        for fn, diag in ((k.nngp, k.diag), (k.ntk_factor, k.ntk_diag)):
            ref = np.asarray(fn(q11, q12, q22))
            got = fn(*(jnp.asarray(v, jnp.float32) for v in (q11, q12, q22)))
            assert got.dtype == jnp.float32
            norm = np.sqrt(np.asarray(diag(q11)) * np.asarray(diag(q22)))
            norm[-1] = np.asarray(diag(q22[-1]))  # the zero-variance entry: σ(0)·E[σ(v)] = 0 for ELU, SELU
            assert np.max(np.abs(np.asarray(got, np.float64) - ref) / norm) <= 1e-6, (q, fn)
            np.testing.assert_allclose(np.asarray(diag(jnp.float32(q)), np.float64), float(diag(q)), rtol=1e-6)
    g = jax.grad(k.nngp, argnums=(0, 1, 2))(*(jnp.float32(v) for v in (1e-6, 0.3e-6, 2e-6)))
    assert all(np.isfinite(float(v)) for v in g)
    assert float(g[1]) == pytest.approx(float(k.ntk_factor(1e-6, 0.3e-6, 2e-6)), rel=1e-5)


@pytest.mark.parametrize("name", ["elu", "selu"])
def test_float32_mixed_batches_match_float64(name):
    """A batch whose variances span 1e-10..100 takes the rule; its small entries evaluate σ and g through the
    Taylor polynomials elementwise. Normalised float32 error ≤ 2e-6 against float64 (was 1e-3 at q ~ 1e-9).
    ρ = ±1 only with q11 = q22 (q12 exact in float32: SELU's σ' jumps, and near ρ = 1 its Ṫ moves like
    √(1 − ρ), so rounding q12 alone would move it by 2e-5)."""
    k = dualact.catalog.get(name)
    q11 = np.array([1e-10, 1e-9, 3e-8, 1e-6, 1e-4, 4e-3, 0.3, 1e-9, 100.0, 2e-10, 5e-5, 1e-8])
    q22 = np.array([3e-10, 1e-9, 1e-8, 1.0, 1e-4, 1e-9, 0.3, 50.0, 1e-7, 2e-10, 5e-5, 1e-8])
    rho = np.array([0.3, -0.6, 0.9, 0.5, -1.0, 0.2, 1.0, -0.4, 0.7, 1.0, -0.999, 0.0])
    q12 = rho * np.sqrt(q11 * q22)
    args32 = [jnp.asarray(v, jnp.float32) for v in (q11, q12, q22)]
    for fn, diag in ((k.nngp, k.diag), (k.ntk_factor, k.ntk_diag)):
        ref = np.asarray(fn(q11, q12, q22))
        got = np.asarray(fn(*args32), np.float64)
        norm = np.sqrt(np.asarray(diag(q11)) * np.asarray(diag(q22)))
        assert np.max(np.abs(got - ref) / norm) <= 2e-6, fn
    grads = jax.grad(lambda a, b, c: jnp.sum(k.nngp(a, b, c)), argnums=(0, 1, 2))(*args32)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in grads)


def test_taylor_pieces_near_zero_only():
    """With ``near``, a cancelling piece that does not meet (−r, r) keeps its exponential terms."""
    far = ((None, 2.0, ()), (2.0, None, ((1.0, (math.exp(-2.0),)), (0.0, (-1.0,)))))
    assert taylor_pieces.taylor_pieces(far, 7, near=1.0) == far
    _, (_, _, ((beta, coeffs),)) = taylor_pieces.taylor_pieces(far, 7, near=3.0)
    assert beta == 0.0 and len(coeffs) == 8


def test_scanned_recursion_matches_unrolled(monkeypatch):
    """Pieces of degree ≤ 3 run the moment recursion unrolled, longer ones as scans: the same values."""
    cubic = ((None, -1.0, ((0.0, (-1.0,)),)), (-1.0, 1.0, ((0.0, (0.0, 1.0, 0.3, -0.2)),)),
             (1.0, None, ((0.5, (1.1, 0.2)),)))
    pieces = [cubic, dualact.catalog.elu._KERNEL.pieces["activation"]]
    q11, q22 = np.array([0.5, 2.0, 1.0]), np.array([1.5, 1.0, 1.0])
    q12 = np.array([0.1, -1.2, 1.0]) * np.sqrt(q11 * q22)

    def values():
        return [np.asarray(rectangle_moments.expectation(p, p, q11, q12, q22, sqrt_gram_det(q11, q12, q22)))
                for p in pieces]

    unrolled = values()
    monkeypatch.setattr(rectangle_moments, "_UNROLL", -1)
    for a, b in zip(values(), unrolled, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-16)
