"""Segment-aligned zero padding for Hadamard sketches of concatenated inputs.

An SRHT pads its input to a power of two P and applies the P×P Walsh–Hadamard matrix H. Where the input is a
concatenation of segments — the |k| shifted copies of a convolution patch, the [φ, ψ] blocks of NTK features —
putting every segment at the start of a block of b = 2^j coordinates (b ≥ the longest segment; short segments
share a block) is an equally valid zero padding: the sketch's guarantees only need an injective placement of
the coordinates. That padding makes the transform factorise. With P = B·b and Sylvester's ordering
H_P = H_B ⊗ H_b,

    (H x̃)[a·b + c] = Σ_β H_B[a, β] · (H_b x̃_β)[c],        H_B[a, β] = (−1)^popcount(a AND β),

so the rows an SRHT keeps cost one length-b transform per occupied block and one signed sum over the occupied
blocks per kept row, instead of a length-P transform. For the NTK features of a 3×3 convolution over
4095 + 4096 channels (18 segments, P = 131,072) that is 3 radix-16 passes over 73,728 numbers instead of 5
passes over 131,072.

>>> layout = block_layout((4095, 4095, 4095))
>>> layout.block, layout.num_blocks, layout.used, layout.padded_dim
(4096, 4, 3, 16384)
>>> block_layout((7,)) is None   # one segment: plain padding
True
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

__all__ = ["BlockLayout", "block_layout", "next_power_of_two", "to_blocks"]


def next_power_of_two(d: int) -> int:
    """The smallest power of two ≥ d (d ≥ 1); re-exported by :mod:`dualact.sketch.srht`."""
    return 1 << max(int(d) - 1, 0).bit_length()


@dataclasses.dataclass(frozen=True)
class BlockLayout:
    """Where each input segment goes: ``placements[i] = (start in x, length, block, offset in block)``.

    ``block`` = b, ``num_blocks`` = B (a power of two), ``used`` = occupied blocks (≤ B); hashable, so it can be
    a static field of a sketch's pytree.
    """

    block: int
    num_blocks: int
    used: int
    placements: tuple[tuple[int, int, int, int], ...]

    @property
    def padded_dim(self) -> int:
        return self.block * self.num_blocks

    @property
    def input_dim(self) -> int:
        return sum(p[1] for p in self.placements)


def block_layout(segments) -> BlockLayout | None:
    """The block layout for inputs made of segments of these lengths (in order), or ``None`` where plain padding
    to the next power of two is as good (a single segment, a single occupied block, or no smaller padded size).

    Segments are packed first-fit decreasing into blocks of b = next power of two of the longest segment.
    """
    segs = [int(s) for s in segments]
    if len(segs) < 2 or min(segs) < 1:
        return None
    b = next_power_of_two(max(segs))
    fill: list[int] = []
    where = [(0, 0)] * len(segs)
    for i in sorted(range(len(segs)), key=lambda i: (-segs[i], i)):
        for j, f in enumerate(fill):
            if f + segs[i] <= b:
                where[i] = (j, f)
                fill[j] += segs[i]
                break
        else:
            where[i] = (len(fill), 0)
            fill.append(segs[i])
    used = len(fill)
    num_blocks = next_power_of_two(used)
    if used < 2 or num_blocks * b > next_power_of_two(sum(segs)):
        return None
    starts = [sum(segs[:i]) for i in range(len(segs))]
    placements = tuple((starts[i], segs[i], where[i][0], where[i][1]) for i in range(len(segs)))
    return BlockLayout(block=b, num_blocks=num_blocks, used=used, placements=placements)


def to_blocks(layout: BlockLayout, x):
    """Lay ``x`` of shape (..., input_dim) out as (..., used, block), zero-filled."""
    lead = x.shape[:-1]
    parts: list[list] = [[] for _ in range(layout.used)]
    for start, length, blk, _ in sorted(layout.placements, key=lambda p: (p[2], p[3])):
        parts[blk].append(x[..., start : start + length])
    rows = []
    for blk in parts:
        filled = sum(p.shape[-1] for p in blk)
        if filled < layout.block:
            blk.append(jnp.zeros(lead + (layout.block - filled,), x.dtype))
        rows.append(jnp.concatenate(blk, axis=-1) if len(blk) > 1 else blk[0])
    return jnp.stack(rows, axis=-2)
