"""Coverage (slow): every activation entry of the built-in catalog derives from scratch, within the engine's
60 s budget, with the method recorded in the shipped registry, and passes the verification gate.

Run with ``scripts/test -m slow`` (about 4 minutes on 2 cores; GeLU and Gabor take ~40 s each).
"""

from __future__ import annotations

import time

import pytest

from dualact.codegen import entries, writer
from dualact.symbolic.derive import derive

ACTIVATIONS = [e for e in entries.ENTRIES if e.kind == "activation"]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ACTIVATIONS, ids=lambda e: e.name)
def test_entry_derives_fresh_with_its_recorded_method(entry, tmp_path, monkeypatch):
    monkeypatch.setenv("DUALACT_CACHE_DIR", str(tmp_path))
    record = writer.all_entries()[entry.name].record
    t0 = time.monotonic()
    d = derive(entry.expression, dict(entry.params) or None, name=entry.name, use_cache=False)
    seconds = time.monotonic() - t0
    assert d.method == record["method"], (d.method, d.accuracy)
    bound = writer.error_bound(d.accuracy)
    limit = 1e-12 if d.method in ("closed_form", "quadrature_1d") else 1e-7
    assert bound is not None and bound <= limit, d.accuracy
    assert seconds < 75.0  # the 60 s budget plus start-up slack on a loaded machine
