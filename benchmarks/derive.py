"""Engine benchmark: time to derive every built-in activation from scratch, and Hermite-table accuracy.

For each activation entry of the catalog (``dualact.codegen.entries``) and a few compositions from the
engine issue, ``dualact.symbolic.derive.derive`` runs with no cache and no catalog lookup under the default
60 s budget; the row records the wall time, the method and tier it ended with, the size of T (SymPy
operation count) and the verification figure. Hermite rows add the measured normalised errors against
kink-aware quadrature over q11, q22 ∈ [1/16, 16] and |ρ| ≤ 0.99 (``tests/_engine.hermite_accuracy``), the
diagonal and ρ = ±1 errors, and the number of terms.

    python benchmarks/derive.py [--only relu,tanh] [--no-accuracy]

Writes ``benchmarks/results/derive.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

EXTRA = [  # (label, source, params)
    ("gelu_expression", "x*erf(x/sqrt(2))/2 + x/2", None),
    ("affine_relu", "3*relu(2*x)+1", None),
    ("leaky_max", "Max(x, x/10)", None),
    ("relu_plus_erf", "relu(x)+erf(x)/2", None),
    ("sin_symbolic", "a*sin(b*x+c)", {"a": None, "b": None, "c": None}),
    # compositions found by fuzzing derive, which ran for minutes or raised before
    ("silu_max_softplus", "silu(Max(softplus(1), softplus(x)))", None),
    ("nested_max_cosh", "Max(Max(Max(0.3*x, 2), cosh(x)), sigmoid(atan(-x)))", None),
    ("max_x_tanh", "Max(x, tanh(2*x))", None),
    ("max_relu_log", "Max(relu(3*x), log(x**2))", None),
]


def _cases(only: set[str] | None):
    from dualact.codegen.entries import ENTRIES

    cases = [(e.name, e.expression, dict(e.params) or None) for e in ENTRIES if e.kind == "activation"]
    cases += EXTRA
    return [c for c in cases if only is None or c[0] in only]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated labels")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the quadrature accuracy of Hermite rows")
    args = ap.parse_args()
    os.environ["DUALACT_CACHE_DIR"] = tempfile.mkdtemp(prefix="dualact-bench-cache-")

    import jax

    jax.config.update("jax_enable_x64", True)
    import sympy as sp

    from dualact.codegen.writer import error_bound
    from dualact.runtime.dual_kernel import DualKernel
    from dualact.symbolic.derive import derive

    only = set(args.only.split(",")) if args.only else None
    rows = []
    print(f"{'activation':24s} {'seconds':>8s} {'method':12s} {'tier':22s} {'T ops':>6s} {'error':>9s}  notes")
    for label, source, params in _cases(only):
        t0 = time.perf_counter()
        try:
            d = derive(source, params, name=label, use_cache=False)
        except Exception as exc:  # noqa: BLE001 - a failure is a result row
            rows.append({"activation": label, "source": source, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{label:24s} FAILED {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - t0
        row = {
            "activation": label,
            "source": source,
            "seconds": round(seconds, 2),
            "method": d.method,
            "tier": d.tier,
            "T_ops": int(sp.count_ops(d.nngp)) if d.nngp is not None else None,
            "Tdot_ops": int(sp.count_ops(d.ntk_factor)) if d.ntk_factor is not None else None,
            "error_bound": error_bound(d.accuracy),
        }
        note = ""
        if d.method == "quadrature_1d":
            row["nodes"] = d.accuracy.get("nodes")
            note = f"{row['nodes']} quadrature nodes per entry"
        if d.method == "hermite":
            row["terms"] = {"nngp": d.hermite.get("J"), "ntk": d.hermite.get("J_ntk")}
            if not args.no_accuracy:
                from _engine import hermite_accuracy

                t1 = time.perf_counter()
                acc = hermite_accuracy(DualKernel.from_derivation(d, label))
                row["measured"] = {k: float(f"{v:.3g}") for k, v in acc.items()}
                row["accuracy_seconds"] = round(time.perf_counter() - t1, 1)
                note = (f"measured nngp {acc['nngp']:.1e} ntk {acc['ntk']:.1e} diag {acc['diag']:.1e} "
                        f"edge {acc['edge']:.1e}; J {row['terms']['nngp']}/{row['terms']['ntk']}")
        rows.append(row)
        err = row["error_bound"]
        print(f"{label:24s} {seconds:8.2f} {d.method:12s} {d.tier:22s} {row['T_ops'] or '-':>6} "
              f"{err if err is None else format(err, '9.1e')}  {note}", flush=True)
    out = ROOT / "benchmarks" / "results" / ("derive.json" if only is None else "derive_partial.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "sympy": sp.__version__, "jax": jax.__version__}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
