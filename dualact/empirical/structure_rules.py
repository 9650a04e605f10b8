"""Per-primitive structure rules for structured derivatives.

A rule maps a :class:`~dualact.empirical.factor.Factor` on the output of ``y = p(x_0, ..., x_k, ...)`` (the
Jacobian ``J_y`` kept as an einsum) to a factor on ``x_k``, i.e. it applies the transpose of ``dy/dx_k``
without materializing it. The interpreter (:mod:`dualact.empirical.structured`) starts from the cotangent
``c = df/dy`` at a primitive that consumes parameters and walks backwards to the parameter leaves.

This is the einsum form of the structures of Novak et al. (2022):

* **constant block-diagonal** (trace) axes are labels shared by ``y`` and ``x_k`` with no extra operand
  (``dot_general``'s free axes, ``add``, ``transpose``, ``convert_element_type``...);
* **block-diagonal** axes are labels shared with an extra operand (elementwise ``mul``/``div``/nonlinearities:
  the operand is the elementwise derivative);
* **broadcast / tiled** axes are labels of ``y`` that ``x_k`` lacks, summed by the einsum
  (``broadcast_in_dim``, the batch and spatial axes of ``dot_general``/``conv``), or ``ones`` operands
  (``reduce_sum``).

The kernel contribution of two factors on the same parameter is one einsum over all their operands, whose
contraction order ``opt_einsum`` chooses; for a dense layer that order is the paper's ``(h1·h2)(c1·c2)``.
Primitives without a rule use :func:`dense_rule` (materialize, then an exact vjp), so nothing fails.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dualact.empirical.factor import (
    Factor,
    RuleContext,
    Val,
    _record,
    _vmap_examples,
    dense_rule,
)

# --------------------------------------------------------------------------------------------- elementwise
_CONSTANT_DERIVATIVE = {
    "add": (1.0, 1.0),
    "add_any": (1.0, 1.0),
    "sub": (1.0, -1.0),
    "neg": (-1.0,),
    "convert_element_type": (1.0,),
    "copy": (1.0,),
    "copy_p": (1.0,),
    "reduce_precision": (1.0,),
}
ELEMENTWISE = frozenset(
    {
        *_CONSTANT_DERIVATIVE,
        "mul",
        "div",
        "max",
        "min",
        "pow",
        "integer_pow",
        "exp",
        "exp2",
        "log",
        "log1p",
        "expm1",
        "tanh",
        "logistic",
        "sin",
        "cos",
        "tan",
        "asin",
        "acos",
        "atan",
        "sinh",
        "cosh",
        "asinh",
        "acosh",
        "atanh",
        "sqrt",
        "rsqrt",
        "cbrt",
        "abs",
        "sign",
        "floor",
        "ceil",
        "round",
        "erf",
        "erfc",
        "erf_inv",
        "lgamma",
        "digamma",
        "atan2",
        "rem",
        "square",
        "select_n",
        "clamp",
        "nextafter",
        "real",
        "imag",
        "conj",
    }
)


def _implicit_broadcast(factor, ctx, x_shape, y_shape):
    """Labels of an elementwise operand that broadcasts against ``y`` (scalar, or size-one axes); else None.

    ``y``'s labels on broadcast axes are left out, so the einsum sums over them (tiled structure).
    """
    if x_shape == y_shape:
        return factor.operands, factor.labels
    if x_shape == ():
        return factor.operands, ()
    if len(x_shape) != len(y_shape) or any(a not in (1, b) for a, b in zip(x_shape, y_shape, strict=True)):
        return None
    ops, labels = list(factor.operands), []
    for a, (xs, ys) in enumerate(zip(x_shape, y_shape, strict=True)):
        if xs == ys:
            labels.append(factor.labels[a])
        else:
            op, label = ctx.ones(1, jnp.result_type(factor.operands[0][0]))
            ops.append(op)
            labels.append(label)
    return tuple(ops), tuple(labels)


def elementwise_rule(factor, eqn, k, j, vals, ctx):
    """Block-diagonal structure: ``J_x = J_y * dy/dx`` elementwise (broadcast operands sum over ``y``)."""
    y_shape = tuple(eqn.out_shapes[0])
    x_shape = vals[k].ex_shape()
    mapped = _implicit_broadcast(factor, ctx, x_shape, y_shape)
    if mapped is None:
        return dense_rule(factor, eqn, k, j, vals, ctx)
    operands, labels_out = mapped
    const = _CONSTANT_DERIVATIVE.get(eqn.name)
    if const is not None:
        return Factor(operands, labels_out, factor.scale * const[min(k, len(const) - 1)])

    def derivative(arrays):
        def fk(xk):
            args = list(arrays)
            args[k] = xk
            return ctx.evaluate(eqn, args)[0]

        xk = arrays[k]
        return jax.jvp(fk, (xk,), (jnp.ones_like(xk),))[1]

    if any(v.batched for v in vals):
        deriv = Val(_vmap_examples(derivative, vals), True)
    else:
        deriv = Val(derivative([v.array for v in vals]), False)
    arr, lab = ctx.operand(deriv, factor.labels)
    return Factor((*operands, (arr, lab)), labels_out, factor.scale)


# --------------------------------------------------------------------------------------------- linear maps
def dot_general_rule(factor, eqn, k, j, vals, ctx):
    """``y = dot_general(lhs, rhs)``: add the other operand; its free axes are summed (``W²`` -> ``W``)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    nd = [len(vals[0].ex_shape()), len(vals[1].ex_shape())]
    contract, batch = [lc, rc], [lb, rb]
    y_lab = factor.labels
    nb = len(lb)
    free = [[d for d in range(nd[s]) if d not in contract[s] and d not in batch[s]] for s in (0, 1)]
    c_labels = [ctx.fresh() for _ in lc]
    labs = []
    for s in (0, 1):
        lab = [None] * nd[s]
        for t, d in enumerate(batch[s]):
            lab[d] = y_lab[t]
        for t, d in enumerate(contract[s]):
            lab[d] = c_labels[t]
        offset = nb if s == 0 else nb + len(free[0])
        for t, d in enumerate(free[s]):
            lab[d] = y_lab[offset + t]
        labs.append(lab)
    other = 1 - k
    arr, lab = ctx.operand(vals[other], labs[other])
    return factor.with_operand(arr, lab, labs[k])


def conv_rule(factor, eqn, k, j, vals, ctx):
    """``y = conv(lhs, rhs)`` w.r.t. the kernel: add the input patches (channels × filter taps) as operand."""
    p = eqn.params
    if k != 1 or p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        return dense_rule(factor, eqn, k, j, vals, ctx)
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    rhs_shape = vals[1].ex_shape()
    filt = tuple(rhs_shape[d] for d in rhs_spec[2:])

    def patches(lhs):
        lhs = jnp.transpose(lhs, lhs_spec)  # (N, C, *spatial)
        pt = lax.conv_general_dilated_patches(
            lhs,
            filt,
            p["window_strides"],
            p["padding"],
            p["lhs_dilation"],
            p["rhs_dilation"],
            precision=lax.Precision.HIGHEST,
        )
        return pt.reshape((pt.shape[0], lhs.shape[1], *filt, *pt.shape[2:]))

    lhs = vals[0]
    pt = Val(jax.vmap(patches)(lhs.array) if lhs.batched else patches(lhs.array), lhs.batched)
    y = factor.labels
    c_label = ctx.fresh()
    f_labels = [ctx.fresh() for _ in filt]
    arr, lab = ctx.operand(pt, (y[out_spec[0]], c_label, *f_labels, *[y[d] for d in out_spec[2:]]))
    rhs_labels = [None] * len(rhs_shape)
    rhs_labels[rhs_spec[0]] = y[out_spec[1]]
    rhs_labels[rhs_spec[1]] = c_label
    for t, d in enumerate(rhs_spec[2:]):
        rhs_labels[d] = f_labels[t]
    return factor.with_operand(arr, lab, rhs_labels)


def broadcast_in_dim_rule(factor, eqn, k, j, vals, ctx):
    """Broadcast (tiled) structure: new axes of ``y`` are summed; size-one axes of ``x`` get ``ones``."""
    if k != 0:
        return dense_rule(factor, eqn, k, j, vals, ctx)
    x_shape = vals[0].ex_shape()
    y_shape = tuple(eqn.out_shapes[0])
    f = factor
    labels = []
    for a, d in enumerate(eqn.params["broadcast_dimensions"]):
        if x_shape[a] == y_shape[d]:
            labels.append(f.labels[d])
        else:
            op, label = ctx.ones(1, jnp.result_type(f.operands[0][0]))
            f = Factor((*f.operands, op), f.labels, f.scale)
            labels.append(label)
    return Factor(f.operands, tuple(labels), f.scale)


def transpose_rule(factor, eqn, k, j, vals, ctx):
    perm = eqn.params["permutation"]
    labels = [None] * len(perm)
    for t, a in enumerate(perm):
        labels[a] = factor.labels[t]
    return Factor(factor.operands, tuple(labels), factor.scale)


def _ones_labels(factor, ctx, sizes):
    ops, labels = list(factor.operands), []
    dtype = jnp.result_type(factor.operands[0][0])
    for s in sizes:
        op, label = ctx.ones(s, dtype)
        ops.append(op)
        labels.append(label)
    return ops, labels


def _align_unit_axes(factor, ctx, x_shape, y_shape, y_kept):
    """Labels for ``x`` equal to ``y`` up to size-one axes; ``y_kept``: y axes matching x's other axes."""
    ops = list(factor.operands)
    labels = []
    it = iter(y_kept)
    dtype = jnp.result_type(factor.operands[0][0])
    for s in x_shape:
        if s == 1:
            op, label = ctx.ones(1, dtype)
            ops.append(op)
            labels.append(label)
        else:
            labels.append(factor.labels[next(it)])
    return Factor(tuple(ops), tuple(labels), factor.scale)


def reshape_rule(factor, eqn, k, j, vals, ctx):
    """Reshapes that only add or drop size-one axes relabel; other reshapes use the dense rule."""
    x_shape = vals[0].ex_shape()
    y_shape = tuple(eqn.out_shapes[0])
    if k != 0 or [s for s in x_shape if s != 1] != [s for s in y_shape if s != 1]:
        return dense_rule(factor, eqn, k, j, vals, ctx)
    return _align_unit_axes(factor, ctx, x_shape, y_shape, [d for d, s in enumerate(y_shape) if s != 1])


def squeeze_rule(factor, eqn, k, j, vals, ctx):
    x_shape = vals[0].ex_shape()
    dims = {d % len(x_shape) for d in eqn.params["dimensions"]}
    ops = list(factor.operands)
    labels, it = [], iter(factor.labels)
    dtype = jnp.result_type(factor.operands[0][0])
    for a in range(len(x_shape)):
        if a in dims:
            op, label = ctx.ones(1, dtype)
            ops.append(op)
            labels.append(label)
        else:
            labels.append(next(it))
    return Factor(tuple(ops), tuple(labels), factor.scale)


def reduce_sum_rule(factor, eqn, k, j, vals, ctx):
    """``y = sum(x, axes)``: the reduced axes are broadcast back by ``ones`` operands."""
    x_shape = vals[0].ex_shape()
    axes = set(eqn.params["axes"])
    ops, new = _ones_labels(factor, ctx, [x_shape[a] for a in sorted(axes)])
    it_new, it_y = iter(new), iter(factor.labels)
    labels = [next(it_new) if a in axes else next(it_y) for a in range(len(x_shape))]
    return Factor(tuple(ops), tuple(labels), factor.scale)


def _map_label_axes(factor, label, fn):
    """Apply ``fn(array, axis)`` to every operand axis carrying ``label``."""
    ops = []
    for arr, lab in factor.operands:
        for ax, lb in enumerate(lab):
            if lb == label:
                arr = fn(arr, ax)
        ops.append((arr, lab))
    return tuple(ops)


def concatenate_rule(factor, eqn, k, j, vals, ctx):
    """Operand ``k`` is a slice of ``y`` along the concatenated axis: slice the operands carrying it."""
    dim = eqn.params["dimension"]
    start = sum(v.ex_shape()[dim] for v in vals[:k])
    size = vals[k].ex_shape()[dim]
    label = factor.labels[dim]
    ops = _map_label_axes(factor, label, lambda a, ax: lax.slice_in_dim(a, start, start + size, axis=ax))
    return Factor(ops, factor.labels, factor.scale)


def pad_rule(factor, eqn, k, j, vals, ctx):
    """``y = pad(x)``: ``x`` is a strided slice of ``y`` (non-negative padding); otherwise the dense rule."""
    config = eqn.params["padding_config"]
    if k != 0 or any(lo < 0 or hi < 0 for lo, hi, _ in config):
        return dense_rule(factor, eqn, k, j, vals, ctx)
    x_shape = vals[0].ex_shape()
    f = factor
    for a, (lo, _, interior) in enumerate(config):
        if x_shape[a] == 0:
            return dense_rule(factor, eqn, k, j, vals, ctx)
        stop = lo + (x_shape[a] - 1) * (interior + 1) + 1

        def cut(arr, ax, lo=lo, stop=stop, stride=interior + 1):
            return lax.slice_in_dim(arr, lo, stop, stride, axis=ax)

        f = Factor(_map_label_axes(f, f.labels[a], cut), f.labels, f.scale)
    return f


def slice_rule(factor, eqn, k, j, vals, ctx):
    """``y = x[start:limit:stride]``: zero-pad the operands carrying a sliced label back to ``x``'s size."""
    x_shape = vals[0].ex_shape()
    y_shape = tuple(eqn.out_shapes[0])
    strides = eqn.params["strides"] or (1,) * len(x_shape)
    f = factor
    for a, (start, stride) in enumerate(zip(eqn.params["start_indices"], strides, strict=True)):
        if y_shape[a] == x_shape[a]:
            continue
        if y_shape[a] == 0:
            return dense_rule(factor, eqn, k, j, vals, ctx)
        hi = x_shape[a] - (start + (y_shape[a] - 1) * stride + 1)

        def grow(arr, ax, lo=start, hi=hi, interior=stride - 1):
            cfg = [(0, 0, 0)] * arr.ndim
            cfg[ax] = (lo, hi, interior)
            return lax.pad(arr, jnp.zeros((), arr.dtype), cfg)

        f = Factor(_map_label_axes(f, f.labels[a], grow), f.labels, f.scale)
    return f


def rev_rule(factor, eqn, k, j, vals, ctx):
    f = factor
    for d in eqn.params["dimensions"]:
        f = Factor(_map_label_axes(f, f.labels[d], lambda a, ax: lax.rev(a, (ax,))), f.labels, f.scale)
    return f


def _window_incidence(n_in, n_out, window, stride, pad_lo, base_dil, win_dil):
    """``A[j, i]``: how many taps of output window ``j`` read input ``i`` (one axis of a window sum)."""
    a = np.zeros((n_out, n_in))
    for j in range(n_out):
        for t in range(window):
            q = j * stride + t * win_dil - pad_lo  # position in the dilated input
            if q >= 0 and q % base_dil == 0 and q // base_dil < n_in:
                a[j, q // base_dil] += 1
    return a


def reduce_window_sum_rule(factor, eqn, k, j, vals, ctx):
    """Sum pooling is separable: one constant 0/1 incidence matrix per pooled axis (tiled structure)."""
    p = eqn.params
    x_shape = vals[0].ex_shape()
    y_shape = tuple(eqn.out_shapes[0])
    ops, labels = list(factor.operands), []
    dtype = jnp.result_type(factor.operands[0][0])
    for a in range(len(x_shape)):
        window, stride = p["window_dimensions"][a], p["window_strides"][a]
        lo, hi = p["padding"][a]
        base, dil = p["base_dilation"][a], p["window_dilation"][a]
        if (window, stride, lo, hi, base) == (1, 1, 0, 0, 1):
            labels.append(factor.labels[a])
            continue
        inc = _window_incidence(x_shape[a], y_shape[a], window, stride, lo, base, dil)
        label = ctx.fresh()
        ops.append((jnp.asarray(inc, dtype), (factor.labels[a], label)))
        labels.append(label)
    return Factor(tuple(ops), tuple(labels), factor.scale)


RULES: dict[str, Callable] = {
    **dict.fromkeys(ELEMENTWISE, elementwise_rule),
    "dot_general": dot_general_rule,
    "conv_general_dilated": conv_rule,
    "broadcast_in_dim": broadcast_in_dim_rule,
    "transpose": transpose_rule,
    "reshape": reshape_rule,
    "squeeze": squeeze_rule,
    "expand_dims": reshape_rule,
    "reduce_sum": reduce_sum_rule,
    "concatenate": concatenate_rule,
    "pad": pad_rule,
    "slice": slice_rule,
    "rev": rev_rule,
    "reduce_window_sum": reduce_window_sum_rule,
    # gather, scatter, scan, cumsum, ... : dense_rule (exact vjp)
}


def apply_rule(factor: Factor, eqn, k: int, j: int, vals: list[Val], ctx: RuleContext) -> Factor:
    """Factor on input ``k`` of ``eqn`` from a factor on its output ``j``."""
    if len(eqn.out_shapes) != 1:
        return dense_rule(factor, eqn, k, j, vals, ctx)
    rule = RULES.get(eqn.name, dense_rule)
    if rule is not dense_rule:
        _record(ctx, eqn.name, "structured")
    return rule(factor, eqn, k, j, vals, ctx)
