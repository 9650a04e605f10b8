"""Activation layers: a dual kernel applied to Gaussian pre-activations.

``Activation(name_or_expr, **params)`` takes a catalog name (``"relu"``, ``"gelu"``...), any activation
expression (``"x*tanh(softplus(x))"``, derived by :func:`dualact.derive`), or a ``DualKernel``-like object.
``Elementwise(fn, nngp_fn, ntk_factor_fn=None)`` wraps a user-supplied closed form.

Kernel map (pitfall 11 of the digest): with pre-activation covariances (q11, q12, q22),
``nngp → T(q11, q12, q22)`` and ``ntk → ntk · Ṫ(q11, q12, q22)``. Entries where both variables coincide
(the same input at the same pixel, only when ``x2 is None``) use the exact diagonal maps ``T(q, q, q)``
and ``Ṫ(q, q, q)`` of the dual kernel, never the off-diagonal formula evaluated at ρ = 1.

Hermite-table kernels (``DualKernel.method == "hermite"``: tanh, SiLU, softplus...) are evaluated as matrices:
q11 depends on the x1 input and pixel only, q22 on the x2 input and pixel only, so the series coefficients
are computed once per input and pixel and combined by :func:`dualact.runtime.hermite_series.nngp_matrix`
(an O(R·C) accumulator instead of (R, C, J) arrays). The result equals the elementwise formula to within
machine precision. One-dimensional-tier kernels (ELU, SELU, relu(x − ½): hundreds of quadrature nodes per
entry) evaluate the symmetric (n, n) block of ``kernel_fn(x, None)`` on one half (:func:`_folded_symmetric`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dualact.layers.base import Layer
from dualact.layers.kernel import diagonal_mask, materialize, outer_variances

_INTERFACE = ("nngp", "ntk_factor", "diag", "ntk_diag", "activation")
# Dual kernels costly enough per entry (hundreds of quadrature nodes) that a symmetric block is evaluated on
# one half (see _folded_symmetric); for closed forms the fold's gathers cost more than they save (FC depth 3,
# n = 1000: ReLU 0.076 s unfolded, 0.098 s folded; ELU at n = 400: 6.1 s unfolded, 3.3 s folded).
_FOLDED_METHODS = frozenset({"quadrature_1d"})


def _is_dual_kernel(obj) -> bool:
    return all(callable(getattr(obj, a, None)) for a in ("nngp", "ntk_factor", "diag"))


def _resolve_activation(spec, params: dict[str, Any]):
    """Turn a name, an expression or a DualKernel-like object into a DualKernel.

    Order: an object with ``nngp``/``ntk_factor``/``diag`` methods is used as is; a string is looked up
    with ``dualact.catalog.get`` and, if the catalog does not know it, derived with ``dualact.derive``.
    """
    if _is_dual_kernel(spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            "Activation expects a catalog name, an expression string or a DualKernel; "
            f"got {type(spec).__name__}"
        )
    catalog_error: Exception | None = None
    try:
        from dualact import catalog

        getter = getattr(catalog, "get", None)
        if getter is not None:
            found = getter(spec)
            if found is not None:
                return found
    except Exception as e:  # unknown name, or catalog not generated yet
        catalog_error = e
    import dualact

    derive = getattr(dualact, "derive", None)
    if derive is None:
        from dualact.errors import DerivationError

        raise DerivationError(
            f"cannot resolve activation {spec!r}: not in the catalog ({catalog_error}) and the derivation "
            "engine (dualact.derive) is not available"
        ) from catalog_error
    return derive(spec, params=params)


class Activation(Layer):
    """Elementwise nonlinearity σ with its exact dual kernel.

    Args:
      name_or_expr: catalog name, expression in ``x`` (e.g. ``"x*tanh(softplus(x))"``) or a DualKernel.
      **params: values of the activation's parameters (e.g. ``alpha=0.1``); they may be JAX tracers, so
        kernels are differentiable with respect to them.

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> L.Activation("relu")
    Activation(name='relu', params={})
    """

    _hyper = ("spec", "params")

    def __init__(self, name_or_expr, **params):
        self.spec = name_or_expr
        self.params = dict(params)
        self.dual = _resolve_activation(name_or_expr, self.params)

    @property
    def activation_name(self) -> str:
        return getattr(self.dual, "name", str(self.spec))

    def __repr__(self):
        return f"Activation(name={self.activation_name!r}, params={self.params})"

    def _apply(self, params, inputs, **kwargs):
        return self.dual.activation(inputs, **self.params)

    def _kernel(self, k):
        return apply_dual(self.dual, self.params, k, type(self).__name__)


def apply_dual(dual, params: dict, k, layer_name: str = "Activation"):
    """The kernel map of an activation layer (shared by Activation and Elementwise)."""
    if not k.is_gaussian:
        raise ValueError(
            f"{layer_name}: the input of an activation must be Gaussian, i.e. a Dense/Conv layer (or other "
            "random affine map) must come right before it"
        )
    p = params
    var1, var2 = k.variances()
    want_ntk = k.track_ntk and k.ntk is not None

    def pointwise(q11, q12, q22, ntk, mask):
        """T (and ntk·Ṫ) on one block of entries; ``mask`` marks coincident variables (or is None)."""
        q12 = cauchy_schwarz(q11, q12, q22)
        q12_off = q12 if mask is None else jnp.where(mask, jnp.zeros((), q12.dtype), q12)
        t = _at_coincident(mask, dual.nngp(q11, q12_off, q22, **p), lambda q: dual.diag(q, **p), q11, q22)
        out_ntk = None
        if ntk is not None:
            factor = _at_coincident(mask, dual.ntk_factor(q11, q12_off, q22, **p),
                                    lambda q: _ntk_diag(dual, q, p), q11, q22)
            out_ntk = (ntk * factor).astype(ntk.dtype)
        return t.astype(q12.dtype), out_ntk

    maps = _hermite_maps(dual, p)

    def block_map(batch_ndim):
        return pointwise if maps is None else _matrix_pointwise(dual, p, maps, batch_ndim)

    nngp = ntk = None
    if k.nngp is not None:  # cross kernel
        q11, q22 = outer_variances(var1, var2, 2)
        args = (q11, k.nngp, q22, k.ntk if want_ntk else None, k.coincident_mask())
        symmetric = k.x1_is_x2 and k.n_spatial == 0
        if symmetric and getattr(dual, "method", None) in _FOLDED_METHODS:
            nngp, ntk = _folded_symmetric(pointwise, *args[:4], k.pair_mask)
        else:
            nngp, ntk = _blockwise(block_map(2), args, 2, k.n_spatial)

    def self_cov(cov, var):  # all pixel pairs of one input
        if cov is None:
            return None
        if k.n_spatial == 0:
            return dual.diag(cov, **p).astype(cov.dtype)
        a, b = outer_variances(var, var, 1)
        m = diagonal_mask(cov.shape, 1, True)
        return _blockwise(block_map(1), (a, cov, b, None, m), 1, k.n_spatial)[0]

    return k.replace(
        nngp=nngp, ntk=ntk, cov1=self_cov(k.cov1, var1), cov2=self_cov(k.cov2, var2), is_gaussian=False
    )


def cauchy_schwarz(q11, q12, q22):
    """q12 clipped to ±√q11·√q22.

    A covariance obeys |q12| ≤ √(q11 q22), but the layers compute q12 and the variances by different formulas
    (the off-diagonal T against the diagonal one), so near ρ = ±1 rounding can put it a few ulp outside. The
    dual kernels take such an entry as ρ = ±1 for the square root of the Gram determinant and as |ρ| > 1
    elsewhere, which a deep network amplified layer after layer: two inputs 1e-6 apart reached ρ = 1 + 6e-11
    after 60 ELU layers (σ_w = 1), ρ = 3e4 after 100, and then NaN (in float64).

    >>> float(cauchy_schwarz(1.0, 2.0 + 1e-12, 4.0)), float(cauchy_schwarz(1.0, -3.0, 4.0))
    (2.0, -2.0)
    """
    bound = jnp.sqrt(q11) * jnp.sqrt(q22)  # not √(q11·q22): that product overflows first
    return jnp.where(q12 > bound, bound, jnp.where(q12 < -bound, -bound, q12))  # ties keep q12's gradient


def _folded_symmetric(pointwise, q11, q12, q22, ntk, pair_mask=None):
    """``pointwise`` on a symmetric (n, n) block (``kernel_fn(x, None)`` of a network without spatial axes),
    evaluated on n·(n//2 + 1) entries instead of n².

    Every unordered pair {i, j} is the entry (i, (i + d) mod n) of some row i with offset d ≤ n//2, so the
    block is folded into an (n, n//2 + 1) array B[i, d] (the pairs at d = n/2 appear twice when n is even),
    evaluated, and read back as A[i, j] = B[i, (j − i) mod n] or B[j, (i − j) mod n], whichever offset is
    ≤ n//2. The indices are iota arithmetic (no constants of size n²); the result is exactly symmetric.
    ``pair_mask`` (n, n) marks the coincident pairs (identical inputs; default: the diagonal).
    """
    n = q12.shape[0]
    h = n // 2 + 1
    rows = jnp.arange(n)[:, None]
    cols = (rows + jnp.arange(h)[None, :]) % n  # (n, h): column j = i + d of the folded entry (i, d)
    q22_f = jnp.reshape(q22, (n,))[cols]
    ntk_f = None if ntk is None else jnp.take_along_axis(ntk, cols, axis=1)
    same = cols == rows if pair_mask is None else jnp.take_along_axis(pair_mask, cols, axis=1)  # coincident pairs
    t, out = pointwise(jnp.reshape(q11, (n, 1)), jnp.take_along_axis(q12, cols, axis=1), q22_f, ntk_f, same)
    ii, jj = rows, jnp.arange(n)[None, :]
    d = (jj - ii) % n
    near = (d < n - d) | ((d == n - d) & (ii < jj))  # offset d ≤ n//2 (d = n/2: read from the upper row)
    r, o = jnp.where(near, ii, jj), jnp.where(near, d, (ii - jj) % n)

    def unfold(b):
        return b[r, o]

    return unfold(t), (None if out is None else unfold(out))


def _blockwise(fn, args, batch_ndim, n_spatial):
    """``fn(*args)``; for image kernels the results are materialised (see :func:`materialize`): a stencil
    (convolution, pooling) follows, which would otherwise re-evaluate the formula for every shifted read."""
    out = fn(*args)
    return materialize(out) if n_spatial else out


def _hermite_maps(dual, params: dict):
    """``(nngp_matrix, ntk_factor_matrix)`` closed over the table of a Hermite-table DualKernel, or None.

    The matrix maps take ``(q1 (..., R), q12 (..., R, C), q2 (..., C))``; see
    :func:`dualact.runtime.hermite_series.nngp_matrix`.
    """
    if params or getattr(dual, "method", None) != "hermite":
        return None
    module = getattr(dual, "module", None)
    table = getattr(module, "_table", None)
    parts = [getattr(module, a, None) for a in ("activation", "derivative", "KINKS")]
    if not callable(table) or any(v is None for v in parts):
        return None
    from dualact.runtime import hermite_series

    act, der, kinks = parts
    tab = table()

    def nngp(q1, q12, q2):
        return hermite_series.nngp_matrix(tab, act, kinks, q1, q12, q2)

    def ntk_factor(q1, q12, q2):
        return hermite_series.ntk_factor_matrix(tab, der, kinks, q1, q12, q2)

    return nngp, ntk_factor


def _matrix_pointwise(dual, p: dict, maps, batch_ndim: int):
    """The ``pointwise`` block map of :func:`apply_dual` for kernels with matrix maps.

    ``batch_ndim`` and the blocks are those of :func:`outer_variances`: cross kernels (2)
    ``q11 (n1, 1, *sp, *1)``,
    ``q12 (n1, n2, *sp, *sp')``, ``q22 (1, n2, *1, *sp')``: rows are (x1 input, pixel), columns (x2 input,
    pixel'); self covariances (1) ``q11 (n, *sp, *1)``, ``q12 (n, *sp, *sp')``, ``q22 (n, *1, *sp')``: one
    (pixel, pixel') matrix per input.
    """
    nngp_matrix, ntk_matrix = maps

    def pointwise(q11, q12, q22, ntk, mask):
        n_sp = (q12.ndim - batch_ndim) // 2
        shape = q12.shape
        if batch_ndim == 2:
            n1, n2 = shape[:2]
            sp1, sp2 = shape[2 : 2 + n_sp], shape[2 + n_sp :]
            perm = (0, *range(2, 2 + n_sp), 1, *range(2 + n_sp, 2 + 2 * n_sp))
            lead, rows, cols = (), n1 * _prod(sp1), n2 * _prod(sp2)
            mid = (n1, *sp1, n2, *sp2)
        else:
            n = shape[0]
            sp1, sp2 = shape[1 : 1 + n_sp], shape[1 + n_sp :]
            perm = tuple(range(q12.ndim))
            lead, rows, cols = (n,), _prod(sp1), _prod(sp2)
            mid = shape
        inv = tuple(int(i) for i in np.argsort(perm))

        def to_matrix(a):
            return jnp.transpose(a, perm).reshape(lead + (rows, cols))

        def from_matrix(a):
            return jnp.transpose(a.reshape(mid), inv)

        q12 = cauchy_schwarz(q11, q12, q22)
        q1 = q11.reshape(lead + (rows,))
        q2 = q22.reshape(lead + (cols,))
        q12_off = q12 if mask is None else jnp.where(mask, jnp.zeros((), q12.dtype), q12)
        m12 = to_matrix(q12_off)
        t = _at_coincident(mask, from_matrix(nngp_matrix(q1, m12, q2)), lambda q: dual.diag(q, **p), q11, q22)
        out_ntk = None
        if ntk is not None:
            factor = _at_coincident(mask, from_matrix(ntk_matrix(q1, m12, q2)), lambda q: _ntk_diag(dual, q, p),
                                    q11, q22)
            out_ntk = (ntk * factor).astype(ntk.dtype)
        return t.astype(q12.dtype), out_ntk

    return pointwise


def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _at_coincident(mask, values, diag, q11, q22):
    """``values`` with the entries of coincident pairs (``mask``; None: none) replaced by the diagonal formula."""
    return values if mask is None else jnp.where(mask, _coincident(diag, q11, q22), values)


def _coincident(diag, q11, q22):
    """``diag`` at the variance of a coincident pair, with the gradient of both of its variances.

    The two variances are equal, but they come from different inputs where x1 and x2 hold equal rows, and
    ∂/∂x2 of the entry must see q22: T(q11, q12, q22) and diag((q11 + q22)/2) agree to first order there
    (∂T/∂q11 = ∂T/∂q22 at q11 = q22, and q12 moves as q11 and q22 do). So this is diag(q11) + diag'(q11)·(q22 −
    q11)/2, with ``diag`` evaluated on q11's shape only (per input, not per pair).
    """
    value, slope = jax.jvp(diag, (q11,), (jnp.ones_like(q11),))
    slope = jnp.where(jnp.isfinite(slope), slope, 0.0)  # e.g. at q = 0 for a diagonal like √q: no 0·inf
    return value + slope * (0.5 * (q22 - q11))


def _ntk_diag(dual, q, p):
    fn = getattr(dual, "ntk_diag", None)
    if fn is None:
        return dual.ntk_factor(q, q, q, **p)
    return fn(q, **p)


class _ElementwiseDual:
    """DualKernel adapter around user closed forms ``nngp_fn(cov12, var1, var2)`` (neural-tangents order)."""

    def __init__(self, fn, nngp_fn, ntk_factor_fn=None, name=None):
        self._fn, self._nngp, self._ntk = fn, nngp_fn, ntk_factor_fn
        self.name = name or getattr(fn, "__name__", None) or getattr(nngp_fn, "__name__", "elementwise")
        self.params = ()

    def nngp(self, q11, q12, q22):
        return self._nngp(q12, q11, q22)

    def ntk_factor(self, q11, q12, q22):
        if self._ntk is not None:
            return self._ntk(q12, q11, q22)
        q11, q12, q22 = jnp.broadcast_arrays(q11, q12, q22)
        # Price's theorem: Ṫ = ∂T/∂q12, elementwise, by a forward-mode derivative
        _, dot = jax.jvp(lambda c: self._nngp(c, q11, q22), (q12,), (jnp.ones_like(q12),))
        return dot

    def diag(self, q):
        return self._nngp(q, q, q)

    def ntk_diag(self, q):
        return self.ntk_factor(q, q, q)

    def activation(self, x):
        if self._fn is None:
            raise NotImplementedError("Elementwise layer built without fn: apply_fn is unavailable")
        return self._fn(x)


class Elementwise(Activation):
    """Activation from a user-supplied closed form, as ``neural_tangents.stax.Elementwise``.

    Args:
      fn: the activation σ (for ``apply_fn``); may be ``None`` for a kernel-only layer.
      nngp_fn: ``nngp_fn(cov12, var1, var2) = E[σ(u)σ(v)]`` (argument order of neural-tangents).
      ntk_factor_fn: ``E[σ'(u)σ'(v)]`` with the same signature; by default ∂nngp_fn/∂cov12 (autodiff).

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> def nngp_fn(c, v1, v2):
    ...     return 2 / jnp.pi * jnp.arcsin(2 * c / jnp.sqrt((1 + 2 * v1) * (1 + 2 * v2)))
    >>> net = L.serial(L.Dense(1), L.Elementwise(jax.scipy.special.erf, nngp_fn), L.Dense(1))
    >>> net.kernel_fn(jnp.ones((2, 3)), get="ntk").shape
    (2, 2)
    """

    _hyper = ("fn", "nngp_fn", "ntk_factor_fn")

    def __init__(self, fn=None, nngp_fn=None, ntk_factor_fn=None):
        if nngp_fn is None and fn is None:
            raise ValueError("Elementwise needs fn (finite network) and/or nngp_fn (kernel)")
        self.fn, self.nngp_fn, self.ntk_factor_fn = fn, nngp_fn, ntk_factor_fn
        self.spec = fn
        self.params = {}
        self.dual = _ElementwiseDual(fn, nngp_fn, ntk_factor_fn)

    def __repr__(self):
        return f"Elementwise(name={self.dual.name!r})"

    def _kernel(self, k):
        if self.nngp_fn is None:
            raise NotImplementedError("Elementwise layer built without nngp_fn: kernel_fn is unavailable")
        return apply_dual(self.dual, {}, k, "Elementwise")


__all__ = ["Activation", "Elementwise", "apply_dual"]
