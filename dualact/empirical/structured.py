"""Structured derivatives (Novak, Sohl-Dickstein & Schoenholz 2022, method 3): an interpreter over the jaxpr.

Algorithm, for each side ``x1``/``x2`` of the kernel:

1. :func:`~dualact.empirical._jaxpr.flatten` the per-example model into a flat list of primitives (call-like
   equations inlined) and find the *boundary* equations: those whose output depends on ``x`` and which consume
   a parameter-only value (a parameter leaf, or a value computed from parameters alone, e.g. a broadcast
   bias).
2. One forward pass and ``O`` backward passes per example (``jax.jacrev`` of the model with an additive zero
   perturbation at every boundary output) give the cotangents ``c_y = df/dy`` at all boundary outputs at once,
   together with the values the rules need (the layer inputs ``h``).
3. The per-primitive rules of :mod:`~dualact.empirical.structure_rules` turn ``c_y`` into a
   :class:`Factor` on each parameter-only input and walk back through parameter-only equations down to the
   parameter leaves, never forming ``dy/dw``.

Then the kernel is ``sum over leaves w, over pairs (F1, F2) of factors on w`` of one einsum of the operands of
``F1`` and ``F2`` that contracts ``w``'s axes, the traced output axes and (where asked) the diagonal axes, in
the order ``opt_einsum`` finds cheapest (the paper's MJJMP). For a dense layer ``y = h W`` that is
``(h1 h2ᵀ) ⊙ (c1 c2ᵀ)``: ``O(N² O² W)`` instead of ``O(N² O² W²)``.
"""

from __future__ import annotations

import math
from collections import defaultdict

import jax
import jax.numpy as jnp
import opt_einsum

from dualact.empirical._axes import PerExample, full_shape, kernel_labels, split_kwargs, split_params
from dualact.empirical._jaxpr import Const, Program, flatten, is_inexact
from dualact.empirical.factor import Factor, RuleContext, Val, materialize
from dualact.empirical.structure_rules import apply_rule

SIDE_BASE = (10**7, 2 * 10**7)
_FRESH0 = 1000
MAX_FACTORS = 4  # beyond this many factors on one variable, sum their materialized Jacobians instead


class _Analysis:
    """Side-independent facts about a :class:`Program`: boundary equations, seeds and values to record."""

    def __init__(self, prog: Program):
        self.prog = prog
        self.boundary, self.param_only_eqns = [], []
        self.consumers = defaultdict(list)
        for e in prog.eqns:
            for k, v in enumerate(e.inputs):
                if not isinstance(v, Const):
                    self.consumers[v].append((e, k))
        outputs = {v for v in prog.outputs if not isinstance(v, Const)}
        for eqn in prog.eqns:
            if eqn.outputs and all(o in prog.param_only for o in eqn.outputs):
                self.param_only_eqns.append(eqn)
            elif any(prog.is_param_only(v) and is_inexact(prog.dtypes[v]) for v in eqn.inputs):
                self.boundary.append(eqn)
        seeds = [
            o
            for e in self.boundary
            for o in e.outputs
            if is_inexact(prog.dtypes[o]) and (o in outputs or o in self.consumers)  # unused: c = 0
        ]
        self.alias = self._aliases(seeds)
        self.seeds = [o for o in seeds if o not in self.alias]
        self.seed_set = set(self.seeds)
        self.out_seeds = [
            t for t, v in enumerate(prog.outputs) if prog.is_param_only(v) and is_inexact(prog.dtypes[v])
        ]
        needed = {
            v for e in self.boundary + self.param_only_eqns for v in e.inputs if not isinstance(v, Const)
        }
        self.rec_x = sorted(v for v in needed if v in prog.x_dep)
        self.rec_u = sorted(v for v in needed if v not in prog.x_dep)

    def _aliases(self, seeds):
        """Seeds whose cotangent is ``±`` another seed's: ``y`` feeds only ``z = y + b`` (a bias add).

        Reusing ``c_z`` for ``c_y`` halves the backward passes' output and lets XLA share the ``c·c`` Grams.
        """
        prog = self.prog
        outputs = {v for v in prog.outputs if not isinstance(v, Const)}
        seed_set = set(seeds)
        alias = {}
        for y in seeds:
            uses = self.consumers.get(y, [])
            if y in outputs or len(uses) != 1:
                continue
            e, k = uses[0]
            sign = {"add": 1.0, "add_any": 1.0, "sub": -1.0 if k == 1 else 1.0}.get(e.name)
            z = e.outputs[0]
            if sign is None or z not in seed_set or prog.shapes[z] != prog.shapes[y]:
                continue
            if any(isinstance(v, Const) or v == y for v in e.inputs[:k] + e.inputs[k + 1 :]):
                continue
            alias[y] = (z, sign)
        resolved = {}
        for y in alias:
            z, sign = alias[y]
            while z in alias:
                z, s2 = alias[z]
                sign *= s2
            resolved[y] = (z, sign)
        return resolved


def _side_values(an: _Analysis, diff, xs, kws, kw_in):
    """Cotangents at all seeds (per output leaf) and recorded values, batched over examples."""
    prog = an.prog

    def per_example(x_ex, kw_ex):
        inputs = jax.tree_util.tree_leaves((x_ex, kw_ex))

        def fwd(eps):
            perturb = {v: eps[f"v{v}"] for v in an.seeds}
            out, rec = prog.run(diff, inputs, perturb, an.rec_x + an.rec_u)
            outs = jax.tree_util.tree_leaves(out)
            for t in an.out_seeds:
                outs[t] = outs[t] + eps[f"o{t}"]
            return outs, rec

        eps0 = {f"v{v}": jnp.zeros(prog.shapes[v], prog.dtypes[v]) for v in an.seeds}
        for t in an.out_seeds:
            v = prog.outputs[t]
            eps0[f"o{t}"] = jnp.zeros(prog.shapes[v], prog.dtypes[v])
        jac, rec = jax.jacrev(fwd, has_aux=True)(eps0)
        return jac, {v: rec[v] for v in an.rec_x}, {v: rec[v] for v in an.rec_u}

    return jax.vmap(per_example, in_axes=(0, kw_in), out_axes=(0, 0, None))(xs, kws)


def _merge(factors: list[Factor], ctx: RuleContext) -> list[Factor]:
    if len(factors) <= MAX_FACTORS:
        return factors
    dense = sum(materialize(f, ctx) for f in factors)
    labels = tuple(ctx.fresh() for _ in range(dense.ndim - len(ctx.ext)))
    return [Factor(((dense, (*ctx.ext, *labels)),), labels, 1.0)]


def _leaf_factors(an: _Analysis, jac_k, rec_x, rec_u, ext_shape, side: int, stats=None) -> list[list[Factor]]:
    """Factors on every parameter leaf for one output leaf and one side."""
    prog = an.prog
    base = SIDE_BASE[side]
    counter = iter(range(base + _FRESH0, base + 10**6))
    ext = tuple(base + t for t in range(len(ext_shape)))
    ctx = RuleContext(lambda: next(counter), ext, ext_shape, lambda eqn, args: eqn.evaluate(args), stats)

    def val(node):
        if isinstance(node, Const):
            return Val(node.value, False)
        return Val(rec_x[node], True) if node in rec_x else Val(rec_u[node], False)

    pending: dict[int, list[Factor]] = defaultdict(list)

    def push(eqn, j, factor, vals):
        for k, v in enumerate(eqn.inputs):
            if prog.is_param_only(v) and is_inexact(prog.dtypes[v]):
                pending[v].append(apply_rule(factor, eqn, k, j, vals, ctx))

    for eqn in an.boundary:
        vals = [val(v) for v in eqn.inputs]
        for j, y in enumerate(eqn.outputs):
            z, sign = an.alias.get(y, (y, 1.0))
            if z in an.seed_set:
                labels = tuple(next(counter) for _ in prog.shapes[y])
                push(eqn, j, Factor(((jac_k[f"v{z}"], ext + labels),), labels, sign), vals)
    for t in an.out_seeds:
        v = prog.outputs[t]
        labels = tuple(next(counter) for _ in prog.shapes[v])
        pending[v].append(Factor(((jac_k[f"o{t}"], ext + labels),), labels))
    for eqn in reversed(an.param_only_eqns):
        if not any(o in pending for o in eqn.outputs):
            continue
        vals = [val(v) for v in eqn.inputs]
        for j, y in enumerate(eqn.outputs):
            for factor in _merge(pending.pop(y, []), ctx):
                push(eqn, j, factor, vals)
    return [_merge(pending.get(p, []), ctx) for p in prog.param_ids]


def _relabel(factor: Factor, fn) -> tuple:
    return tuple((arr, tuple(fn(lb) for lb in lab)) for arr, lab in factor.operands)


class Contractor:
    """Einsums along ``opt_einsum``'s cheapest order, sharing identical pairwise contractions across calls.

    The same cotangent ``c`` serves a layer's weight and its bias, so their kernels need the same Gram
    ``c1·c2``; memoizing the pairwise steps (keyed by operand identity and the label pattern) computes it
    once. FLOP estimates of the contractions actually performed are added to ``stats``.
    """

    def __init__(self, stats=None):
        self.stats = stats
        self.memo: dict = {}

    def _count(self, key, value):
        if self.stats is not None:
            self.stats[key] = self.stats.get(key, 0) + value

    def __call__(self, operands, out):
        keep = set(out)
        items = []
        for arr, lab in operands:  # size-one axes not in the output carry nothing
            drop = tuple(a for a, lb in enumerate(lab) if arr.shape[a] == 1 and lb not in keep)
            key = ("leaf", id(arr), drop)
            self.memo.setdefault(("ref", id(arr)), arr)  # keeps the id valid while memoized
            if drop:
                if ("squeeze", key) not in self.memo:
                    self.memo["squeeze", key] = jnp.squeeze(arr, drop)
                arr = self.memo["squeeze", key]
                lab = tuple(lb for a, lb in enumerate(lab) if a not in drop)
            items.append((arr, tuple(lab), key))
        ids: dict = {}
        sym = lambda lb: opt_einsum.get_symbol(ids.setdefault(lb, len(ids)))  # noqa: E731
        eq = (
            ",".join("".join(sym(lb) for lb in lab) for _, lab, _ in items)
            + "->"
            + "".join(sym(lb) for lb in out)
        )
        strategy = "optimal" if len(items) <= 6 else "dp"
        path, _ = opt_einsum.contract_path(
            eq, *[a.shape for a, _, _ in items], shapes=True, optimize=strategy
        )
        for step in path:
            picked = [items[t] for t in step]
            for t in sorted(step, reverse=True):
                items.pop(t)
            needed = set(out).union(*[set(lab) for _, lab, _ in items])
            seen = []
            for _, lab, _ in picked:
                seen += [lb for lb in lab if lb not in seen]
            new_lab = tuple(out) if not items else tuple(lb for lb in seen if lb in needed)
            canon = {lb: t for t, lb in enumerate(seen)}
            key = tuple((k, tuple(canon[lb] for lb in lab)) for _, lab, k in picked) + (
                tuple(canon[lb] for lb in new_lab),
            )
            result = self.memo.get(key)
            if result is None:
                args = []
                for arr, lab, _ in picked:
                    args += [arr, [canon[lb] for lb in lab]]
                result = jnp.einsum(*args, [canon[lb] for lb in new_lab])
                self.memo[key] = result
                sizes = {lb: n for arr, lab, _ in picked for lb, n in zip(lab, arr.shape, strict=True)}
                self._count("einsum_flops", 2 * math.prod(sizes.values()))
                self._count("largest_intermediate", 0)
                if self.stats is not None:
                    self.stats["largest_intermediate"] = max(self.stats["largest_intermediate"], result.size)
            items.append((result, new_lab, ("tmp", key)))
        ((arr, lab, _),) = items
        if tuple(lab) != tuple(out):
            arr = jnp.einsum(arr, [ids[lb] for lb in lab], [ids[lb] for lb in out])
        return arr


def _pair_kernel(facs1, facs2, lab, contract):
    """Sum over leaves and factor pairs of the MJJMP einsums."""
    b1, b2 = SIDE_BASE
    total = None
    for f1s, f2s in zip(facs1, facs2, strict=True):
        for f1 in f1s:
            for f2 in f2s:
                var = dict(zip(f2.labels, f1.labels, strict=True))

                def map1(lb):
                    return lab.ext1[lb - b1] if lb - b1 < _FRESH0 else lb

                def map2(lb, var=var):
                    if lb in var:
                        return var[lb]
                    return lab.ext2[lb - b2] if lb - b2 < _FRESH0 else lb

                ops = _relabel(f1, map1) + _relabel(f2, map2)
                term = contract(ops, lab.out) * (f1.scale * f2.scale)
                total = term if total is None else total + term
    return total


def _to_side2(factors: list[list[Factor]]) -> list[list[Factor]]:
    shift = SIDE_BASE[1] - SIDE_BASE[0]
    return [
        [
            Factor(_relabel(f, lambda lb: lb + shift), tuple(lb + shift for lb in f.labels), f.scale)
            for f in fs
        ]
        for fs in factors
    ]


def structured_kernel(apply_fn, x1, x2, params, kwargs, trace_axes, diagonal_axes, spec, stats=None):
    """Empirical NTK by structured derivatives (see the module docstring); same semantics as the others."""
    pe = PerExample(apply_fn, spec)
    diff, rebuild = split_params(params)
    kw_arr, kw_static = split_kwargs(kwargs)

    def fn(p_leaves, x_ex, kw_ex):
        return pe.fn(rebuild(p_leaves), x_ex, {**kw_ex, **kw_static})

    def side(x):
        xs, kws, kw_in = pe.batched(x, kw_arr)
        x_ex = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), xs)
        kw_ex = {
            k: jax.tree_util.tree_map(
                lambda a, ax=kw_in[k]: jax.ShapeDtypeStruct(a.shape[1:] if ax == 0 else a.shape, a.dtype), v
            )
            for k, v in kws.items()
        }
        prog = flatten(fn, diff, x_ex, kw_ex)
        an = _Analysis(prog)
        jac, rec_x, rec_u = _side_values(an, diff, xs, kws, kw_in)
        n = jax.tree_util.tree_leaves(xs)[0].shape[0]
        out_struct = jax.tree_util.tree_unflatten(
            prog.out_tree,
            [
                jax.ShapeDtypeStruct(
                    jnp.shape(v.value) if isinstance(v, Const) else prog.shapes[v], jnp.float32
                )
                for v in prog.outputs
            ],
        )
        return an, jac, rec_x, rec_u, n, out_struct

    an1, jac1, rx1, ru1, n1, out1 = side(x1)
    same = x2 is None
    an2, jac2, rx2, ru2, n2, out2 = (an1, jac1, rx1, ru1, n1, out1) if same else side(x2)
    leaves1, tree = jax.tree_util.tree_flatten(out1)
    leaves2 = jax.tree_util.tree_leaves(out2)
    kernels = []
    contract = Contractor(stats)
    for k, (o1, o2) in enumerate(zip(leaves1, leaves2, strict=True)):
        b = pe.out_axis(k, out1)
        lab = kernel_labels(
            full_shape(o1.shape, n1, b), full_shape(o2.shape, n2, b), b, trace_axes, diagonal_axes
        )
        facs1 = _leaf_factors(an1, jac1[k], rx1, ru1, (n1, *o1.shape), 0, stats)
        facs2 = _to_side2(facs1) if same else _leaf_factors(an2, jac2[k], rx2, ru2, (n2, *o2.shape), 1, stats)
        theta = _pair_kernel(facs1, facs2, lab, contract)
        if theta is None:
            theta = jnp.zeros(lab.shape, jnp.result_type(*diff) if diff else jnp.float32)
        kernels.append(theta / lab.trace_size)
    return jax.tree_util.tree_unflatten(tree, kernels)
