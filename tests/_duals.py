"""Test doubles of the ``DualKernel`` interface, written from the closed forms of papers.md §1.3.

They let the layer tests run before the generated catalog lands. Each double exposes
``nngp(q11, q12, q22, **p)``, ``ntk_factor(...)``, ``diag(q, **p)``, ``ntk_diag(q, **p)``,
``activation(x, **p)``, ``params`` and ``name``, all elementwise and broadcasting over JAX arrays.

The angle is θ = arctan2(√max(q11 q22 − q12², 0), q12) with θ = π/2 at zero variance, as in pitfall 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from dualact.runtime.numerics import safe_sqrt

PI = jnp.pi


class Dual:
    """A DualKernel-like object built from closed-form functions (parameters passed by keyword)."""

    def __init__(self, name, nngp, ntk_factor, diag, ntk_diag, activation, defaults=None):
        self.name = name
        self._nngp, self._ntk, self._diag, self._ntk_diag, self._act = (
            nngp,
            ntk_factor,
            diag,
            ntk_diag,
            activation,
        )
        self.defaults = dict(defaults or {})
        self.params = tuple(sorted(self.defaults))

    def _p(self, params):
        out = dict(self.defaults)
        out.update(params)
        return out

    def nngp(self, q11, q12, q22, **params):
        return self._nngp(q11, q12, q22, **self._p(params))

    def ntk_factor(self, q11, q12, q22, **params):
        return self._ntk(q11, q12, q22, **self._p(params))

    def diag(self, q, **params):
        return self._diag(q, **self._p(params))

    def ntk_diag(self, q, **params):
        if self._ntk_diag is None:
            return self._ntk(q, q, q, **self._p(params))
        return self._ntk_diag(q, **self._p(params))

    def activation(self, x, **params):
        return self._act(x, **self._p(params))

    def __repr__(self):
        return f"Dual({self.name!r})"


_TAN_PI_8 = 0.41421356237309503


def _atan_coefficients(degree=11):
    """atan(u)/u as a polynomial in z = u² on |u| ≤ tan(π/8): a Chebyshev fit (≈ minimax), error ≈ 1e-16."""
    zmax = _TAN_PI_8**2
    nodes = (np.cos((2 * np.arange(64) + 1) * np.pi / 128) + 1) / 2 * zmax
    u = np.sqrt(nodes)
    cheb = np.polynomial.Chebyshev.fit(nodes, np.arctan(u) / u, degree, domain=[0, zmax])
    return [float(c) for c in cheb.convert(kind=np.polynomial.Polynomial).coef]


_ATAN_POLY = _atan_coefficients()


@jax.custom_jvp
def fast_atan2(y, x):
    """atan2 from vectorisable arithmetic (XLA's CPU atan2 is a scalar libm call, ~5x slower);
    within 2 ulp of ``numpy.arctan2``; π/2 at (0, 0) like ``safe_atan2``."""
    ax, ay = jnp.abs(x), jnp.abs(y)
    mx = jnp.maximum(ax, ay)
    mn = jnp.minimum(ax, ay)
    big = mn > _TAN_PI_8 * mx  # then reduce with atan(t) = π/4 + atan((t − 1)/(t + 1)), t = mn/mx
    num = jnp.where(big, mn - mx, mn)
    den = jnp.where(big, mn + mx, mx)
    u = num / jnp.where(den == 0, 1.0, den)  # a single division
    z = u * u
    p = _ATAN_POLY[-1]
    for c in _ATAN_POLY[-2::-1]:
        p = p * z + c
    a = u * p
    a = jnp.where(big, PI / 4 + a, a)
    a = jnp.where(ay > ax, PI / 2 - a, a)
    a = jnp.where(x < 0, PI - a, a)
    a = jnp.where(y < 0, -a, a)
    return jnp.where(mx == 0, PI / 2, a)


@fast_atan2.defjvp
def _fast_atan2_jvp(primals, tangents):
    (y, x), (dy, dx) = primals, tangents
    r2 = jnp.maximum(x * x + y * y, 1e-300)
    return fast_atan2(y, x), (x * dy - y * dx) / r2


def _theta(q11, q12, q22):
    return fast_atan2(safe_sqrt(q11 * q22 - q12 * q12), q12)


# ---- ReLU family: a·min(t,0) + b·max(t,0) -------------------------------------------------------------


def _ab_dot(q11, q12, q22, a, b):
    return (a * a + b * b) / 2 - (a - b) ** 2 * _theta(q11, q12, q22) / (2 * PI)


def _ab_nngp(q11, q12, q22, a, b):
    return (a - b) ** 2 / (2 * PI) * safe_sqrt(q11 * q22 - q12 * q12) + _ab_dot(q11, q12, q22, a, b) * q12


def abrelu(a=0.0, b=1.0, name="abrelu"):
    return Dual(
        name,
        nngp=_ab_nngp,
        ntk_factor=_ab_dot,
        diag=lambda q, a, b: (a * a + b * b) / 2 * q,
        ntk_diag=lambda q, a, b: (a * a + b * b) / 2 + 0.0 * q,
        activation=lambda x, a, b: a * jnp.minimum(x, 0.0) + b * jnp.maximum(x, 0.0),
        defaults={"a": a, "b": b},
    )


def relu():
    d = abrelu(0.0, 1.0, "relu")
    return _fixed(d, {"a": 0.0, "b": 1.0})


def leaky_relu(alpha=0.1):
    return Dual(
        "leaky_relu",
        nngp=lambda q11, q12, q22, alpha: _ab_nngp(q11, q12, q22, alpha, 1.0),
        ntk_factor=lambda q11, q12, q22, alpha: _ab_dot(q11, q12, q22, alpha, 1.0),
        diag=lambda q, alpha: (1 + alpha * alpha) / 2 * q,
        ntk_diag=lambda q, alpha: (1 + alpha * alpha) / 2 + 0.0 * q,
        activation=lambda x, alpha: jnp.where(x > 0, x, alpha * x),
        defaults={"alpha": alpha},
    )


def abs_():
    return _fixed(abrelu(-1.0, 1.0, "abs"), {"a": -1.0, "b": 1.0})


def _fixed(d, values):
    """The same double with its parameters frozen (no user-visible parameters)."""
    out = Dual(d.name, d._nngp, d._ntk, d._diag, d._ntk_diag, d._act, defaults=values)
    out.params = ()
    return out


def sign():
    return Dual(
        "sign",
        nngp=lambda q11, q12, q22: 1 - 2 * _theta(q11, q12, q22) / PI,
        ntk_factor=lambda q11, q12, q22: jnp.zeros_like(q12 * q11 * q22),
        diag=lambda q: jnp.where(q == 0, 0.0, 1.0),
        ntk_diag=lambda q: jnp.zeros_like(q),
        activation=lambda x: jnp.sign(x),
    )


# ---- erf family ----------------------------------------------------------------------------------------


def _erf_nngp(q11, q12, q22, a, b, c):
    b2 = b * b
    d = (1 + 2 * b2 * q11) * (1 + 2 * b2 * q22)
    return a * a * (2 / PI) * jnp.arctan2(2 * b2 * q12, safe_sqrt(d - 4 * b2 * b2 * q12 * q12)) + c * c


def _erf_dot(q11, q12, q22, a, b, c):
    b2 = b * b
    d = (1 + 2 * b2 * q11) * (1 + 2 * b2 * q22)
    return a * a * b2 * (4 / PI) / safe_sqrt(d - 4 * b2 * b2 * q12 * q12)


def erf_abc(a=1.0, b=1.0, c=0.0, name="erf"):
    return Dual(
        name,
        nngp=_erf_nngp,
        ntk_factor=_erf_dot,
        diag=lambda q, a, b, c: (
            a * a * (2 / PI) * jnp.arctan2(2 * b * b * q, jnp.sqrt(1 + 4 * b * b * q)) + c * c
        ),
        ntk_diag=lambda q, a, b, c: a * a * b * b * (4 / PI) / jnp.sqrt(1 + 4 * b * b * q),
        activation=lambda x, a, b, c: a * erf(b * x) + c,
        defaults={"a": a, "b": b, "c": c},
    )


def erf_():
    return _fixed(erf_abc(name="erf"), {"a": 1.0, "b": 1.0, "c": 0.0})


def sigmoid_like():
    return _fixed(erf_abc(name="sigmoid_like"), {"a": 0.5, "b": 1 / 2.4020563531719796, "c": 0.5})


# ---- GeLU ----------------------------------------------------------------------------------------------


def _gelu_parts(q11, q12, q22):
    pp1 = (1 + q11) * (1 + q22)
    d2 = pp1 - q12 * q12
    d = safe_sqrt(d2)
    ang = jnp.arctan2(q12, d)
    return pp1, d2, d, ang


def _gelu_nngp(q11, q12, q22):
    pp1, d2, d, ang = _gelu_parts(q11, q12, q22)
    p = q11 * q22
    return 0.25 * q12 + ((q12 * q12 + p * d2) / (pp1 * d) + q12 * ang) / (2 * PI)


def _gelu_dot(q11, q12, q22):
    pp1, d2, d, ang = _gelu_parts(q11, q12, q22)
    p = q11 * q22
    return 0.25 + ang / (2 * PI) + q12 / (2 * PI * d) * (1 / d2 + (1 - p) / pp1 + 1)


def _gelu_diag(q):
    s = jnp.sqrt(1 + 2 * q)
    return q * (0.25 + (q / ((q + 1) * s) + jnp.arctan2(q, s) / 2) / PI)


def gelu():
    return Dual(
        "gelu",
        nngp=_gelu_nngp,
        ntk_factor=_gelu_dot,
        diag=_gelu_diag,
        ntk_diag=None,
        activation=lambda x: jax.nn.gelu(x, approximate=False),
    )


# ---- trigonometric / exponential ----------------------------------------------------------------------


def _sin_nngp(q11, q12, q22, a, b, c):
    b2 = b * b
    s = q11 + q22
    s1 = jnp.exp(b2 * (-0.5 * s + q12))
    s2 = jnp.exp(b2 * (-0.5 * s - q12)) * jnp.cos(2 * c)
    return a * a / 2 * (s1 - s2)


def _sin_dot(q11, q12, q22, a, b, c):
    b2 = b * b
    s = q11 + q22
    s1 = jnp.exp(b2 * (-0.5 * s + q12))
    s2 = jnp.exp(b2 * (-0.5 * s - q12)) * jnp.cos(2 * c)
    return a * a * b2 / 2 * (s1 + s2)


def sin_abc(a=1.0, b=1.0, c=0.0, name="sin"):
    return Dual(
        name,
        nngp=_sin_nngp,
        ntk_factor=_sin_dot,
        diag=lambda q, a, b, c: a * a / 2 * (1 - jnp.exp(-2 * b * b * q) * jnp.cos(2 * c)),
        ntk_diag=None,
        activation=lambda x, a, b, c: a * jnp.sin(b * x + c),
        defaults={"a": a, "b": b, "c": c},
    )


def sin_():
    return _fixed(sin_abc(name="sin"), {"a": 1.0, "b": 1.0, "c": 0.0})


def cos_():
    return _fixed(sin_abc(name="cos"), {"a": 1.0, "b": 1.0, "c": math.pi / 2})


def rbf(gamma=1.0):
    return Dual(
        "rbf",
        nngp=lambda q11, q12, q22, gamma: jnp.exp(-gamma * (q11 + q22 - 2 * q12)),
        ntk_factor=lambda q11, q12, q22, gamma: 2 * gamma * jnp.exp(-gamma * (q11 + q22 - 2 * q12)),
        diag=lambda q, gamma: jnp.ones_like(q),
        ntk_diag=lambda q, gamma: 2 * gamma + 0.0 * q,
        activation=lambda x, gamma: jnp.sqrt(2.0) * jnp.sin(jnp.sqrt(2 * gamma) * x + jnp.pi / 4),
        defaults={"gamma": gamma},
    )


def exp_ab(a=1.0, b=1.0):
    return Dual(
        "exp",
        nngp=lambda q11, q12, q22, a, b: a * a * jnp.exp(b * b * ((q11 + q22) / 2 + q12)),
        ntk_factor=lambda q11, q12, q22, a, b: a * a * b * b * jnp.exp(b * b * ((q11 + q22) / 2 + q12)),
        diag=lambda q, a, b: a * a * jnp.exp(2 * b * b * q),
        ntk_diag=None,
        activation=lambda x, a, b: a * jnp.exp(b * x),
        defaults={"a": a, "b": b},
    )


def gaussian(a=1.0, b=-1.0):
    def nngp(q11, q12, q22, a, b):
        det = (1 - 2 * b * q11) * (1 - 2 * b * q22) - 4 * b * b * q12 * q12
        return a * a / safe_sqrt(det)

    def dot(q11, q12, q22, a, b):
        det = (1 - 2 * b * q11) * (1 - 2 * b * q22) - 4 * b * b * q12 * q12
        return a * a * 4 * b * b * q12 / safe_sqrt(det) ** 3

    return Dual(
        "gaussian",
        nngp=nngp,
        ntk_factor=dot,
        diag=lambda q, a, b: a * a / jnp.sqrt(1 - 4 * b * q),
        ntk_diag=None,
        activation=lambda x, a, b: a * jnp.exp(b * x * x),
        defaults={"a": a, "b": b},
    )


def gabor():
    def parts(q11, q12, q22):
        s = q11 + q22
        p = q11 * q22
        delta = 4 * (p - q12 * q12)
        den = 2 * s + delta + 1
        num = s + delta + 2 * q12
        e_l = jnp.exp(-num / (2 * den))
        e_r = jnp.exp(2 * q12 / den)
        return s, p, delta, den, e_l, e_r

    def nngp(q11, q12, q22):
        _, _, _, den, e_l, e_r = parts(q11, q12, q22)
        return e_l * (e_r - 1) / (2 * jnp.sqrt(den))

    def dot(q11, q12, q22):
        s, p, delta, den, e_l, e_r = parts(q11, q12, q22)
        big_a = 1 + 2 * s + 4 * (q12 * q12 + p)
        big_b = 4 * q12 * (delta + 3 * s + 2)
        return e_l * ((big_a - big_b) + e_r * (big_a + big_b)) / (2 * den**2.5)

    return Dual(
        "gabor",
        nngp=nngp,
        ntk_factor=dot,
        diag=lambda q: (1 - jnp.exp(-2 * q / (1 + 4 * q))) / (2 * jnp.sqrt(1 + 4 * q)),
        ntk_diag=None,
        activation=lambda x: jnp.exp(-x * x) * jnp.sin(x),
    )


def exp_normalized(gamma=1.0, shift=-1.0):
    def nngp(q11, q12, q22, gamma, shift):
        sp = safe_sqrt(q11 * q22)
        rho = q12 / jnp.where(sp > 0, sp, 1.0)
        return sp * jnp.exp(gamma * (rho + shift))

    def dot(q11, q12, q22, gamma, shift):
        sp = safe_sqrt(q11 * q22)
        rho = q12 / jnp.where(sp > 0, sp, 1.0)
        return gamma * jnp.exp(gamma * (rho + shift))

    def no_activation(x, gamma, shift):
        raise NotImplementedError("ExpNormalized is kernel-only: it has no finite-width activation")

    return Dual(
        "exp_normalized",
        nngp=nngp,
        ntk_factor=dot,
        diag=lambda q, gamma, shift: q * jnp.exp(gamma * (1 + shift)),
        ntk_diag=lambda q, gamma, shift: gamma * jnp.exp(gamma * (1 + shift)) + 0.0 * q,
        activation=no_activation,
        defaults={"gamma": gamma, "shift": shift},
    )


# ---- polynomials ---------------------------------------------------------------------------------------


def _radial_tables(coeffs):
    """Coefficients of s_l(q) = Σ_i c_{2i+l} (2i+l)! / (2^i i! √(l!)) q^i, so that
    E[p(u) p(v)] = Σ_l s_l(q11) s_l(q22) q12^l (papers.md §1.4.2 without the √q factors)."""
    deg = len(coeffs) - 1
    tables = []
    for l_ in range(deg + 1):
        row = []
        for i in range((deg - l_) // 2 + 1):
            j = 2 * i + l_
            row.append(
                coeffs[j] * math.factorial(j) / (2**i * math.factorial(i) * math.sqrt(math.factorial(l_)))
            )
        tables.append(row)
    return tables


def _poly_eval(row, q):
    out = jnp.zeros_like(q)
    for c in reversed(row):
        out = out * q + c
    return out


def polynomial(coeffs, name="polynomial"):
    coeffs = [float(c) for c in coeffs]
    tables = _radial_tables(coeffs)

    def nngp(q11, q12, q22):
        return sum(_poly_eval(r, q11) * _poly_eval(r, q22) * q12**l_ for l_, r in enumerate(tables))

    def dot(q11, q12, q22):
        return (
            sum(
                l_ * _poly_eval(r, q11) * _poly_eval(r, q22) * q12 ** (l_ - 1)
                for l_, r in enumerate(tables)
                if l_ > 0
            )
            + 0.0 * q12
        )

    def act(x):
        return sum(c * x**j for j, c in enumerate(coeffs))

    return Dual(name, nngp, dot, lambda q: nngp(q, q, q), None, act)


def monomial(k):
    return polynomial([0.0] * k + [1.0], name=f"monomial_{k}")


def hermite(k):
    """Normalised probabilists' Hermite He_k/√(k!), exact for any variance (not only on the sphere)."""
    # E[h_k(u) h_k(v)] = Σ_j k!/((j!)² (k−2j)!) q12^{k−2j} ((q11−1)(q22−1)/4)^j
    terms = [
        (math.factorial(k) / (math.factorial(j) ** 2 * math.factorial(k - 2 * j)), k - 2 * j, j)
        for j in range(k // 2 + 1)
    ]

    def nngp(q11, q12, q22):
        r = (q11 - 1) * (q22 - 1) / 4
        return sum(c * q12**m * r**j for c, m, j in terms)

    def dot(q11, q12, q22):
        r = (q11 - 1) * (q22 - 1) / 4
        return sum(c * m * q12 ** (m - 1) * r**j for c, m, j in terms if m > 0) + 0.0 * q12

    he = np.polynomial.hermite_e.HermiteE.basis(k).convert(kind=np.polynomial.Polynomial).coef
    he = he / math.sqrt(math.factorial(k))

    def act(x):
        return sum(float(c) * x**j for j, c in enumerate(he))

    return Dual(f"hermite_{k}", nngp, dot, lambda q: nngp(q, q, q), None, act)


def rectified_monomial(k):
    """1[t ≥ 0]·t^k (Cho–Saul arc-cosine kernel of order k); NTK factor k²·T_{k−1}."""
    if k not in (0, 1, 2):
        raise NotImplementedError("test double covers k ≤ 2")

    def j_fn(order, th):
        c, s = jnp.cos(th), jnp.sin(th)
        if order == 0:
            return PI - th
        if order == 1:
            return s + (PI - th) * c
        return 3 * s * c + (PI - th) * (1 + 2 * c * c)

    def t_fn(order, q11, q12, q22):
        th = _theta(q11, q12, q22)
        return safe_sqrt(q11 * q22) ** order / (2 * PI) * j_fn(order, th)

    def nngp(q11, q12, q22):
        return t_fn(k, q11, q12, q22)

    def dot(q11, q12, q22):
        if k == 0:
            return jnp.zeros_like(q12 * q11 * q22)
        return k * k * t_fn(k - 1, q11, q12, q22)

    dfact = [1, 1, 3][k]

    def diag(q):
        return dfact * q**k / 2

    def ntk_diag(q):
        if k == 0:
            return jnp.zeros_like(q)
        return k * k * [1, 1, 3][k - 1] * q ** (k - 1) / 2

    return Dual(f"rectified_monomial_{k}", nngp, dot, diag, ntk_diag, lambda x: jnp.where(x >= 0, x**k, 0.0))


REGISTRY = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "abrelu": abrelu,
    "abs": abs_,
    "sign": sign,
    "erf": erf_,
    "sigmoid_like": sigmoid_like,
    "gelu": gelu,
    "sin": sin_,
    "cos": cos_,
    "rbf": rbf,
    "exp": exp_ab,
    "gaussian": gaussian,
    "gabor": gabor,
    "exp_normalized": exp_normalized,
}


def get(name):
    """The test double called ``name`` (a fresh object)."""
    return REGISTRY[name]()
