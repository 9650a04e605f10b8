"""One branch per call, traced only where it runs.

The runtime picks a formula per call from the batch (a closed form or a numerical rule, one orthant formula or
two, a static or a graded quadrature rule). Under ``jax.jit`` or ``jax.vmap`` the choice is a traced value and
``jax.lax.switch`` compiles every branch into one program. Called eagerly (also under eager ``jax.grad`` and
``jax.jvp``, whose tracers carry concrete values) the index is known, and :func:`switch` traces and runs only
the chosen branch: compiling the one-dimensional tier's closed form together with its 364-node rule cost more
than evaluating either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax

__all__ = ["cond", "switch"]


def switch(index, branches: Sequence[Callable], *operands):
    """``jax.lax.switch(index, branches, *operands)``, but only the chosen branch is traced where ``index`` is
    concrete (the index is clamped to the branches, as ``jax.lax.switch`` does).

    >>> import jax.numpy as jnp
    >>> float(switch(jnp.int32(1), [jnp.sin, jnp.cos], 0.0))
    1.0
    >>> float(jax.jit(lambda i: switch(i, [jnp.sin, jnp.cos], 0.0))(0))
    0.0
    """
    try:
        chosen = int(index)
    except jax.errors.ConcretizationTypeError:
        return jax.lax.switch(index, branches, *operands)
    return branches[min(max(chosen, 0), len(branches) - 1)](*operands)


def cond(pred, true_fun: Callable, false_fun: Callable, *operands):
    """``jax.lax.cond(pred, true_fun, false_fun, *operands)``, tracing only the taken branch where ``pred`` is
    concrete."""
    try:
        taken = bool(pred)
    except jax.errors.ConcretizationTypeError:
        return jax.lax.cond(pred, true_fun, false_fun, *operands)
    return (true_fun if taken else false_fun)(*operands)
