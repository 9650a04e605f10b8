"""Exception types raised by dualact.

Every user-facing failure raises a subclass of :class:`DualactError`, whose message names the cause in one line.
"""

from __future__ import annotations


class DualactError(Exception):
    """Base class of all dualact errors."""


class ActivationSyntaxError(DualactError, ValueError):
    """The activation text is not a safe, well-formed expression.

    Attributes:
      position: 0-based character offset of the problem in the text (or ``None``).
      reason: short description of the problem.
    """

    def __init__(self, reason: str, position: int | None = None, text: str | None = None):
        self.reason = reason
        self.position = position
        self.text = text
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"invalid activation expression{where}: {reason}")


class UnknownFunctionError(ActivationSyntaxError):
    """The activation uses a function name that is not on the whitelist."""


class NotAFunctionOfXError(DualactError, ValueError):
    """The activation depends on a free symbol other than ``x`` and the declared parameters."""


class DivergentActivationError(DualactError, ValueError):
    """E[σ(u)²] is infinite for Gaussian u (e.g. ``exp(x**2)``), so no dual kernel exists."""


class NotRealValuedError(DualactError, ValueError):
    """σ is undefined or complex somewhere on the real line (e.g. ``log(x)``), so E[σ(u)σ(v)] is meaningless."""


class MissingParameterError(DualactError, TypeError):
    """A parametric kernel was evaluated without a value for one of its parameters."""


class DerivationError(DualactError, RuntimeError):
    """No tier of the engine could produce a verified dual kernel."""


class VerificationError(DerivationError):
    """A derived formula disagreed with independent quadrature and was rejected."""


class CatalogError(DualactError, RuntimeError):
    """A catalog operation failed (unknown entry, name clash, stale or edited module)."""
