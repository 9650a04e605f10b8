"""dualact: infinite-width neural network kernels (NNGP, NTK) for any activation function."""

from dualact.errors import (
    ActivationSyntaxError,
    CatalogError,
    DerivationError,
    DivergentActivationError,
    DualactError,
    MissingParameterError,
    NotAFunctionOfXError,
    UnknownFunctionError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationSyntaxError",
    "CatalogError",
    "DerivationError",
    "DivergentActivationError",
    "DualactError",
    "MissingParameterError",
    "NotAFunctionOfXError",
    "UnknownFunctionError",
    "VerificationError",
]
