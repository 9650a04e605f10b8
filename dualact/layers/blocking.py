"""Blocked, memory-bounded and sharded evaluation of ``kernel_fn``.

``kernel_fn(x1, x2, get)`` is computed directly when its working set fits ``memory_budget`` (and, for
images, when it is small); otherwise in pieces:

1. a *self pass* over the inputs records, for each variance-consuming layer (activations, LayerNorm), the
   per-pixel variances of every input (a :class:`~dualact.layers.kernel.VarianceTape`);
2. the kernel is then assembled from *cross-only* evaluations that replay those variances, so no piece
   recomputes per-input covariances:

   * fully connected kernels: square ``T × T`` tiles, rows split over devices;
   * image kernels: lists of input pairs, split over devices, each device looping over its pairs
     ``group`` at a time with :func:`jax.lax.map` — the working set is that of a few pairs' spatial
     covariances ``(H·W)²``, never ``n² (H·W)²``;
3. with ``x2=None`` only pairs/tiles on and above the diagonal are computed; the rest are transposes.

Sharding uses public APIs only: a one-axis :class:`jax.sharding.Mesh` (``"rows"``), :func:`jax.shard_map`,
:class:`jax.sharding.NamedSharding` and :func:`jax.make_array_from_callback`; row-sharded results are
copied to the host (gathered with ``jax.experimental.multihost_utils.process_allgather`` when there are
several processes), so the same code runs on one CPU, several GPUs or a multi-host cluster (every host
passes the same inputs).
Results are assembled in host memory as NumPy arrays.
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from dualact.layers.planning import (
    DEFAULT_MEMORY_BUDGET,
    BlockPlan,
    CostEstimate,
    estimate_cost,
    pair_kernel,
    piece_names,
    plan,
    resolve_devices,
    self_pass,
)

__all__ = ["DEFAULT_MEMORY_BUDGET", "BlockPlan", "CostEstimate", "compute_kernel", "estimate_cost", "plan"]

ROWS = "rows"


def _is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def compute_kernel(
    layer,
    x1,
    x2=None,
    get=None,
    *,
    block_size: int | None = None,
    progress: bool = False,
    devices=None,
    memory_budget: int | None = None,
):
    """Evaluate ``layer.kernel_fn(x1, x2, get)``, in memory-bounded pieces when needed.

    Args:
      block_size: fully connected: tile side (inputs per tile row/column); images: √(pairs per piece).
        ``None``: direct evaluation if it fits ``memory_budget``, else the largest pieces that fit.
      progress: show a progress bar (tqdm) and print the cost estimate first.
      devices: ``None``/``"all"`` (all JAX devices), a list of devices or a ``jax.sharding.Mesh``; pieces
        are split over them. With more than one device the piecewise path is always used.
      memory_budget: bytes allowed for one direct evaluation or one piece (default 1 GiB).

    Returns the same as ``kernel_fn``; piecewise results are NumPy arrays in host memory, and ``get=None``
    returns the named tuple ``(nngp, ntk)`` there instead of a :class:`Kernel`.
    """
    if _is_traced(x1, x2):  # inside jax.grad / jit of the user: plain traced computation
        return layer._direct_kernel(x1, x2, get)
    if isinstance(x1, (list, tuple)):
        return layer._direct(x1, x2, get)
    devs = resolve_devices(devices)
    if not isinstance(x1, (np.ndarray, jax.Array)):
        x1 = np.asarray(x1)
    dtype = x1.dtype if jnp.issubdtype(x1.dtype, jnp.floating) else jnp.result_type(float)
    p = plan(
        x1.shape,
        None if x2 is None else np.shape(x2),
        jnp.dtype(dtype).itemsize,
        memory_budget,
        block_size,
        len(devs),
        devs[0].platform,
    )
    if p.direct:
        return layer._direct(x1, x2, get)
    return _piecewise(layer, x1, x2, get, p, devs, progress)


# ---- building blocks -----------------------------------------------------------------------------------


def _cached(layer, key, build):
    cache = layer.__dict__.setdefault("_piece_fns", {})
    f = cache.get(key)
    if f is None:
        f = cache[key] = build()
    return f


def _mesh_key(mesh):
    return tuple(str(d) for d in mesh.devices.flat)


def _self_fn(layer, group, mesh):
    """Jitted self pass over a chunk of inputs split across devices (looping ``group`` inputs at a time)."""

    def build():
        def local(x):
            if not group:
                return self_pass(layer, x)
            return tuple(
                jax.lax.map(lambda xi: tuple(v[0] for v in self_pass(layer, xi[None])), x, batch_size=group)
            )

        mapped = jax.shard_map(
            local, mesh=mesh, in_specs=(PartitionSpec(ROWS),), out_specs=PartitionSpec(ROWS), check_vma=False
        )
        return jax.jit(mapped)

    return _cached(layer, ("self", group, _mesh_key(mesh)), build)


def _tile_fn(layer, names, mesh, n_tape):
    """Jitted dense tile ``(a, b, va, vb) -> outputs`` with the rows of ``a`` split over devices (coincident
    variables of diagonal tiles are found by the identical-rows mask every cross kernel carries)."""

    def build():
        rows, rep = PartitionSpec(ROWS), PartitionSpec()

        def local(a, b, va, vb):
            return pair_kernel(layer, names, a, b, va, vb)

        in_specs = (rows, rep, (rows,) * n_tape, (rep,) * n_tape)
        mapped = jax.shard_map(
            local, mesh=mesh, in_specs=in_specs, out_specs=tuple(rows for _ in names), check_vma=False
        )
        return jax.jit(mapped)

    return _cached(layer, ("tile", names, n_tape, _mesh_key(mesh)), build)


def _pairs_fn(layer, names, group, mesh, n_tape):
    """Jitted ``(x1, x2, v1, v2, i, j) -> outputs[pair]``: pair lists ``i, j`` split over devices, inputs
    replicated, each device looping over its pairs ``group`` at a time (a pair of identical inputs, such as
    ``(i, i)`` when x2 is x1, has coincident variables on its pixel diagonal: the identical-rows mask)."""

    def build():
        rows, rep = PartitionSpec(ROWS), PartitionSpec()

        def local(x1, x2, v1, v2, ii, jj):
            def one(ij):
                i, j = ij
                a = jax.lax.dynamic_slice_in_dim(x1, i, 1)
                b = jax.lax.dynamic_slice_in_dim(x2, j, 1)
                va = tuple(jax.lax.dynamic_slice_in_dim(v, i, 1) for v in v1)
                vb = tuple(jax.lax.dynamic_slice_in_dim(v, j, 1) for v in v2)
                out = pair_kernel(layer, names, a, b, va, vb)
                return tuple(o[0, 0] for o in out)

            return tuple(jax.lax.map(one, (ii, jj), batch_size=group))

        in_specs = (rep, rep, (rep,) * n_tape, (rep,) * n_tape, rows, rows)
        mapped = jax.shard_map(
            local, mesh=mesh, in_specs=in_specs, out_specs=tuple(rows for _ in names), check_vma=False
        )
        return jax.jit(mapped)

    return _cached(layer, ("pairs", names, group, n_tape, _mesh_key(mesh)), build)


def _fetch(x) -> np.ndarray:
    """A row-sharded result as one host array (gathered across processes on a multi-host cluster)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _place(x: np.ndarray, sharding):
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    if x.shape[0] == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - x.shape[0], axis=0)], axis=0)


def _swap(v, n_batch):
    """Transpose a kernel block: swap the two batch groups and the two spatial groups."""
    n_sp = (v.ndim - n_batch) // 2
    head = (1, 0) if n_batch == 2 else (0,)
    perm = head + tuple(range(n_batch + n_sp, n_batch + 2 * n_sp)) + tuple(range(n_batch, n_batch + n_sp))
    return v.transpose(perm)


# ---- piecewise evaluation ------------------------------------------------------------------------------


def _piecewise(layer, x1, x2, get, p: BlockPlan, devs, progress):
    from tqdm.auto import tqdm

    names = piece_names(get)
    same = x2 is None
    x1 = np.asarray(x1)
    if not np.issubdtype(x1.dtype, np.floating):
        x1 = x1.astype(jnp.result_type(float))
    x2n = x1 if same else np.asarray(x2, dtype=x1.dtype)
    mesh = Mesh(np.array(devs), (ROWS,))
    rsh, rep = NamedSharding(mesh, PartitionSpec(ROWS)), NamedSharding(mesh, PartitionSpec())

    if progress:
        print(estimate_cost(layer, x1.shape, None if same else x2n.shape, x1.dtype, names, plan_=p).summary())

    self_fn = _self_fn(layer, p.group if p.mode == "pairs" else 0, mesh)

    def variances(x):
        parts = []
        for s in range(0, x.shape[0], p.chunk):
            out = self_fn(_place(_pad_rows(x[s : s + p.chunk], p.chunk), rsh))
            parts.append([_fetch(v)[: min(p.chunk, x.shape[0] - s)] for v in out])
        return [np.concatenate([q[i] for q in parts]) for i in range(len(parts[0]))]

    v1 = variances(x1)
    v2 = v1 if same else variances(x2n)
    n1, n2 = x1.shape[0], x2n.shape[0]
    tail = _out_tail(layer, names, x1, v1)
    outs = {g: np.empty((n1, n2) + tail, dtype=x1.dtype) for g in names}
    bar = tqdm(total=p.n_pieces, disable=not progress, desc="kernel pieces")
    if p.mode == "tiles":
        _run_tiles(layer, names, x1, x2n, v1, v2, same, p, mesh, rsh, rep, outs, bar)
    else:
        _run_pairs(layer, names, x1, x2n, v1, v2, same, p, mesh, rsh, rep, outs, bar)
    bar.close()
    if isinstance(get, str):
        return outs[get]
    return collections.namedtuple("Kernel", names)(*(outs[g] for g in names))


def _run_tiles(layer, names, x1, x2, v1, v2, same, p, mesh, rsh, rep, outs, bar):
    T = p.tile
    tile = _tile_fn(layer, names, mesh, len(v1))

    def block(x, vs, i, sharding):
        sl = slice(i * T, min((i + 1) * T, x.shape[0]))
        return (
            sl,
            _place(_pad_rows(x[sl], T), sharding),
            tuple(_place(_pad_rows(v[sl], T), sharding) for v in vs),
        )

    def store(sl_i, sl_j, res, i, j):
        ni, nj = sl_i.stop - sl_i.start, sl_j.stop - sl_j.start
        for g, v in zip(names, res, strict=True):
            v = _fetch(v)[:ni, :nj]
            outs[g][sl_i, sl_j] = v
            if same and i != j:
                outs[g][sl_j, sl_i] = _swap(v, 2)
        bar.update(1)

    r, c = -(-x1.shape[0] // T), -(-x2.shape[0] // T)
    pending = None  # copy tile t-1 to the host while tile t runs
    for i in range(r):
        for j in range(i if same else 0, c):
            sl_i, a, va = block(x1, v1, i, rsh)
            sl_j, b, vb = block(x2, v2, j, rep)
            res = tile(a, b, va, vb)
            if pending is not None:
                store(*pending)
            pending = (sl_i, sl_j, res, i, j)
    if pending is not None:
        store(*pending)


def _run_pairs(layer, names, x1, x2, v1, v2, same, p, mesh, rsh, rep, outs, bar):
    n1, n2 = x1.shape[0], x2.shape[0]
    if same:
        ii, jj = np.triu_indices(n1)
    else:
        ii, jj = (a.ravel() for a in np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij"))
    fn = _pairs_fn(layer, names, p.group, mesh, len(v1))
    x1d = _place(x1, rep)
    x2d = x1d if same else _place(x2, rep)
    v1d = tuple(_place(v, rep) for v in v1)
    v2d = v1d if same else tuple(_place(v, rep) for v in v2)

    def store(lo, hi, res):
        a, b = ii[lo:hi], jj[lo:hi]
        for g, v in zip(names, res, strict=True):
            v = _fetch(v)[: hi - lo]
            outs[g][a, b] = v
            if same:
                off = a != b
                outs[g][b[off], a[off]] = _swap(v[off], 1)
        bar.update(1)

    pending = None
    for lo in range(0, len(ii), p.tile):
        hi = min(lo + p.tile, len(ii))
        ci = _place(_pad_rows(ii[lo:hi].astype(np.int32), p.tile), rsh)
        cj = _place(_pad_rows(jj[lo:hi].astype(np.int32), p.tile), rsh)
        res = fn(x1d, x2d, v1d, v2d, ci, cj)
        if pending is not None:
            store(*pending)
        pending = (lo, hi, res)
    if pending is not None:
        store(*pending)


def _out_tail(layer, names, x1, v1):
    """Trailing (spatial) shape of the output kernel, from an abstract 1×1 evaluation (cached per layer and
    input shape: tracing the whole network costs about as much as a small kernel)."""
    a = jax.ShapeDtypeStruct((1,) + x1.shape[1:], x1.dtype)
    vs = tuple(jax.ShapeDtypeStruct((1,) + v.shape[1:], v.dtype) for v in v1)

    def build():
        out = jax.eval_shape(lambda a, b, va, vb: pair_kernel(layer, names, a, b, va, vb), a, a, vs, vs)
        return tuple(out[0].shape[2:])

    key = ("tail", names, a.shape, str(a.dtype), tuple((v.shape, str(v.dtype)) for v in vs))
    return _cached(layer, key, build)
