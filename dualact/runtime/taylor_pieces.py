"""Exponential pieces of a one-dimensional-tier activation as Taylor polynomials, for small variances.

A piece such as ELU's α(e^x − 1) on x < 0 is stored as two terms, α·e^x and −α (see
:mod:`dualact.runtime.quadrature_1d`), and every expectation over it is the difference of the two terms'
expectations. Where the variance is small the difference is much smaller than either term: under a variance q
the piece is of size √q while each term is of size 1, so the closed forms lose a factor 1/√q (the conditional
mean, the rule's σ(x)) or 1/q (E[σ²], the bivariate moments) of their relative accuracy. In float32 that put
ELU's diagonal 7e-3 off at q = 1e-6 and the kernel 2e-5 off (normalised) at q = 2.5e-3; in float64 the
diagonal was 2e-7 off at q = 1e-10.

Such a piece is rewritten with e^{βx} replaced by its Taylor polynomial and its terms merged into one
polynomial, whose coefficients are formed once in Python floats (ELU's constant terms α − α cancel exactly
there). The pieces are polynomial then, and the closed forms keep their relative accuracy however small the
variance is. The rewrite is accurate where β²q ≤ 1/64 (:func:`max_tilt`): at x = 3√q the omitted terms are
(3/8)^{d+1}/(d+1)! of βx, below the rounding unit for the degrees :func:`degree` chooses (7 in float32, 13 in
float64); beyond x = 6√q the Gaussian weight e^{−18} covers the rest.

:class:`~dualact.runtime.quadrature_1d.Kernel1D` uses the rewrite elementwise for the diagonals and the means
(both dtypes), and for the kernels in float32: where a whole batch has small variances as a third branch beside
the closed form and the rule, and elementwise inside the rule's integrand for the small entries of a batch that
also holds large ones (the float64 kernels lose at most ~1e-11 without it, at q = 1e-12).

A piece with a single term (ELU's derivative α·e^x) has no such cancellation and is left as it is.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

__all__ = ["degree", "max_argument", "max_tilt", "needs_taylor", "taylor_pieces"]

# by the float's size in bytes: (largest β²q, Taylor degree)
_RANGE = {4: (1.0 / 64.0, 7), 8: (1.0 / 64.0, 13)}


def max_tilt(dtype) -> float:
    """The largest β²q at which the Taylor polynomials replace the exponentials (1/64)."""
    return _RANGE[jnp.dtype(dtype).itemsize][0]


def max_argument(dtype) -> float:
    """The largest |βx| at which a rewritten piece is evaluated pointwise (3/8, three standard deviations at
    β²q = :func:`max_tilt`): there the omitted terms are (3/8)^{d+1}/(d+1)! of βx."""
    return 3.0 * math.sqrt(max_tilt(dtype))


def degree(dtype) -> int:
    """The Taylor degree for ``dtype`` (float32: 7, float64: 13)."""
    return _RANGE[jnp.dtype(dtype).itemsize][1]


def needs_taylor(pieces) -> bool:
    """Whether some piece is a sum of several terms at least one of which has an exponential factor."""
    return any(len(terms) > 1 and any(beta for beta, _ in terms) for _, _, terms in pieces)


def _times_exp(coeffs, beta, d):
    """The coefficients of p(x)·Σ_{k ≤ d} (βx)^k / k! (p's coefficients ``coeffs``, constant first)."""
    series = [beta**k / math.factorial(k) for k in range(d + 1)]
    out = [0.0] * (len(coeffs) + d)
    for i, c in enumerate(coeffs):
        for k, t in enumerate(series):
            out[i + k] += c * t
    return out


def _merge(terms, d):
    total = [0.0]
    for beta, coeffs in terms:
        poly = _times_exp(coeffs, beta, d) if beta else list(coeffs)
        if len(poly) > len(total):
            total += [0.0] * (len(poly) - len(total))
        for i, c in enumerate(poly):
            total[i] += c
    while len(total) > 1 and total[-1] == 0.0:
        total.pop()
    return ((0.0, tuple(total)),)


def taylor_pieces(pieces, d: int, near=None):
    """``pieces`` with every piece that :func:`needs_taylor` flags merged into one polynomial of degree ≤ d plus
    its own degree (the others unchanged). With ``near`` = r, only the pieces that meet (−r, r) are rewritten:
    a piece farther out does not cancel near zero, and its polynomial would be inaccurate on it.

    >>> elu = ((None, 0.0, ((0.0, (-1.0,)), (1.0, (1.0,)))), (0.0, None, ((0.0, (0.0, 1.0)),)))
    >>> taylor_pieces(elu, 3)[0]
    (None, 0.0, ((0.0, (0.0, 1.0, 0.5, 0.16666666666666666)),))
    """
    out = []
    for lo, hi, terms in pieces:
        meets = near is None or ((lo is None or lo < near) and (hi is None or hi > -near))
        if meets and len(terms) > 1 and any(beta for beta, _ in terms):
            terms = _merge(terms, d)
        out.append((lo, hi, terms))
    return tuple(out)
