"""``dualact.derive``: an activation given as an expression → its :class:`~dualact.runtime.dual_kernel.DualKernel`.

>>> import dualact
>>> k = dualact.derive("x*erf(x/sqrt(2))/2 + x/2")          # GeLU, as an expression
>>> k.method
'closed_form'
>>> round(float(k.nngp(1.0, 0.5, 2.0)), 12) == round(float(dualact.catalog.get("gelu").nngp(1.0, 0.5, 2.0)), 12)
True
>>> dualact.derive("tanh(x)").method
'hermite'
"""

from __future__ import annotations

from collections.abc import Mapping

import sympy as sp

from dualact.runtime.dual_kernel import DualKernel

__all__ = ["derive"]


def derive(
    activation: str | sp.Expr,
    params: Mapping[str, float | None] | None = None,
    *,
    name: str | None = None,
    use_cache: bool = True,
) -> DualKernel:
    """Derive (or look up) the NNGP/NTK dual kernels of σ and return them as JAX functions.

    Args:
      activation: σ as text in ``x`` (``"a*erf(b*x)"``, ``"relu(x) + sin(x)/2"``, ``"tanh(x)"``) or a SymPy
        expression. Only whitelisted functions are accepted; nothing is executed.
      params: parameter name → default value, or ``None`` to keep it symbolic (then pass it by keyword:
        ``k.nngp(q11, q12, q22, b=2.0)``).
      name: a label for the kernel.
      use_cache: use the on-disk derivation cache and the built-in catalog.

    The result has ``method`` ("closed_form" or "hermite"), ``expression`` (T as SymPy), ``nngp``,
    ``ntk_factor``, ``diag``, ``ntk_diag``, ``error_bound``/``accuracy``, ``hermite_coefficients``,
    ``homogeneity`` and ``taylor_coefficients``. See :mod:`dualact.symbolic.derive` for the tiers.
    """
    from dualact.symbolic.derive import derive as _derive
    from dualact.symbolic.derive import hermite_table

    d = _derive(activation, params, name=name, use_cache=use_cache)
    table = hermite_table(d) if d.method == "hermite" else None
    return DualKernel.from_derivation(d, name=name, table=table)
