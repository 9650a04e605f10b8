"""Planning of a kernel evaluation: direct or piecewise, piece sizes, and an up-front cost estimate.

Also holds the two primitives every piece is built from: the *self pass* (per-input variances recorded on a
:class:`~dualact.layers.kernel.VarianceTape`) and the *cross-only* pair kernel that replays them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from dualact.layers.kernel import Kernel, VarianceTape, needs_ntk, select

#: default working-set budget of one direct evaluation or one piece, in bytes
DEFAULT_MEMORY_BUDGET = 1 << 30
#: arrays of the size of the kernel alive at once (nngp, ntk, activation factors, conv temporaries)
_LIVE_ARRAYS = 8
#: per-array size of one step of the pair loop on a CPU (large fresh buffers are slow to page in on some VMs);
#: accelerators take as many pairs per step as the memory budget allows, to fill the device
_GROUP_BYTES = 8 << 20
#: largest image kernel (entries) evaluated directly
_DIRECT_IMAGE_ENTRIES = 1 << 22
#: input pairs per piece of an image kernel (progress granularity)
_PAIRS_PER_PIECE = 256


@dataclass(frozen=True)
class BlockPlan:
    """How ``kernel_fn`` will be evaluated (see :func:`plan`)."""

    direct: bool
    mode: str  # "direct", "tiles" (fully connected) or "pairs" (images)
    tile: int  # tiles: side T; pairs: pairs per piece
    group: int  # pairs per step of the pair loop (pairs mode)
    chunk: int  # inputs per call of the self pass
    n_devices: int
    bytes_per_pair: int
    n_pieces: int


def resolve_devices(devices):
    if devices is None or devices == "all":
        return list(jax.devices())
    if isinstance(devices, Mesh):
        return list(devices.devices.flat)
    return list(devices)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def plan(
    x1_shape,
    x2_shape=None,
    itemsize: int = 8,
    memory_budget: int | None = None,
    block_size: int | None = None,
    n_devices: int = 1,
    platform: str = "cpu",
) -> BlockPlan:
    """Choose direct or piecewise evaluation and the piece sizes for a memory budget (bytes).

    ``platform`` is the devices' JAX platform (``"cpu"``, ``"gpu"``, ``"tpu"``): on a CPU one step of the pair
    loop is kept to a few MiB per array; on an accelerator it grows to what ``memory_budget`` allows.
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    n1 = x1_shape[0]
    n2 = n1 if x2_shape is None else x2_shape[0]
    pixels = math.prod(x1_shape[1:-1])
    entry = pixels * pixels * itemsize
    per_pair = entry * _LIVE_ARRAYS
    fits = per_pair * (n1 * n2 + n1 + n2) <= budget
    small = pixels == 1 or n1 * n2 * pixels * pixels <= _DIRECT_IMAGE_ENTRIES
    if fits and small and block_size is None and n_devices == 1:
        return BlockPlan(True, "direct", max(n1, n2), 0, max(n1, n2), 1, per_pair, 1)
    n_pairs = n1 * (n1 + 1) // 2 if x2_shape is None else n1 * n2
    if pixels == 1:
        if block_size is None:
            tile = max(1, math.isqrt(max(budget // per_pair, 1)))
        else:
            tile = int(block_size)
        tile = min(_round_up(max(tile, 1), n_devices), _round_up(max(n1, n2), n_devices))
        r, c = -(-n1 // tile), -(-n2 // tile)
        n_tiles = r * (r + 1) // 2 if x2_shape is None else r * c
        chunk = min(_round_up(max(n1, n2), n_devices), _round_up(4 * tile, n_devices))
        return BlockPlan(False, "tiles", tile, 0, chunk, n_devices, per_pair, n_tiles)
    group = max(1, budget // per_pair)
    if platform == "cpu":
        group = max(1, min(_GROUP_BYTES // entry, group))
    piece = _PAIRS_PER_PIECE if block_size is None else int(block_size) ** 2
    piece = _round_up(max(piece, group * n_devices), group * n_devices)
    piece = min(piece, _round_up(n_pairs, group * n_devices))
    chunk = min(
        _round_up(max(n1, n2), group * n_devices), _round_up(4 * group * n_devices, group * n_devices)
    )
    return BlockPlan(False, "pairs", piece, group, chunk, n_devices, per_pair, -(-n_pairs // piece))


# ---- primitives ---------------------------------------------------------------------------------------


def pair_kernel(layer, names, a, b, va, vb):
    """Cross-only kernel of x1 rows ``a`` against x2 rows ``b`` with replayed variances (equal rows of a and b
    are coincident variables: "cross" inputs carry their identical-rows mask)."""
    with VarianceTape("replay", va, vb):
        k = Kernel.from_inputs(a, b, track_ntk=needs_ntk(names), mode="cross")
        k = layer._kernel(k)
    return tuple(select(k, g) for g in names)


def self_pass(layer, x):
    """Per-pixel variances of each input at every variance-consuming layer (a tuple of arrays)."""
    with VarianceTape("record") as tape:
        layer._kernel(Kernel.from_inputs(x, None, track_ntk=False, mode="self"))
    return tuple(tape.records)


def piece_names(get):
    if get is None:
        return ("nngp", "ntk")
    names = (get,) if isinstance(get, str) else tuple(get)
    for g in names:
        if g not in ("nngp", "ntk"):
            raise ValueError(f"the piecewise kernel_fn computes 'nngp' and 'ntk' only; got {g!r}")
    return names


# ---- cost estimate -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostEstimate:
    """Up-front cost of a kernel evaluation: XLA's analysis of one pair and one self pass, scaled."""

    pairs: int
    inputs: int
    flops: float
    transcendentals: float
    bytes_accessed: float
    peak_bytes: int
    plan: BlockPlan

    def summary(self) -> str:
        p = self.plan
        if p.mode == "direct":
            mode = "direct"
        elif p.mode == "tiles":
            mode = f"{p.n_pieces} tiles of {p.tile}x{p.tile} on {p.n_devices} device(s)"
        else:
            mode = (
                f"{p.n_pieces} pieces of {p.tile} pairs, {p.group} pair(s) per step "
                f"on {p.n_devices} device(s)"
            )
        return (
            f"kernel cost estimate: {self.pairs:,} input pairs, {self.flops / 1e9:.2f} GFLOP, "
            f"{self.transcendentals / 1e9:.2f} G transcendentals, {self.bytes_accessed / 1e9:.1f} GB "
            f"memory traffic, working set ≈ {self.peak_bytes / 2**20:.0f} MiB; {mode}"
        )


def estimate_cost(
    layer,
    x1_shape,
    x2_shape=None,
    dtype=None,
    get=("nngp", "ntk"),
    memory_budget=None,
    block_size=None,
    devices=None,
    plan_: BlockPlan | None = None,
) -> CostEstimate:
    """Estimate the cost of ``kernel_fn`` on inputs of these shapes, before running it (nothing compiled).

    >>> from dualact import layers as L
    >>> net = L.serial(L.Conv(8, (3, 3), padding="SAME"), L.Dense(1))
    >>> est = L.estimate_cost(net, (20, 32, 32, 3))
    >>> est.pairs, est.flops > 0
    (210, True)
    """
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    names = piece_names(get)
    x1_shape = tuple(x1_shape)
    n1 = x1_shape[0]
    n2 = n1 if x2_shape is None else x2_shape[0]
    if plan_ is None:
        devs = resolve_devices(devices)
        plan_ = plan(
            x1_shape, x2_shape, dtype.itemsize, memory_budget, block_size, len(devs), devs[0].platform
        )
    one = jax.ShapeDtypeStruct((1,) + x1_shape[1:], dtype)
    tape = jax.eval_shape(lambda x: self_pass(layer, x), one)
    cross = jax.jit(lambda a, b, va, vb: pair_kernel(layer, names, a, b, va, vb)).lower(
        one, one, tape, tape
    )
    selfc = jax.jit(lambda x: self_pass(layer, x)).lower(one)
    cc, sc = _costs(cross), _costs(selfc)
    pairs = n1 * (n1 + 1) // 2 if x2_shape is None else n1 * n2
    inputs = n1 if x2_shape is None else n1 + n2
    if plan_.mode == "direct":
        work = n1 * n2
    elif plan_.mode == "tiles":
        work = plan_.tile**2 // plan_.n_devices
    else:
        work = plan_.group
    return CostEstimate(
        pairs=pairs,
        inputs=inputs,
        flops=pairs * cc["flops"] + inputs * sc["flops"],
        transcendentals=pairs * cc["transcendentals"] + inputs * sc["transcendentals"],
        bytes_accessed=pairs * cc["bytes accessed"] + inputs * sc["bytes accessed"],
        peak_bytes=plan_.bytes_per_pair * work,
        plan=plan_,
    )


def _costs(lowered) -> dict:
    c = lowered.cost_analysis() or {}
    if isinstance(c, (list, tuple)):
        c = c[0] if c else {}
    return {k: float(c.get(k, 0.0)) for k in ("flops", "transcendentals", "bytes accessed")}
