"""The JAX code printer used for generated catalog modules.

A subclass of :class:`sympy.printing.numpy.JaxPrinter` that writes ``jnp.`` instead of ``jax.numpy.``,
``jsp.erf`` instead of the stock ``math.erf`` (which breaks under ``jax.jit``), ``_num.safe_sqrt`` and
``_num.safe_atan2`` for the stabilised atoms of :mod:`dualact.codegen.stabilize` (and ``jnp.logaddexp(0, u)``,
``jsp.expit(u)`` for its overflow-free softplus and logistic), and plain readable Python
for the rest (``1/x`` rather than ``x**(-1.0)``, ``jnp.where`` rather than ``jnp.select`` with a NaN default).

>>> import sympy as sp
>>> x = sp.Symbol("x", real=True)
>>> JaxCodePrinter().doprint(sp.erf(x / sp.sqrt(2)) + sp.Max(x, 0))
'jsp.erf((1/2)*jnp.sqrt(2)*x) + jnp.maximum(0, x)'
"""

from __future__ import annotations

import sympy as sp
from sympy.printing.numpy import JaxPrinter
from sympy.printing.precedence import precedence

_SPECIAL = {
    "erf": "jsp.erf",
    "erfc": "jsp.erfc",
    "erfinv": "jsp.erfinv",
    "gamma": "jsp.gamma",
    "loggamma": "jsp.gammaln",
}


class JaxCodePrinter(JaxPrinter):
    """SymPy → JAX source for dualact's generated modules (see the module docstring)."""

    printmethod = "_dualact_jax"

    def __init__(self, settings=None):
        super().__init__(settings=dict({"fully_qualified_modules": True}, **(settings or {})))

    # ---- names -------------------------------------------------------------------------------------------
    def _module_format(self, fqn, register=True):
        if fqn.startswith("jax.numpy."):
            return "jnp." + fqn[len("jax.numpy.") :]
        if fqn == "jax.numpy":
            return "jnp"
        return super()._module_format(fqn, register)

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name == "safe_sqrt":
            return f"_num.safe_sqrt({self._print(expr.args[0])})"
        if name == "unscale":
            value, scale, degree = expr.args
            return f"_num.unscale({self._print(value)}, {self._print(scale)}, {float(degree)!r})"
        if name in ("exp_diff", "gram_det", "sqrt_gram_det"):
            return f"_num.{name}({', '.join(self._print(a) for a in expr.args)})"
        if name == "sign_select":
            return f"_num.by_sign({', '.join(self._print(a) for a in expr.args)})"
        if name == "heaviside_gate":
            g, f, h0 = expr.args
            return f"_num.gate({self._print(g)}, {self._print(f)}, {float(h0)!r})"
        if name == "safe_atan2":
            return f"_num.safe_atan2({self._print(expr.args[0])}, {self._print(expr.args[1])})"
        if name in _SPECIAL:
            return f"{_SPECIAL[name]}({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_Function(expr)

    def _print_erf(self, expr):
        return f"jsp.erf({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"jsp.erfc({self._print(expr.args[0])})"

    def _print_erfinv(self, expr):
        return f"jsp.erfinv({self._print(expr.args[0])})"

    def _print_gamma(self, expr):
        return f"jsp.gamma({self._print(expr.args[0])})"

    def _print_loggamma(self, expr):
        return f"jsp.gammaln({self._print(expr.args[0])})"

    def _print_besseli(self, expr):
        order, arg = expr.args
        if order in (0, 1):
            return f"jsp.i{int(order)}({self._print(arg)})"
        return self._print_not_supported(expr)

    def _print_Ei(self, expr):
        return f"jsp.expi({self._print(expr.args[0])})"

    # overflow-free atoms of dualact.codegen.stabilize.stabilize_pointwise
    def _print_log1p_exp(self, expr):
        return f"jnp.logaddexp(0, {self._print(expr.args[0])})"

    def _print_logistic(self, expr):
        return f"jsp.expit({self._print(expr.args[0])})"

    # ---- elementwise nonlinearities ----------------------------------------------------------------------
    def _print_Heaviside(self, expr):
        h0 = expr.args[1] if len(expr.args) > 1 else sp.S.Half
        return f"jnp.heaviside({self._print(expr.args[0])}, {self._print(sp.Float(h0))})"

    def _print_Abs(self, expr):
        return f"jnp.abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"jnp.sign({self._print(expr.args[0])})"

    def _minmax(self, expr, fn):
        args = [self._print(a) for a in expr.args]
        out = args[-1]
        for a in reversed(args[:-1]):
            out = f"{fn}({a}, {out})"
        return out

    def _print_Max(self, expr):
        return self._minmax(expr, "jnp.maximum")

    def _print_Min(self, expr):
        return self._minmax(expr, "jnp.minimum")

    def _print_Piecewise(self, expr):
        *pairs, (last_e, last_c) = expr.args
        if last_c != sp.true:
            raise ValueError("Piecewise without a final True branch cannot be emitted")
        out = self._print(last_e)
        for e, c in reversed(pairs):
            out = f"jnp.where({self._print(c)}, {self._print(e)}, {out})"
        return out

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    # ---- numbers and powers ------------------------------------------------------------------------------
    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Integer(self, expr):
        # JAX parses a bare Python int as int32 unless jax_enable_x64 is set, and rejects one beyond it
        # (an OverflowError under jit); floats are exact up to 2**53 and safe beyond
        if abs(int(expr)) > 2**31 - 1:
            return repr(float(expr))
        return super()._print_Integer(expr)

    def _print_Rational(self, expr):
        if max(abs(int(expr.p)), int(expr.q)) > 2**31 - 1:  # as a float, like the integers above
            return repr(float(expr))
        return super()._print_Rational(expr)

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp == -1:
            return f"1/{self.parenthesize(base, precedence(expr) + 1)}"
        if exp.is_Integer and exp < 0:
            return f"1/{self.parenthesize(base, precedence(expr))}**{-int(exp)}"
        if exp == sp.S.Half:
            return f"jnp.sqrt({self._print(base)})"
        if exp == -sp.S.Half:
            return f"1/jnp.sqrt({self._print(base)})"
        if exp.is_Rational and exp.q == 2:
            root = f"jnp.sqrt({self._print(base)})"
            return f"{root}**{exp.p}" if exp > 0 else f"1/{root}**{-exp.p}"
        return super()._print_Pow(expr, rational=rational)


def jax_code(expr: sp.Expr) -> str:
    """Print one expression with :class:`JaxCodePrinter`."""
    return JaxCodePrinter().doprint(expr)
