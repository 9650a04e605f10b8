"""Generated dual-kernel modules (do not edit by hand: run `dualact catalog regenerate`).

>>> from dualact.catalog import relu            # doctest: +SKIP
>>> relu.nngp(1.0, 0.5, 1.0)                    # doctest: +SKIP
>>> dualact.catalog.get("relu")                 # a DualKernel  # doctest: +SKIP

Entries added with ``dualact add`` outside a source checkout live in the user catalog
(``$DUALACT_CATALOG``, default ``~/.cache/dualact/catalog``), which is searched first.
"""

from __future__ import annotations

import importlib.util
import sys


def names() -> list[str]:
    """Names of all catalog entries (built-in and user), sorted."""
    from dualact.codegen.writer import all_entries

    return list(all_entries())


def get(name: str):
    """The :class:`~dualact.runtime.dual_kernel.DualKernel` of catalog entry ``name``."""
    from dualact.codegen.writer import find_entry
    from dualact.errors import CatalogError
    from dualact.runtime.dual_kernel import DualKernel
    from dualact.symbolic.derivation import Derivation

    found = find_entry(name)
    if found is None:
        raise CatalogError(f"no catalog entry named {name!r}; `dualact catalog list` shows the entries")
    module = _load(name, found)
    derivation = Derivation.from_json_dict(found.record["derivation"])
    return DualKernel(module, derivation, name=name, kind=found.record.get("kind"), path=found.module_path)


def _load(name, found):
    modname = f"{__name__}.{name}"
    module = sys.modules.get(modname)
    if module is not None and getattr(module, "__file__", None) == str(found.module_path):
        return module
    spec = importlib.util.spec_from_file_location(modname, found.module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(modname, None)
        raise
    return module


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    from dualact.codegen.writer import find_entry

    found = find_entry(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} (no catalog entry of that name)")
    return _load(name, found)


def __dir__():
    return sorted(set(globals()) | set(names()))
