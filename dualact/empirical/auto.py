"""``implementation="auto"``: pick the cheapest method with an explicit cost model.

neural-tangents' AUTO compares XLA's FLOP estimates, which its documentation says are wrong on CPU and GPU.
Here the cost of each method is counted from the model's jaxpr and the exact contraction shapes, in FLOPs plus
a memory-traffic term, with the notation of Novak et al. (2022): ``FP`` the per-example forward cost (counted
from the primitives: ``2·|y|·K`` for ``dot_general``/``conv`` with ``K`` contracted entries, ``|y|`` for the
rest), ``P`` parameters, ``O`` outputs per example, ``N1, N2`` examples, ``Y`` entries of the outputs of the
primitives that consume parameters (per example), ``K`` kernel entries and ``T`` the size of the traced axes.

* **jacobian** — FLOPs ``(N1+N2)·(FP + O·2·FP)`` (a forward pass per example, a reverse pass per output entry
  with input *and* weight gradients) ``+ 2·K·T·P`` (the contraction); words ``(N1+N2)·O·P`` (the Jacobians).
* **ntk_vector** — FLOPs ``N2·(FP + O·2·FP)`` (the VJPs) ``+ N2·O·N1·2·FP`` (a JVP of the ``x1`` batch per
  parameter-space vector); words ``N2·O·P + N1·N2·O²``.
* **structured** — FLOPs ``(N1+N2)·(FP + O·FP)`` (reverse passes for input gradients only) ``+`` the FLOPs of
  the structured einsums, counted exactly by tracing the interpreter (``jax.eval_shape``); words
  ``(N1+N2)·O·Y`` (the cotangents).

``cost = FLOPs + WORD_COST · words``: ``WORD_COST = 8`` FLOPs per word written, the ratio of a CPU core's
double-precision FLOP rate to its memory bandwidth in words (tens of GFLOP/s against a few Gword/s); it makes
memory-bound methods pay for their traffic. A method whose words exceed ``memory_limit_words`` (default 1.5e9:
12 GB of float64) is only chosen if all do. Terms shared by all methods (the kernel's own size) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax

from dualact.empirical._axes import (
    PerExample,
    full_shape,
    kernel_labels,
    normalize_vmap_axes,
    split_kwargs,
    split_params,
)
from dualact.empirical._jaxpr import flatten
from dualact.empirical.structured import _Analysis, structured_kernel

WORD_COST = 8.0
MEMORY_LIMIT_WORDS = 1.5e9


@dataclass(frozen=True)
class Cost:
    """Estimated cost of one implementation: FLOPs, words written, and the combined score."""

    flops: float
    words: float

    @property
    def score(self) -> float:
        return self.flops + WORD_COST * self.words


def _eqn_flops(eqn, prog) -> float:
    out = sum(math.prod(s) for s in eqn.out_shapes)
    if eqn.name == "dot_general":
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.inputs[0]
        shape = prog.shapes[lhs] if not hasattr(lhs, "value") else lhs.value.shape
        return 2.0 * out * math.prod(shape[d] for d in lc)
    if eqn.name == "conv_general_dilated":
        rhs = eqn.inputs[1]
        shape = prog.shapes[rhs] if not hasattr(rhs, "value") else rhs.value.shape
        spec = eqn.params["dimension_numbers"].rhs_spec
        return 2.0 * out * math.prod(shape[d] for d in spec[1:])
    return float(out)


def forward_flops(prog) -> float:
    """FLOPs of one evaluation of a flattened program (opaque control flow counted by its outputs only)."""
    return sum(_eqn_flops(e, prog) for e in prog.eqns)


def estimate_costs(
    apply_fn,
    x1,
    x2,
    params,
    kwargs=None,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
) -> dict[str, Cost]:
    """Cost of each implementation for these inputs (see the module docstring for the model).

    >>> import jax.numpy as jnp
    >>> f = lambda p, x: jnp.tanh(x @ p[0]) @ p[1]
    >>> p = [jnp.ones((16, 64)), jnp.ones((64, 4))]
    >>> costs = estimate_costs(f, jnp.ones((8, 16)), None, p, vmap_axes=0)
    >>> min(costs, key=lambda k: costs[k].score)
    'structured'
    """
    kwargs = kwargs or {}
    spec = normalize_vmap_axes(vmap_axes)
    pe = PerExample(apply_fn, spec)
    diff, rebuild = split_params(params)
    kw_arr, kw_static = split_kwargs(kwargs)

    def fn(p_leaves, x_ex, kw_ex):
        return pe.fn(rebuild(p_leaves), x_ex, {**kw_ex, **kw_static})

    xs1, kws1, kw_in = pe.batched(x1, kw_arr)
    xs2 = xs1 if x2 is None else pe.batched(x2, kw_arr)[0]
    n1 = jax.tree_util.tree_leaves(xs1)[0].shape[0]
    n2 = jax.tree_util.tree_leaves(xs2)[0].shape[0]
    x_ex = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs1)
    kw_ex = {
        k: jax.tree_util.tree_map(
            lambda a, ax=kw_in[k]: jax.ShapeDtypeStruct(a.shape[1:] if ax == 0 else a.shape, a.dtype), v
        )
        for k, v in kws1.items()
    }
    prog = flatten(fn, diff, x_ex, kw_ex)
    an = _Analysis(prog)
    fp = forward_flops(prog)
    n_params = float(sum(math.prod(w.shape) for w in diff))
    outs = jax.eval_shape(fn, diff, x_ex, kw_ex)
    out_leaves = jax.tree_util.tree_leaves(outs)
    o = float(sum(math.prod(s.shape) for s in out_leaves))
    y = float(sum(math.prod(prog.shapes[v]) for v in an.seeds))
    nn = n1 + (0 if x2 is None else n2)

    jc_contract = 0.0
    for k, leaf in enumerate(out_leaves):
        b = pe.out_axis(k, outs)
        lab = kernel_labels(
            full_shape(leaf.shape, n1, b), full_shape(leaf.shape, n2, b), b, trace_axes, diagonal_axes
        )
        jc_contract += 2.0 * math.prod(lab.shape) * lab.trace_size * n_params
    stats: dict = {}
    jax.eval_shape(
        lambda: structured_kernel(apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, spec, stats)
    )
    return {
        "jacobian": Cost(nn * (fp + o * 2 * fp) + jc_contract, nn * o * n_params),
        "ntk_vector": Cost(
            n2 * (fp + o * 2 * fp) + n2 * o * n1 * 2 * fp, n2 * o * n_params + n1 * n2 * o * o
        ),
        "structured": Cost(nn * (fp + o * fp) + stats.get("einsum_flops", 0), nn * o * y),
    }


def choose_implementation(
    apply_fn,
    x1,
    x2,
    params,
    kwargs=None,
    trace_axes=(-1,),
    diagonal_axes=(),
    vmap_axes=None,
    memory_limit_words: float = MEMORY_LIMIT_WORDS,
) -> str:
    """The implementation with the lowest :class:`Cost` score among those fitting ``memory_limit_words``."""
    costs = estimate_costs(apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, vmap_axes)
    fitting = {k: c for k, c in costs.items() if c.words <= memory_limit_words} or costs
    return min(fitting, key=lambda k: fitting[k].score)
