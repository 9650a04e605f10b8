"""dualact: infinite-width neural network kernels (NNGP, NTK) for any activation function.

>>> import dualact
>>> relu = dualact.catalog.get("relu")
>>> float(relu.diag(2.0))
1.0

Submodules (imported on first use): :mod:`~dualact.catalog` (generated kernels), :mod:`~dualact.layers`
(deep kernels), :mod:`~dualact.predict` (inference), :mod:`~dualact.sketch` (random features),
:mod:`~dualact.empirical` (finite-width NTK), :mod:`~dualact.datasets`, :mod:`~dualact.sklearn`.
"""

import importlib

from dualact.engine import derive
from dualact.errors import (
    ActivationSyntaxError,
    CatalogError,
    DerivationError,
    DivergentActivationError,
    DualactError,
    MissingParameterError,
    NotAFunctionOfXError,
    NotRealValuedError,
    UnknownFunctionError,
    VerificationError,
)
from dualact.runtime.dual_kernel import DualKernel

__version__ = "0.1.0"

_SUBMODULES = ("catalog", "codegen", "datasets", "empirical", "layers", "predict", "sketch", "sklearn", "symbolic")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"dualact.{name}")
    raise AttributeError(f"module 'dualact' has no attribute {name!r}")


__all__ = [
    "ActivationSyntaxError",
    "CatalogError",
    "DerivationError",
    "DivergentActivationError",
    "DualKernel",
    "DualactError",
    "MissingParameterError",
    "NotAFunctionOfXError",
    "NotRealValuedError",
    "UnknownFunctionError",
    "VerificationError",
    "derive",
    *_SUBMODULES,
]
