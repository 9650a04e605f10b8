"""Coverage (slow): every activation entry of the built-in catalog derives from scratch with the method
recorded in the shipped registry and passes the verification gate.

Derivations use the catalog's budget (``Entry.derive``: 240 s), so a loaded machine does not push GeLU or
Gabor (~43 s each when idle, under the default 60 s budget) into the Hermite fallback; the per-activation
times under the default budget are measured by ``benchmarks/derive.py``.
Run with ``scripts/test -m slow`` (about 4 minutes on 2 cores).
"""

from __future__ import annotations

import pytest

from dualact.codegen import entries, writer

ACTIVATIONS = [e for e in entries.ENTRIES if e.kind == "activation"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ACTIVATIONS, ids=lambda e: e.name)
def test_entry_derives_fresh_with_its_recorded_method(entry, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALACT_CACHE_DIR", str(tmp_path))
    record = writer.all_entries()[entry.name].record
    d = entry.derive(use_cache=False)
    assert d.method == record["method"], (d.method, d.accuracy)
    bound = writer.error_bound(d.accuracy)
    limit = 1e-12 if d.method in ("closed_form", "quadrature_1d") else 1e-7
    assert bound is not None and bound <= limit, d.accuracy
