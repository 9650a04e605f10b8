"""The :class:`Kernel` record that flows through ``kernel_fn``: NNGP, NTK and per-input covariances.

Layout (``S`` = number of spatial dimensions, 0 for fully connected data)::

    nngp, ntk : (n1, n2, *spatial, *spatial)   cross covariance of x1[i] at pixel p and x2[j] at pixel p'
    cov1      : (n1, *spatial, *spatial)       covariance of x1[i] with itself, all pixel pairs
    cov2      : (n2, *spatial, *spatial)       the same for x2; ``None`` when x2 is None (then cov2 = cov1)

Spatial axes are stored as ``(H, W, H', W')``: first all axes of the x1 pixel, then those of the x2 pixel.
The per-pixel variances ``var1``/``var2`` (the "spatial diagonal" of ``cov1``/``cov2``) feed the dual kernels,
and the entries where the two variables coincide (same input, same pixel: the diagonal when ``x1_is_x2``, and
any pair of inputs equal bit for bit, see :mod:`~dualact.layers.identical_inputs`) are computed with the
activation's exact diagonal formula ``T(q, q, q)`` instead of the off-diagonal one.
"""

from __future__ import annotations

import contextvars
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .identical_inputs import identical_rows


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Kernel:
    """Infinite-width covariances of a layer's outputs for two batches of inputs.

    Attributes:
      nngp: cross covariance, shape ``(n1, n2, *spatial, *spatial)``.
      ntk: neural tangent kernel of the same shape; ``None`` means identically zero (inputs, before the
        first trainable layer) when ``track_ntk`` is true, and "not computed" otherwise.
      cov1: covariance of each x1 input with itself, ``(n1, *spatial, *spatial)``.
      cov2: covariance of each x2 input with itself, or ``None`` when ``x1_is_x2``.
      shape1, shape2: shapes the finite network's activations would have ``(batch, *spatial, channels)``;
        the channel count is used by the standard parameterization and by ``FanInConcat``.
      x1_is_x2: true when ``kernel_fn(x1, None)`` was called (``nngp`` is then symmetric and its
        diagonal entries are exact variances).
      is_gaussian: the outputs are Gaussian (an affine layer came last), so an activation may follow.
      is_input: no layer has been applied yet.
      track_ntk: whether the NTK is being computed.
      pair_mask: optional boolean ``(n1, n2)``: which pairs of inputs are the same input (rows equal bit for
        bit, found by :func:`~dualact.layers.identical_inputs.identical_rows`, and the diagonal of the tiled
        evaluation's diagonal tiles); ``None`` means "none", or "the diagonal" when ``x1_is_x2``.

    >>> import jax.numpy as jnp
    >>> k = Kernel.from_inputs(jnp.ones((2, 4)), None)
    >>> k.nngp.shape, k.cov1.shape, k.n_spatial
    ((2, 2), (2,), 0)
    """

    nngp: jax.Array | None
    ntk: jax.Array | None
    cov1: jax.Array | None
    cov2: jax.Array | None
    pair_mask: jax.Array | None
    shape1: tuple = dataclasses.field(metadata={"static": True})
    shape2: tuple = dataclasses.field(metadata={"static": True})
    x1_is_x2: bool = dataclasses.field(default=False, metadata={"static": True})
    is_gaussian: bool = dataclasses.field(default=False, metadata={"static": True})
    is_input: bool = dataclasses.field(default=True, metadata={"static": True})
    track_ntk: bool = dataclasses.field(default=True, metadata={"static": True})

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def from_inputs(cls, x1, x2=None, track_ntk: bool = True, mode: str = "full") -> Kernel:
        """The input kernel of neural-tangents: ⟨x, x'⟩ / C over the trailing (channel) axis.

        ``x`` has shape ``(n, C)`` for fully connected data or ``(n, *spatial, C)`` (e.g. NHWC) for images;
        the spatial axes are kept (all pixel pairs), the channel axis is averaged.

        ``mode`` is ``"full"`` (nngp and per-input covariances), ``"cross"`` (nngp only: per-pixel variances
        come from a replayed :class:`VarianceTape`) or ``"self"`` (per-input covariances only, recorded on a
        tape). The last two are what the blocked evaluation uses to avoid recomputing per-input covariances
        for every block.
        """
        x1 = jnp.asarray(x1)
        if not jnp.issubdtype(x1.dtype, jnp.floating):
            x1 = x1.astype(jnp.result_type(float))
        if x1.ndim < 2:
            raise ValueError(f"inputs must have shape (batch, ..., channels); got shape {x1.shape}")
        x1_is_x2 = x2 is None
        if not x1_is_x2:
            x2 = jnp.asarray(x2, dtype=x1.dtype)
            if x2.shape[1:] != x1.shape[1:]:
                raise ValueError(f"x1 and x2 must agree on all but the batch axis: {x1.shape} vs {x2.shape}")
        n_sp = x1.ndim - 2
        chan = x1.shape[-1]

        def cross(a, b):
            la = "abcdefgh"[:n_sp]
            lb = "stuvwxyz"[:n_sp]
            return jnp.einsum(f"i{la}c,j{lb}c->ij{la}{lb}", a, b, precision=_EXACT) / chan

        def self_cov(a):
            la = "abcdefgh"[:n_sp]
            lb = "stuvwxyz"[:n_sp]
            return jnp.einsum(f"i{la}c,i{lb}c->i{la}{lb}", a, a, precision=_EXACT) / chan

        other = x1 if x1_is_x2 else x2
        nngp = None if mode == "self" else cross(x1, other)
        cov1 = None if mode == "cross" else self_cov(x1)
        cov2 = None if (x1_is_x2 or mode == "cross") else self_cov(x2)
        if mode == "self":
            track_ntk = False
        return cls(
            nngp=nngp,
            ntk=None,
            cov1=cov1,
            cov2=cov2,
            pair_mask=None if mode == "self" else identical_rows(x1, other),
            shape1=tuple(x1.shape),
            shape2=tuple(other.shape),
            x1_is_x2=x1_is_x2,
            is_gaussian=True,
            is_input=True,
            track_ntk=track_ntk,
        )

    def replace(self, **changes: Any) -> Kernel:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    # ---- geometry -------------------------------------------------------------------------------

    @property
    def n_spatial(self) -> int:
        """Number of spatial dimensions (0 for fully connected kernels)."""
        return len(self.shape1) - 2

    @property
    def spatial1(self) -> tuple:
        return tuple(self.shape1[1:-1])

    @property
    def spatial2(self) -> tuple:
        return tuple(self.shape2[1:-1])

    @property
    def channels(self) -> int:
        return self.shape1[-1]

    @property
    def ntk_or_zeros(self) -> jax.Array:
        return jnp.zeros_like(self.nngp) if self.ntk is None else self.ntk

    @property
    def var1(self) -> jax.Array:
        """Per-pixel variances of x1, shape ``(n1, *spatial)``."""
        return spatial_diagonal(self.cov1, 1)

    @property
    def var2(self) -> jax.Array:
        """Per-pixel variances of x2 (those of x1 when ``x1_is_x2``)."""
        return self.var1 if self.cov2 is None else spatial_diagonal(self.cov2, 1)

    def variances(self) -> tuple[jax.Array, jax.Array]:
        """``(var1, var2)`` for a layer that consumes them (activations, LayerNorm).

        Inside a blocked evaluation they are recorded on / replayed from the active :class:`VarianceTape`.
        """
        tape = _TAPE.get()
        if tape is None:
            return self.var1, self.var2
        return tape.next(self)

    def coincident_mask(self) -> jax.Array | None:
        """Boolean mask (broadcastable to ``nngp``) of entries where both variables are the same random
        variable (same input, same pixel), or ``None`` if there are none."""
        shape = self.nngp.shape
        if self.pair_mask is not None:
            pm = self.pair_mask.reshape(tuple(self.pair_mask.shape) + (1,) * (len(shape) - 2))
            return pm & diagonal_mask(shape, 2, True, batch=False)
        if self.x1_is_x2:
            return diagonal_mask(shape, 2, True)
        return None

    def map_covariances(self, fn, ntk_fn=None) -> Kernel:
        """Apply ``fn(array, batch_ndim)`` to nngp, cov1, cov2 (and ``ntk_fn`` or ``fn`` to the NTK)."""
        ntk_fn = fn if ntk_fn is None else ntk_fn
        return self.replace(
            nngp=None if self.nngp is None else fn(self.nngp, 2),
            cov1=None if self.cov1 is None else fn(self.cov1, 1),
            cov2=None if self.cov2 is None else fn(self.cov2, 1),
            ntk=None if self.ntk is None else ntk_fn(self.ntk, 2),
        )

    def get(self, get):
        """The requested entries: ``"nngp"``/``"ntk"`` (an array) or a tuple of them (a named tuple)."""
        return select(self, get)


#: input kernels X Xᵀ / d in full precision (a GPU's default float32 matmul rounds inputs to TF32, ~1e-3)
_EXACT = jax.lax.Precision.HIGHEST

_TAPE: contextvars.ContextVar = contextvars.ContextVar("dualact_variance_tape", default=None)


class VarianceTape:
    """Per-pixel variances seen by each variance-consuming layer, in execution order.

    ``"record"``: a self-only pass appends ``var1`` at every activation/LayerNorm. ``"replay"``: a cross-only
    pass reads them back (``vars1`` for x1, ``vars2`` for x2), so blocks of a large kernel need no per-input
    covariances of their own. Activate with ``with tape: ...``.
    """

    def __init__(self, mode: str, vars1=None, vars2=None):
        if mode not in ("record", "replay"):
            raise ValueError(mode)
        self.mode = mode
        self.records: list = []
        self.vars1 = vars1
        self.vars2 = vars1 if vars2 is None else vars2
        self.position = 0
        self._token = None

    def next(self, k: Kernel):
        if self.mode == "record":
            v = k.var1
            self.records.append(v)
            return v, v
        if self.position >= len(self.vars1):
            raise RuntimeError("variance tape exhausted: the network consumed more variances than recorded")
        v1, v2 = self.vars1[self.position], self.vars2[self.position]
        self.position += 1
        return v1, v2

    def __enter__(self):
        self._token = _TAPE.set(self)
        return self

    def __exit__(self, *exc):
        _TAPE.reset(self._token)
        return False


@jax.custom_vjp
def materialize(tree):
    """Identity that XLA cannot fuse through (a loop with a data-dependent trip count of 1).

    Applied to activation outputs of image kernels: their consumers (convolution shifts, pooling windows)
    read every entry several times, and XLA would otherwise re-evaluate a cheap-but-long activation
    formula inside each of those reads. Gradients pass straight through.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return tree
    first = leaves[0].reshape(-1)[0]
    n = (first != jnp.inf).astype(jnp.int32)  # 1 (0 only if that entry is +inf: then it is the identity too)

    def body(i, t):
        return jax.tree_util.tree_map(lambda a: jnp.where(i >= 0, a, -a), t)

    return jax.lax.fori_loop(0, n, body, tree)


def _materialize_fwd(tree):
    return materialize(tree), None


def _materialize_bwd(_, g):
    return (g,)


materialize.defvjp(_materialize_fwd, _materialize_bwd)


def spatial_diagonal(cov: jax.Array, batch_ndim: int) -> jax.Array:
    """Entries with equal pixel positions: ``(*batch, *spatial, *spatial) -> (*batch, *spatial)``."""
    n_sp = (cov.ndim - batch_ndim) // 2
    if n_sp == 0:
        return cov
    batch = cov.shape[:batch_ndim]
    spatial = cov.shape[batch_ndim : batch_ndim + n_sp]
    size = int(np.prod(spatial))
    flat = cov.reshape(batch + (size, size))
    return jnp.diagonal(flat, axis1=-2, axis2=-1).reshape(batch + spatial)


def outer_variances(var1: jax.Array, var2: jax.Array, batch_ndim: int):
    """Broadcast per-pixel variances against a covariance array with ``batch_ndim`` batch axes.

    For ``batch_ndim == 2`` (cross kernels) ``var1`` has shape ``(n1, *sp)`` and ``var2`` ``(n2, *sp)``;
    for ``batch_ndim == 1`` (self covariances) both are ``(n, *sp)``.
    """
    n_sp = var1.ndim - 1
    ones = (1,) * n_sp
    if batch_ndim == 2:
        q11 = var1.reshape((var1.shape[0], 1) + var1.shape[1:] + ones)
        q22 = var2.reshape((1, var2.shape[0]) + ones + var2.shape[1:])
    else:
        q11 = var1.reshape(var1.shape + ones)
        q22 = var2.reshape((var2.shape[0],) + ones + var2.shape[1:])
    return q11, q22


def diagonal_mask(shape: tuple, batch_ndim: int, same_batch: bool, batch: bool = True) -> jax.Array:
    """Boolean mask of the entries where both variables coincide (same input if ``same_batch``, same pixel).

    ``shape`` is the covariance shape; with ``batch_ndim == 1`` every input is compared with itself.
    ``batch=False`` compares pixels only.
    """
    ndim = len(shape)
    n_sp = (ndim - batch_ndim) // 2
    mask = None
    if batch_ndim == 2 and batch:
        if not same_batch:
            return jnp.zeros((1,) * ndim, dtype=bool)
        i = jax.lax.broadcasted_iota(jnp.int32, (shape[0], shape[1]) + (1,) * (2 * n_sp), 0)
        j = jax.lax.broadcasted_iota(jnp.int32, (shape[0], shape[1]) + (1,) * (2 * n_sp), 1)
        mask = i == j
    for d in range(n_sp):
        a, b = batch_ndim + d, batch_ndim + n_sp + d
        bshape = [1] * ndim
        bshape[a], bshape[b] = shape[a], shape[b]
        pa = jax.lax.broadcasted_iota(jnp.int32, tuple(bshape), a)
        pb = jax.lax.broadcasted_iota(jnp.int32, tuple(bshape), b)
        m = pa == pb
        mask = m if mask is None else mask & m
    if mask is None:
        return jnp.ones((1,) * ndim, dtype=bool)
    return mask


_NAMEDTUPLES: dict = {}


def select(k: Kernel, get):
    """Pick ``get`` (None → the Kernel itself, str → array, tuple → named tuple) from a Kernel."""
    if get is None:
        return k
    if isinstance(get, str):
        return _one(k, get)
    get = tuple(get)
    cls = _NAMEDTUPLES.get(get)
    if cls is None:
        import collections

        cls = _NAMEDTUPLES[get] = collections.namedtuple("Kernel", get)
    return cls(*(_one(k, g) for g in get))


def _one(k: Kernel, name: str):
    if name == "nngp":
        return k.nngp
    if name == "ntk":
        if not k.track_ntk:
            raise ValueError("the NTK was not computed; pass get=('nngp', 'ntk')")
        return k.ntk_or_zeros
    if name in ("cov1", "cov2"):
        v = getattr(k, name)
        return k.cov1 if v is None else v
    raise ValueError(f"unknown kernel entry {name!r}; expected 'nngp', 'ntk', 'cov1' or 'cov2'")


def normalize_get(get) -> tuple | str | None:
    """Validate ``get`` and return it as ``None``, a str or a tuple of str."""
    if get is None or isinstance(get, str):
        names = () if get is None else (get,)
    else:
        get = tuple(get)
        names = get
    for g in names:
        if g not in ("nngp", "ntk", "cov1", "cov2"):
            raise ValueError(f"unknown kernel entry {g!r}; expected 'nngp', 'ntk', 'cov1' or 'cov2'")
    return get


def needs_ntk(get) -> bool:
    if get is None:
        return True
    return "ntk" in ((get,) if isinstance(get, str) else tuple(get))
