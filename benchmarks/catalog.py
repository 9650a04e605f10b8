"""Catalog benchmark: full ``dualact catalog regenerate`` and one ``dualact add`` (closed form and Hermite).

Targets (codegen issue): regenerate ≤ 300 s on 2 cores; add of a closed-form activation ≤ 15 s; of a
Hermite one ≤ 60 s. Each run uses a fresh temporary catalog and derivation cache, so nothing is reused.

    python benchmarks/catalog.py            # writes benchmarks/results/catalog.json and prints a table
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("regenerate (46 entries, -j 2)", ["catalog", "regenerate", "-j", "2"], 300.0),
    ("regenerate --rederive (-j 2)", ["catalog", "regenerate", "--rederive", "-j", "2"], None),
    ("add closed form: x*erf(x) + Abs(x)/2", ["add", "b_closed", "x*erf(x) + Abs(x)/2"], 15.0),
    ("add closed form: 2*relu(x) - sin(3*x)", ["add", "b_closed2", "2*relu(x) - sin(3*x)"], 15.0),
    ("add Hermite: x*sigmoid(b*x), b=1.5", ["add", "b_hermite", "x*sigmoid(b*x)", "--param", "b=1.5"], 60.0),
    ("add Hermite: softsign x/(1+|x|)", ["add", "b_hermite2", "x/(1 + Abs(x))"], 60.0),
]


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cat = tmp / "catalog"
        shutil.copytree(ROOT / "catalog", cat, ignore=shutil.ignore_patterns("__pycache__"))
        for label, args, target in CASES:
            env = {**os.environ, "DUALACT_CACHE_DIR": str(tmp / f"cache-{len(rows)}"),
                   "DUALACT_CATALOG": str(tmp / "user")}
            if args[0] == "catalog":
                args = [*args, "--catalog-dir", str(cat)]
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "dualact.cli", *args], env=env, capture_output=True,
                                  text=True, cwd=tmp)
            seconds = time.perf_counter() - t0
            rows.append({"case": label, "seconds": round(seconds, 2), "target_s": target,
                         "ok": proc.returncode == 0 and (target is None or seconds <= target),
                         "output": proc.stdout.strip().splitlines()[-3:] + proc.stderr.strip().splitlines()[-2:]})
            print(f"{label:45s} {seconds:8.1f} s   target {target or '-'}   rc={proc.returncode}", flush=True)
    out = ROOT / "benchmarks" / "results" / "catalog.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine_cores": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
