"""JAX evaluation of one-dimensional-tier dual kernels (method ``quadrature_1d``).

σ is given by its pieces between the kinks, each a sum of polynomial × e^{βx} terms (see
:mod:`dualact.symbolic.conditional`), as plain data ``((lo, hi, ((β, (p_0, p_1, …)), …)), …)`` with ``None`` for
∓∞. Then g(μ, s) = E[σ(μ + s z)] is evaluated in closed form: truncated Gaussian moments by the recurrence
I_{n+1} = μ' I_n + n s² I_{n−1} + s(loⁿB(lo) − hiⁿB(hi)), the Gaussian masses through the scaled complementary
error function erfcx(u) = e^{u²} erfc(u), so that the exponent E of e^{βx} and the t²/2 of the tail never
cancel (they grow like s²), and a bounded piece narrower than s/2 (where the recurrence cancels: hard-tanh's
diagonal was 4e-7 off at q = 1e10) by a 12-node Gauss–Legendre rule in x. And

    T(q11, q12, q22) = E_z[σ(√q11 z)·g(c z, s)],   c = q12/√q11,   s = √((q11 q22 − q12²)/q11),

is a composite Gauss–Legendre rule (14 nodes per panel, 8 in float32) on z ∈ [−L, L]: a static grid of 8
panels, plus
panel edges at the kinks of σ(√q11 z) (z = k/√q11) and at the boundary layer of g(c z, s) around z = k/c (edges
k/c, k/c ± w/4, k/c ± w with w = 8 s/abs(c), so the layer stays resolved as ρ → ±1). Where σ has exponential
pieces e^{βx}, whose own scale 1/abs(β) in x is 1/(abs(β)·√q11) in z and shrinks as the variance grows, both
centres also get edges at distances 2, 8 and 32 times 1/abs(β) in x, graded so that no panel holds more than a
factor e^{−24} of decay: without them the panels did not resolve the exponential above q ≈ 1e4 (ELU's NTK
factor was 1e-4 off at q = 1e7), and with edges at 2 and 16 times 1/abs(β) only, the e^{−16} left at the outer
edge still cost 2e-10 near ρ = −1. Measured against a rule with 48 nodes per panel and edges every factor 2
(3000 random entries, variances 1e-3..1e8, ρ up to 1 − 1e-8): normalised errors below 1e-14 (ELU, SELU,
shifted ReLU, hard-tanh). Cost: 364 integrand evaluations per entry for ELU/SELU, 196 for one kink without
exponentials. The number of edges is static (shapes do not depend on the values), edges are clipped into
[−L, L] and sorted, and zero-width panels carry zero weight. At s = 0 (ρ = ±1, exactly 0 under jit thanks to
:func:`~dualact.runtime.numerics.sqrt_gram_det`) g(μ, 0) = σ(μ).

The diagonal and the zero-variance means are closed forms: E[σ(√q z)²] = g_{σ²}(0, √q) and
E[σ(√q z)] = g_σ(0, √q) (σ(0) at q = 0). Zero variance gives T = E[σ(u)]·E[σ(v)].

Gradients: everything is differentiable (double-where at s = 0 and q = 0; the panel edges are
``stop_gradient``-ed except the kinks k/√q11 of σ(√q11 z), whose motion carries the jump term of a
discontinuous σ or σ' into ∂/∂q11). For continuous σ the partial derivative ∂T/∂q12 is, by Price's
theorem, the NTK factor Ṫ; a ``jax.custom_jvp`` returns exactly that (∂/∂q11 and ∂/∂q22 are autodiff
through the rule).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from . import branching, rectangle_moments, taylor_pieces
from .normal_tails import log_ndtr, normal_tail, truncated_moments
from .numerics import safe_sqrt, sqrt_gram_det

__all__ = ["Kernel1D", "conditional_mean", "log_ndtr", "piecewise"]

L = 10.0
N_NODES = 14
# float32 rules take 8 nodes per panel: against float64 at the same (float32-rounded) arguments, ELU, SELU and
# relu(x − ½) with 8 nodes were as accurate as with 14 (normalised 6e-7 for T, 1e-5..4e-5 for Ṫ, where the
# float32 Gram determinant near ρ = ±1 dominates; 12,000 entries, variances 1e-3..1e6), 7 nodes 4 times worse
N_NODES_FLOAT32 = 8
_GRID = (-L, -6.0, -3.0, -1.5, 0.0, 1.5, 3.0, 6.0, L)
_FAR = 4.0  # a support starting beyond z = 4 (or ending below −4) gets a window of its own in the tail
_TAIL_SPAN = 40.0  # that window is [t, t + 40/t]: e^{−40} ≈ 4e-18 of the integrand is left out
_LAYER = 8.0  # boundary-layer half-width of g(cz, s) around z = k/c, in units of s/abs(c)
_EXP_EDGES = (2.0, 8.0, 32.0)  # extra edges at these distances·1/|β| (in x) from each kink, for pieces e^{βx}
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_NARROW = 0.5  # a bounded piece narrower than s/2 is integrated by Gauss–Legendre (see _narrow_piece)
_NARROW_RATE = 4.0  # … and if e^{βx} changes by at most e^4 across it
_leggauss = functools.cache(np.polynomial.legendre.leggauss)  # (nodes, weights) on [−1, 1]
_NARROW_XI, _NARROW_WI = (tuple(float(v) for v in a) for a in _leggauss(12))


def _floats(*args):
    dtype = jnp.result_type(*args, float)
    return jnp.broadcast_arrays(*(jnp.asarray(a, dtype) for a in args))


def _poly(coeffs, t):
    out = jnp.zeros_like(t) + coeffs[-1]
    for c in coeffs[-2::-1]:
        out = out * t + c
    return out


def piecewise(pieces, x):
    """σ(x) from its pieces (each piece evaluated at x clipped into its interval: no overflow, no NaN).

    Exactly at a kink the two one-sided values are averaged: the library's convention H(0) = ½ (σ(0) of a
    step, σ'(0) of ReLU), which zero-variance inputs see (T = σ(0)·E[σ(v)] at q11 = 0).
    """
    out = jnp.zeros_like(x)
    for lo, hi, terms in pieces:
        if not terms:
            continue
        xc = jnp.clip(x, lo, hi) if (lo is not None or hi is not None) else x
        val = sum(_poly(coeffs, xc) * (jnp.exp(beta * xc) if beta else 1.0) for beta, coeffs in terms)
        inside = jnp.ones(x.shape, bool)
        edge = jnp.zeros(x.shape, bool)
        if lo is not None:
            inside, edge = inside & (x > lo), edge | (x == lo)
        if hi is not None:
            inside, edge = inside & (x < hi), edge | (x == hi)
        out = out + jnp.where(inside, val, jnp.where(edge, 0.5 * val, 0.0))
    return out


def _mass(E, tl, th, lo, hi, tail_exponent):
    """e^E·(Φ(th) − Φ(tl)) without overflow or cancellation in the tails.

    E and t²/2 grow like s² and cancel in e^E·Φ(t) for t < 0 (an absolute error of eps·s² in the exponent:
    garbage for variances beyond ~1e16). There e^E·Φ(t) = e^{E − t²/2}·½ erfcx(|t|/√2), with the exact
    difference ``tail_exponent(x0)`` = E − t²/2 (t = ±(x0 − μ')/s at the end x0) and the scaled complementary
    error function erfcx(u) = e^{u²} erfc(u), which keeps its relative accuracy for every u ≥ 0 (one erfc and
    two exponentials per end, against an erfc and three logarithms for log Φ).
    """

    def term(t, x0):
        neg, decay, scaled = normal_tail(t)
        return jnp.exp(jnp.where(neg, tail_exponent(x0), E)) * jnp.where(neg, scaled, 1.0 - decay * scaled)

    if lo is None and hi is None:
        return jnp.exp(E)
    if lo is None:
        return term(th, hi)
    if hi is None:
        return term(-tl, lo)
    upper = tl > 0  # both ends in the upper tail: Φ(−tl) − Φ(−th), else Φ(th) − Φ(tl)
    big, small = jnp.where(upper, -tl, th), jnp.where(upper, -th, tl)
    return term(big, jnp.where(upper, lo, hi)) - term(small, jnp.where(upper, hi, lo))


def conditional_mean(pieces, mu, s):
    """g(μ, s) = E[σ(μ + s z)] for s > 0 (arrays broadcast)."""
    out = jnp.zeros(jnp.broadcast_shapes(jnp.shape(mu), jnp.shape(s)), jnp.result_type(mu, s))
    inv_s = 1.0 / s
    for lo, hi, terms in pieces:
        for beta, coeffs in terms:
            mup = mu + beta * s * s
            E = beta * mu + 0.5 * beta * beta * s * s
            tl = None if lo is None else (lo - mup) * inv_s
            th = None if hi is None else (hi - mup) * inv_s

            def tail_exponent(x0, beta=beta):  # E − ((x0 − μ')/s)²/2 = β·x0 − ((x0 − μ)/s)²/2 exactly
                return beta * x0 - 0.5 * jnp.square((x0 - mu) * inv_s)

            # s²·w at the ends, w(x) = e^{βx}·φ((x − μ)/s)/s ∝ the N(μ', s²) density
            ends = [(x0, None if x0 is None else s * jnp.exp(beta * x0 - 0.5 * jnp.square((x0 - mu) * inv_s))
                     * _INV_SQRT_2PI) for x0 in (lo, hi)]
            moments = truncated_moments(_mass(E, tl, th, lo, hi, tail_exponent), mup, s, ends, len(coeffs) - 1)
            value = sum(c * m for c, m in zip(coeffs, moments, strict=True) if c)
            if lo is not None and hi is not None and abs(beta) * (hi - lo) <= _NARROW_RATE:  # see _narrow_piece
                value = jnp.where((hi - lo) < _NARROW * s, _narrow_piece(lo, hi, beta, coeffs, mu, inv_s), value)
            out = out + value
    return out


def _narrow_piece(lo, hi, beta, coeffs, mu, inv_s):
    """∫_lo^hi p(x)·e^{βx}·φ((x − μ)/s)/s dx by a 12-node Gauss–Legendre rule in x, for hi − lo < s/2.

    There the upward recurrence for the truncated moments cancels (s²·I_{n−1} against the boundary terms: a
    relative loss ~ (s/(hi − lo))^n, e.g. hard-tanh's diagonal was 4e-7 off at q = 1e10 and of the wrong sign
    at 1e20), while the density varies slowly over the interval: its logarithm changes by |x − μ|·(hi − lo)/s²
    ≤ 5 across it wherever |x − μ| ≤ 10 s, and e^{βx} by at most e^4 (``_NARROW_RATE``, checked statically):
    12 nodes integrate e^{at} on [−1, 1] to rounding for |a| ≤ 5. Farther out the piece is below e^{−50} of
    the density's peak.
    """
    half, mid = 0.5 * (hi - lo), 0.5 * (hi + lo)
    total = 0.0
    for xi, wi in zip(_NARROW_XI, _NARROW_WI, strict=True):
        x0 = mid + half * xi
        total = total + (wi * half * _poly(coeffs, x0)) * jnp.exp(beta * x0 - 0.5 * jnp.square((x0 - mu) * inv_s))
    return total * inv_s * _INV_SQRT_2PI


def _g_or_sigma(pieces, mu, s):
    """g(μ, s) with g(μ, 0) = σ(μ) (double-where: finite gradients at s = 0)."""
    pos = s > 0
    return jnp.where(pos, conditional_mean(pieces, mu, jnp.where(pos, s, 1.0)), piecewise(pieces, mu))


class Kernel1D:
    """T, Ṫ, diagonals and means of one activation given by its pieces (see the module docstring).

    Args:
      pieces: dict with keys "activation", "derivative", "activation_sq", "derivative_sq" (piece data).
      kinks: sorted kinks of σ and σ'.
      continuous: σ has no jump (then ∂T/∂q12 = Ṫ is used as the q12-derivative of T).
    """

    def __init__(self, pieces, kinks, continuous: bool, n_nodes: int = N_NODES):
        self.pieces = {k: _freeze(v) for k, v in pieces.items()}
        self.kinks = tuple(float(k) for k in kinks)
        self.continuous = bool(continuous)
        self.n_nodes = int(n_nodes)
        self._nngp = self._with_price(self._inner("activation"), self._inner("derivative"))
        self._ntk = self._inner("derivative")

    @property
    def nodes(self) -> int:
        """Integrand evaluations per kernel entry (of T in float64; Ṫ's pieces may have fewer edges, and
        float32 takes :data:`N_NODES_FLOAT32` nodes per panel)."""
        per_kink = 6 + (4 * len(_EXP_EDGES) if rectangle_moments.max_rate(self.pieces["activation"]) else 0)
        return (len(_GRID) - 1 + per_kink * len(self.kinks)) * self.n_nodes

    # -- one-dimensional closed forms ----------------------------------------------------------------------
    def _mean_of(self, key, q, square_of=None):
        """E[f(√q z)] for the pieces ``key``; with ``square_of`` (f = g²) the q = 0 value is g(0)², the square
        of the averaged value at a kink (not the average of the squares). Where :func:`_taylor_ok` holds, the
        pieces' Taylor polynomials are integrated instead (:mod:`~dualact.runtime.taylor_pieces`)."""
        (q,) = _floats(q)
        zero = jnp.zeros_like(q)
        pieces = self.pieces[key]
        value = _g_or_sigma(pieces, zero, safe_sqrt(q))
        if taylor_pieces.needs_taylor(pieces):
            small = _taylor_ok(pieces, q)
            poly = taylor_pieces.taylor_pieces(pieces, taylor_pieces.degree(q.dtype))
            q_small = jnp.where(small, q, 0.0)  # double-where: no overflow of the polynomial's moments
            value = jnp.where(small, _g_or_sigma(poly, zero, safe_sqrt(q_small)), value)
        if square_of is None:
            return value
        return jnp.where(q > 0, value, jnp.square(piecewise(self.pieces[square_of], zero)))

    def mean(self, q):
        return self._mean_of("activation", q)

    def ntk_mean(self, q):
        return self._mean_of("derivative", q)

    def diag(self, q):
        return self._mean_of("activation_sq", q, "activation")

    def ntk_diag(self, q):
        return self._mean_of("derivative_sq", q, "derivative")

    def activation(self, x):
        (x,) = _floats(x)
        return piecewise(self.pieces["activation"], x)

    def derivative(self, x):
        (x,) = _floats(x)
        return piecewise(self.pieces["derivative"], x)

    # -- kernels -------------------------------------------------------------------------------------------
    def _window(self, a, inv_c, delta, support):
        """The z-interval [zlo, zhi] of the rule for pieces supported on x ∈ ``support`` (``None``: unbounded).

        The integrand φ(z)·f(a z)·g_f(c z, s) vanishes outside the support of f(a z), z ∈ [k_lo/a, k_hi/a], and
        is negligible where g_f(c z, s) = E[f(c z + s w)] only sees f's support through a Gaussian tail:
        there φ(z)·g_f behaves like exp(−z²/2 − (z − z*)²/(2δ²)), z* = k/c, δ = s/|c| (``inv_c`` = 1/c, 0 when
        c = 0, and ``delta`` without gradient), whose mass lies within
        9 standard deviations of z*/(1 + δ²). Normally the rule runs over [−L, L] cut to these bounds. Where
        the bounds put the mass in the far Gaussian tail (beyond z = 4, e.g. relu(x − 5) at small q11), the
        integrand decays like e^{−t(z − t)} from the bound t, and the window is [t, t + 40/t] instead: no
        truncation at z = L, so tiny values keep their relative accuracy (the normalised error compares them
        with diagonals of the same size). Mirrored below z = −4. Ends that sit on a kink k/a keep its gradient.
        """
        lo_x, hi_x = support
        inf = jnp.full_like(a, jnp.inf)
        t_lo = -inf if lo_x is None else lo_x / a
        t_hi = inf if hi_x is None else hi_x / a
        shrink, spread = 1.0 / (1.0 + delta * delta), 9.0 * delta / jnp.sqrt(1.0 + delta * delta)
        for k, side in ((lo_x, 1.0), (hi_x, -1.0)):  # g_f is negligible below (c > 0) or above (c < 0) z* ∓ …
            if k is None:
                continue
            peak = k * inv_c * shrink
            bound_lo = jnp.where(side * inv_c > 0, peak - spread, -inf)
            bound_hi = jnp.where(side * inv_c < 0, peak + spread, inf)
            t_lo, t_hi = jnp.maximum(t_lo, bound_lo), jnp.minimum(t_hi, bound_hi)
        far_hi = t_lo > _FAR
        far_lo = t_hi < -_FAR
        up = t_lo + _TAIL_SPAN / jnp.maximum(t_lo, _FAR)
        down = t_hi - _TAIL_SPAN / jnp.maximum(-t_hi, _FAR)
        zlo = jnp.where(far_hi, t_lo, jnp.where(far_lo, jnp.maximum(t_lo, down), jnp.maximum(t_lo, -L)))
        zhi = jnp.where(far_lo, t_hi, jnp.where(far_hi, jnp.minimum(t_hi, up), jnp.minimum(t_hi, L)))
        return zlo, jnp.maximum(zhi, zlo), far_hi | far_lo

    def _edges(self, a, c, s, dtype, support=(None, None), rate=0.0):
        """Sorted panel edges (…, E) of the composite rule for one batch of (a, c, s).

        Only the kink edges z = k/a (and the window ends sitting on them) carry a gradient: where σ (or σ')
        jumps, moving the jump with q11 adds the boundary term [σ]·φ(k/a)·g(c k/a, s)·∂(k/a)/∂q11, which
        autodiff through the rule then includes (the derivative of a Gauss–Legendre panel with respect to its
        end is the integrand there, to the rule's accuracy). The integrand is smooth across every other edge,
        so their motion contributes nothing.
        """
        kink_edges = [k / a for k in self.kinks]
        c, s = jax.lax.stop_gradient(c), jax.lax.stop_gradient(s)
        has_c = jnp.abs(c) > 0
        inv_c = jnp.where(has_c, 1.0 / jnp.where(has_c, c, 1.0), 0.0)
        delta = s * jnp.abs(inv_c)  # the boundary layer's scale s/|c|
        zlo, zhi, far = self._window(a, inv_c, delta, support)
        batch = a.shape
        # the fixed grid: cut to the window, or stretched over it when the window lies in the far tail
        edges = [jnp.where(far, zlo + (e + L) / (2 * L) * (zhi - zlo), jnp.asarray(e, dtype) + jnp.zeros(batch, dtype))
                 for e in _GRID]
        width = _LAYER * delta
        step_a = jax.lax.stop_gradient(1.0 / (rate * a)) if rate else None  # x-unit 1/|β| in z, at σ(a z)
        for k, kink in zip(self.kinks, kink_edges, strict=True):
            edges.append(kink)
            centre = jnp.where(has_c, k * inv_c, L)
            edges += [centre, centre - width, centre + width, centre - 0.25 * width, centre + 0.25 * width]
            if rate:  # the exponential pieces at their own scale, next to σ(a z)'s kink and g's layer centre
                step_c = jnp.abs(inv_c) / rate
                for X in _EXP_EDGES:
                    edges += [kink - X * step_a, kink + X * step_a, centre - X * step_c, centre + X * step_c]
        return jnp.sort(jnp.clip(jnp.stack(edges, -1), zlo[..., None], zhi[..., None]), axis=-1)

    def _rule(self, key):
        pieces = self.pieces[key]
        rate = rectangle_moments.max_rate(pieces)
        n64 = self.n_nodes
        live = [(lo, hi) for lo, hi, terms in pieces if terms]
        support = (live[0][0], live[-1][1]) if live else (None, None)

        def value(q11, q12, q22):
            dtype = q11.dtype
            a = jnp.sqrt(q11)
            c = q12 / a
            s = sqrt_gram_det(q11, q12, q22) / a
            e = self._edges(a, c, s, dtype, support, rate)
            n = min(n64, N_NODES_FLOAT32) if dtype == jnp.float32 else n64
            xi, wi = (jnp.asarray(v, dtype) for v in _leggauss(n))
            sigma, g = _pointwise(pieces, rate, dtype)

            # one node at a time: the working set stays that of the output (no (…, nodes) arrays)
            def node(i, acc):
                p, j = i // n, i % n
                lo = jax.lax.dynamic_index_in_dim(e, p, axis=-1, keepdims=False)
                hi = jax.lax.dynamic_index_in_dim(e, p + 1, axis=-1, keepdims=False)
                half = 0.5 * (hi - lo)
                z = 0.5 * (hi + lo) + half * xi[j]
                w = half * wi[j] * jnp.exp(-0.5 * z * z) * _INV_SQRT_2PI
                return acc + w * sigma(a * z) * g(c * z, s)

            return jax.lax.fori_loop(0, (e.shape[-1] - 1) * n, node, jnp.zeros_like(a))

        return value

    def _inner(self, key):
        """E[f(u)f(v)] for the pieces ``key``: the closed form of :mod:`~dualact.runtime.rectangle_moments` where
        the whole batch lies within its reach, else the composite rule (one branch per call). In float32, pieces
        with a cancelling sum of exponential terms (ELU's α(e^x − 1)) take their Taylor polynomials instead
        where the whole batch has small variances (:mod:`~dualact.runtime.taylor_pieces`); in float64 the
        closed form and the rule lose at most ~1e-11 there (at q = 1e-12) and the extra branch is not compiled."""
        pieces = self.pieces[key]
        rule = self._rule(key)

        def closed_form(p):
            def closed(q11, q12, q22):
                return rectangle_moments.expectation(p, p, q11, q12, q22, sqrt_gram_det(q11, q12, q22))
            return closed

        closed = closed_form(pieces)
        def value(q11, q12, q22):
            if q11.dtype != jnp.float32 or not taylor_pieces.needs_taylor(pieces):
                return branching.cond(rectangle_moments.within_reach(pieces, q11, q22), closed, rule, q11, q12, q22)
            poly = taylor_pieces.taylor_pieces(pieces, taylor_pieces.degree(q11.dtype))
            qs = jax.lax.stop_gradient(jnp.stack([q11, q22]))
            small = jnp.all(_taylor_ok(pieces, qs)) & rectangle_moments.within_reach(poly, q11, q22)
            index = jnp.where(small, 0, jnp.where(rectangle_moments.within_reach(pieces, q11, q22), 1, 2))
            return branching.switch(index, [closed_form(poly), closed, rule], q11, q12, q22)

        return value

    def _with_price(self, value, ntk):
        if not self.continuous:
            return value

        @jax.custom_jvp
        def nngp(q11, q12, q22):
            return value(q11, q12, q22)

        @nngp.defjvp
        def _jvp(primals, tangents):
            q11, q12, q22 = primals
            d11, d12, d22 = tangents
            out, dout = jax.jvp(lambda a, b: value(a, q12, b), (q11, q22), (d11, d22))
            return out, dout + ntk(q11, q12, q22) * d12

        return nngp

    def _kernel(self, inner, mean, q11, q12, q22):
        q11, q12, q22 = _floats(q11, q12, q22)
        zero = (q11 <= 0) | (q22 <= 0)
        # zero-variance entries are filled with the batch's largest variance, which leaves the batch's choice of
        # formula (closed form, rule, Taylor) as the other entries make it
        fill = jax.lax.stop_gradient(jnp.maximum(jnp.max(q11, initial=0.0), jnp.max(q22, initial=0.0)))
        fill = jnp.where(fill > 0, fill, 1.0)
        value = inner(jnp.where(zero, fill, q11), jnp.where(zero, 0.0, q12), jnp.where(zero, fill, q22))
        return jnp.where(zero, mean(q11) * mean(q22), value)

    def nngp(self, q11, q12, q22):
        """T(q11, q12, q22) = E[σ(u)σ(v)]."""
        return self._kernel(self._nngp, self.mean, q11, q12, q22)

    def ntk_factor(self, q11, q12, q22):
        """Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)] (σ' the almost-everywhere derivative)."""
        return self._kernel(self._ntk, self.ntk_mean, q11, q12, q22)


def _pointwise(pieces, rate, dtype):
    """σ(x) and g(μ, s) for the rule's integrand. In float32, where σ has pieces whose terms cancel near zero
    (ELU's α(e^x − 1)), their Taylor polynomials are used elementwise where that is accurate: at |βx| ≤ 3/8
    (:func:`~dualact.runtime.taylor_pieces.max_argument`) for σ, and where |β|(|μ| + 3s) ≤ 3/8 for g, whose
    Gaussian then sees the rewritten pieces only where they are accurate (beyond 3s the omitted terms stay
    below e^{−k²/2}(k/8)^{d+1}/(d+1)! at μ + ks). Entries of small variance in a batch that also holds large
    ones take the rule: without this, e^x − 1 cancelled there (normalised errors 1e-3 in float32 for variances
    1e-10..0.1). The float64 rule loses at most 4e-12 there (at q = 1e-12) and is left as it is (compile time)."""
    if jnp.dtype(dtype) != jnp.float32 or not taylor_pieces.needs_taylor(pieces):
        return functools.partial(piecewise, pieces), functools.partial(_g_or_sigma, pieces)
    reach = taylor_pieces.max_argument(dtype)
    poly = taylor_pieces.taylor_pieces(pieces, taylor_pieces.degree(dtype), near=reach / rate)

    def sigma(x):
        small = rate * jnp.abs(x) <= reach
        return jnp.where(small, piecewise(poly, jnp.where(small, x, 0.0)), piecewise(pieces, x))

    def g(mu, s):
        small = rate * (jnp.abs(mu) + 3.0 * s) <= reach
        near = _g_or_sigma(poly, jnp.where(small, mu, 0.0), jnp.where(small, s, 0.0))
        return jnp.where(small, near, _g_or_sigma(pieces, mu, s))

    return sigma, g


def _taylor_ok(pieces, q):
    """Where (elementwise in q > 0) the Taylor polynomials of ``pieces`` replace their exponentials: β²q ≤
    :func:`~dualact.runtime.taylor_pieces.max_tilt` for every rate β, and every end t of a piece that is
    rewritten lies within two standard deviations, t² ≤ 4q (farther out the piece would be evaluated where its
    polynomial is no longer accurate)."""
    rate = rectangle_moments.max_rate(pieces)
    ok = rate * rate * q <= taylor_pieces.max_tilt(q.dtype)
    ends = [t for lo, hi, terms in pieces if len(terms) > 1 for t in (lo, hi) if t is not None]
    depth = max((t * t for t in ends), default=0.0)
    if depth:
        ok = ok & (depth <= 4.0 * q)
    return ok


def _freeze(pieces):
    return tuple(
        (None if lo is None else float(lo), None if hi is None else float(hi),
         tuple((float(beta), tuple(float(c) for c in cs)) for beta, cs in terms))
        for lo, hi, terms in pieces
    )
