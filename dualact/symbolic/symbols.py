"""The canonical SymPy symbols shared by the engine, the code generator and the tests.

``x`` is the activation's argument; ``q11, q12, q22`` the covariance of the pre-activations (u, v);
``q`` a single variance (diagonal formulas, one-dimensional expectations).
"""

from __future__ import annotations

import sympy as sp

x = sp.Symbol("x", real=True)
q11 = sp.Symbol("q11", nonnegative=True)
q22 = sp.Symbol("q22", nonnegative=True)
q12 = sp.Symbol("q12", real=True)
q = sp.Symbol("q", nonnegative=True)

KERNEL_ARGS = (q11, q12, q22)

# Names that can never be parameters because the engine uses them itself.
RESERVED_NAMES = frozenset({"x", "q", "q11", "q12", "q22", "pi", "E", "I", "oo"})


def param_symbol(name: str) -> sp.Symbol:
    """The SymPy symbol of an activation parameter (always real)."""
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved and cannot be a parameter name")
    return sp.Symbol(name, real=True)
