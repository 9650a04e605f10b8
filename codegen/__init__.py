"""The dualact code generator: SymPy derivations to readable, numerically stable JAX modules.

Public API (imported lazily, so ``dualact.catalog`` can use the registry helpers without loading SymPy):

* :func:`emit` — Derivation → :class:`EmittedModule` (module text, optional ``.npz`` table);
* :func:`module_source` — just the text; :func:`load_module` — an in-memory module object;
* :data:`GENERATOR_VERSION`; :mod:`dualact.codegen.writer` for catalog directories and atomic writes;
* :mod:`dualact.codegen.entries` — the declarative list of built-in catalog entries.
"""

from __future__ import annotations

_LAZY = {
    "emit": "dualact.codegen.emit",
    "module_source": "dualact.codegen.emit",
    "load_module": "dualact.codegen.emit",
    "EmittedModule": "dualact.codegen.emit",
    "GENERATOR_VERSION": "dualact.codegen.emit",
    "JaxCodePrinter": "dualact.codegen.printer",
    "stabilize": "dualact.codegen.stabilize",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
