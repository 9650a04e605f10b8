"""Each structure rule, in isolation, equals the generic rule (materialize, then an exact vjp).

A rule maps a factor on a primitive's output to a factor on one of its inputs; both sides are materialized and
compared for random cotangents, with the other operands per-example (batched) or shared.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from dualact.empirical._jaxpr import flatten
from dualact.empirical.factor import Factor, RuleContext, Val, dense_rule, materialize
from dualact.empirical.structure_rules import RULES, apply_rule

N, O = 2, 3


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def _n(key, shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float64)


CASES = {
    "dot_general": (lambda w, x: lax.dot_general(x, w, (((1,), (0,)), ((), ()))), [(4, 3), (2, 4)]),
    "dot_general_batch": (
        lambda w, x: lax.dot_general(w, x, (((2,), (1,)), ((0,), (0,)))),
        [(2, 3, 4), (2, 4, 5)],
    ),
    "conv": (
        lambda w, x: lax.conv_general_dilated(x, w, (2, 1), ((1, 0), (0, 1)), (1, 1), (1, 2)),
        [(3, 2, 2, 2), (1, 2, 5, 5)],
    ),
    "conv_lhs_dilated": (
        lambda w, x: lax.conv_general_dilated(
            x, w, (1, 1), ((1, 1), (0, 1)), (2, 1), None, ("NHWC", "HWIO", "NHWC")
        ),
        [(2, 2, 2, 3), (1, 3, 4, 2)],
    ),
    "mul": (lambda w, x: w * x, [(3, 4), (3, 4)]),
    "div_broadcast": (lambda w, x: lax.div(x, w), [(1, 4), (3, 4)]),
    "sub": (lambda w, x: lax.sub(x, w), [(3, 4), (3, 4)]),
    "tanh": (lambda w, x: jnp.tanh(w), [(3, 4), (1,)]),
    "integer_pow": (lambda w, x: w**3, [(3, 4), (1,)]),
    "max_scalar": (lambda w, x: lax.max(x, w), [(), (3, 4)]),
    "select_n": (lambda w, x: lax.select_n(x > 0, x, w), [(3, 4), (3, 4)]),
    "broadcast_in_dim": (lambda w, x: lax.broadcast_in_dim(w, (3, 2, 4), (1, 2)), [(1, 4), (1,)]),
    "transpose": (lambda w, x: lax.transpose(w, (2, 0, 1)), [(2, 3, 4), (1,)]),
    "reshape_unit": (lambda w, x: lax.reshape(w, (3, 1, 4)), [(3, 4, 1), (1,)]),
    "reshape_split": (lambda w, x: lax.reshape(w, (2, 6)), [(3, 4), (1,)]),
    "squeeze": (lambda w, x: lax.squeeze(w, (1,)), [(3, 1, 4), (1,)]),
    "reduce_sum": (lambda w, x: lax.reduce_sum_p.bind(w, axes=(0, 2), out_sharding=None), [(2, 3, 4), (1,)]),
    "concatenate": (lambda w, x: lax.concatenate([x, w, x], 1), [(3, 2), (3, 4)]),
    "pad": (lambda w, x: lax.pad(w, 0.0, ((1, 2, 1), (0, 1, 0))), [(3, 4), (1,)]),
    "pad_negative": (lambda w, x: lax.pad(w, 0.0, ((-1, 2, 0), (0, 0, 1))), [(3, 4), (1,)]),
    "slice": (lambda w, x: lax.slice(w, (1, 0), (6, 4), (2, 3)), [(7, 4), (1,)]),
    "rev": (lambda w, x: lax.rev(w, (0, 1)), [(3, 4), (1,)]),
    "reduce_window_sum": (
        lambda w, x: lax.reduce_window(w, 0.0, lax.add, (2, 2), (1, 2), ((1, 0), (0, 1)), (1, 2), (2, 1)),
        [(3, 4), (1,)],
    ),
    "reduce_window_sum_valid": (
        lambda w, x: lax.reduce_window(w, 0.0, lax.add, (1, 2, 2), (1, 2, 2), "VALID"),
        [(2, 4, 5), (1,)],
    ),
    "cumsum": (lambda w, x: jnp.cumsum(w, axis=1), [(3, 4), (1,)]),
}


def _single_eqn(fn, shapes):
    prog = flatten(
        lambda p, x: fn(p[0], x), [jnp.zeros(shapes[0])], jax.ShapeDtypeStruct(shapes[1], jnp.float64)
    )
    (eqn,) = [e for e in prog.eqns if any(v == prog.param_ids[0] for v in e.inputs)]
    return prog, eqn


_USES_X = ["dot_general", "dot_general_batch", "conv", "mul", "div_broadcast", "select_n", "concatenate"]


@pytest.mark.parametrize("name,batched", [(n, True) for n in CASES] + [(n, False) for n in _USES_X])
def test_rule_matches_generic_vjp(name, batched):
    fn, shapes = CASES[name]
    prog, eqn = _single_eqn(fn, shapes)
    w, x = _n(0, shapes[0]), _n(1, ((N,) if batched else ()) + tuple(shapes[1]))
    y_shape = eqn.out_shapes[0]
    c = _n(2, (N, O, *y_shape))
    k = eqn.inputs.index(prog.param_ids[0])

    @jax.jit
    def both(w, x, c):
        ids = [v for v in eqn.inputs if not hasattr(v, "value")]
        run = lambda xn: prog.run([w], [xn], record=ids)[1]  # noqa: E731
        rec = jax.vmap(run)(x) if batched else run(x)

        def val(v):
            if hasattr(v, "value"):
                return Val(v.value, False)
            if batched and v not in prog.x_dep:
                return Val(rec[v][0], False)  # vmap stacked a shared value
            return Val(rec[v], batched)

        vals = [val(v) for v in eqn.inputs]
        counter = itertools.count(1000)
        ctx = RuleContext(lambda: next(counter), (0, 1), (N, O), lambda e, args: e.evaluate(args))
        labels = tuple(next(counter) for _ in y_shape)
        factor = Factor(((c, (0, 1, *labels)),), labels)
        got = materialize(apply_rule(factor, eqn, k, 0, vals, ctx), ctx)
        ref = materialize(dense_rule(factor, eqn, k, 0, vals, ctx), ctx)

        def one(xn, cn):  # the generic rule is the vjp of the per-example function
            _, vjp = jax.vjp(lambda w_: fn(w_, xn), w)
            return jax.vmap(lambda co: vjp(co)[0])(cn)

        xs = x if batched else jnp.broadcast_to(x, (N, *x.shape))
        return got, ref, jax.vmap(one)(xs, c)

    got, ref, direct = both(w, x, c)
    assert got.shape == (N, O, *shapes[0])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref, direct, rtol=1e-12, atol=1e-12)


def test_rule_table_covers_the_issue_list():
    required = [
        "dot_general",
        "conv_general_dilated",
        "add",
        "sub",
        "mul",
        "div",
        "neg",
        "broadcast_in_dim",
        "reshape",
        "transpose",
        "reduce_sum",
        "pad",
        "concatenate",
        "squeeze",
        "convert_element_type",
        "select_n",
        "tanh",
        "exp",
        "logistic",
        "erf",
    ]
    assert not [p for p in required if p not in RULES]
