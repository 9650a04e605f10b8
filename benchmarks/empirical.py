"""Benchmark of the empirical-NTK implementations: run time, compile time, FLOPs and peak memory.

Cases (the issue's):

* ``fcn512``: FCN width 512, depth 3 (ReLU), 10 outputs, 64 inputs of dimension 256, float64, ``vmap_axes=0``,
  with the full ``(N, N, O, O)`` kernel (``trace_axes=()``) and with the default ``trace_axes=(-1,)``.
  neural-tangents on this kind of machine: Jacobian contraction 22 s, structured derivatives 0.136 s.
* ``fcn2048``: FCN 3×2048 (ReLU), 8 outputs, 16 inputs of dimension 3072 (CIFAR-flat), float32, full kernel:
  the configuration of the neural-tangents notebook (T4 GPU: structured 70× faster than Jacobian contraction).
* ``cnn``: small CNN in float32 (two 3×3 convolutions with 32 channels, average pooling, dense readout), 32
  images of 16×16×3, ``trace_axes=(-1,)``.

Each (case, implementation) runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its
own. Reported per run: compile seconds (``lower`` + ``compile``), run seconds (best of ``--repeats`` after
compilation), XLA's FLOP estimate (``compiled.cost_analysis()``), our cost model's FLOPs
(:mod:`dualact.empirical.auto`), XLA's buffer sizes (``compiled.memory_analysis()``: arguments + outputs +
temporaries) and the process peak RSS. Results go to ``benchmarks/results/empirical.json``.

Usage: ``python benchmarks/empirical.py [--cases fcn512,fcn2048,cnn] [--impls ...] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "empirical.json"
IMPLS = ("structured", "ntk_vector", "jacobian")
NEURAL_TANGENTS = {"fcn512/full": {"jacobian": 22.0, "structured": 0.136}}


def build(case: str):
    """(apply_fn, params, x, trace_axes, dtype) for a case."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    key = jax.random.PRNGKey(0)
    if case.startswith("fcn"):
        if case.startswith("fcn512"):
            dims, n, dtype = [256, 512, 512, 512, 10], 64, jnp.float64
        else:
            dims, n, dtype = [3072, 2048, 2048, 2048, 8], 16, jnp.float32
        ks = jax.random.split(key, 2 * len(dims))
        params = [
            (
                jax.random.normal(ks[2 * i], (a, b), dtype) / np.sqrt(a),
                0.1 * jax.random.normal(ks[2 * i + 1], (b,), dtype),
            )
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=False))
        ]

        def apply_fn(p, x):
            for i, (w, b) in enumerate(p):
                x = x @ w + b
                if i < len(p) - 1:
                    x = jax.nn.relu(x)
            return x

        x = jax.random.normal(ks[-1], (n, dims[0]), dtype)
        trace_axes = (-1,) if case.endswith("trace") else ()  # "fcn512/full" | "fcn512/trace" | "fcn2048"
        return apply_fn, params, x, trace_axes
    if case == "cnn":
        dtype = jnp.float32
        ks = jax.random.split(key, 8)
        dn = ("NHWC", "HWIO", "NHWC")
        params = {
            "k1": jax.random.normal(ks[0], (3, 3, 3, 32), dtype) / np.sqrt(27),
            "b1": jnp.zeros((32,), dtype),
            "k2": jax.random.normal(ks[1], (3, 3, 32, 32), dtype) / np.sqrt(288),
            "b2": jnp.zeros((32,), dtype),
            "w": jax.random.normal(ks[2], (8 * 8 * 32, 10), dtype) / np.sqrt(2048),
        }

        def apply_fn(p, x):
            h = jax.nn.relu(
                jax.lax.conv_general_dilated(x, p["k1"], (1, 1), "SAME", dimension_numbers=dn) + p["b1"]
            )
            h = jax.nn.relu(
                jax.lax.conv_general_dilated(h, p["k2"], (1, 1), "SAME", dimension_numbers=dn) + p["b2"]
            )
            h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
            return h.reshape(h.shape[0], -1) @ p["w"]

        x = jax.random.normal(ks[3], (32, 16, 16, 3), dtype)
        return apply_fn, params, x, (-1,)
    raise ValueError(case)


def run_one(case: str, impl: str, repeats: int) -> dict:
    """Measure one implementation on one case (called in a fresh subprocess)."""
    import jax

    if case.startswith("fcn512"):
        jax.config.update("jax_enable_x64", True)
    from dualact import empirical

    apply_fn, params, x, trace_axes = build(case)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn = empirical.ntk_fn(apply_fn, impl, trace_axes=trace_axes, vmap_axes=0, jit=False)
    t0 = time.perf_counter()
    compiled = jax.jit(lambda x, p: fn(x, None, p)).lower(x, params).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x, params))
        times.append(time.perf_counter() - t0)
    out = {"case": case, "implementation": impl, "compile_s": compile_s, "run_s": min(times), "runs_s": times}
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        out["xla_flops"] = float(cost.get("flops", float("nan")))
    except Exception as err:  # cost analysis is optional on some backends
        out["xla_flops_error"] = repr(err)
    try:
        mem = compiled.memory_analysis()
        out["xla_buffers_bytes"] = int(
            mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
        )
        out["xla_temp_bytes"] = int(mem.temp_size_in_bytes)
    except Exception as err:
        out["xla_memory_error"] = repr(err)
    costs = empirical.estimate_costs(apply_fn, x, None, params, trace_axes=trace_axes, vmap_axes=0)
    out["model_flops"] = costs[impl].flops
    out["model_score"] = costs[impl].score
    out["auto_choice"] = min(costs, key=lambda k: costs[k].score)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["baseline_rss_bytes"] = rss0 * 1024
    return out


def _fmt_bytes(b):
    return "-" if b is None else f"{b / 2**20:,.0f} MiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="fcn512/full,fcn512/trace,fcn2048,cnn")
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--one", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one[0].replace("/", "_"), args.one[1], args.repeats)))
        return
    rows = []
    for case in args.cases.split(","):
        for impl in args.impls.split(","):
            repeats = (
                1 if impl != "structured" and case.startswith(("fcn512/full", "fcn2048")) else args.repeats
            )
            cmd = [sys.executable, __file__, "--one", case, impl, "--repeats", str(repeats)]
            try:
                proc = subprocess.run(
                    cmd,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                    env={**os.environ, "JAX_PLATFORMS": "cpu"},
                )
                row = (
                    json.loads(proc.stdout.strip().splitlines()[-1])
                    if proc.returncode == 0
                    else {"error": proc.stderr.strip().splitlines()[-1:]}
                )
            except subprocess.TimeoutExpired:
                row = {"error": f"timeout after {args.timeout} s"}
            row.update(case=case, implementation=impl)
            rows.append(row)
            print(_line(row), flush=True)
    for case in args.cases.split(","):
        by = {r["implementation"]: r for r in rows if r["case"] == case and "run_s" in r}
        if "structured" in by and "jacobian" in by:
            print(
                f"{case}: structured is {by['jacobian']['run_s'] / by['structured']['run_s']:.1f}x faster "
                f"than jacobian"
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "neural_tangents_reference_s": NEURAL_TANGENTS,
        "notes": "run_s = best of repeats after compilation; peak_rss = process max RSS (ru_maxrss) of a "
        "fresh subprocess; xla_buffers = memory_analysis() arguments+outputs+temporaries; "
        "xla_flops = cost_analysis(); model_flops = dualact.empirical.auto cost model",
    }
    import jax

    meta["jax"] = jax.__version__
    RESULTS.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {RESULTS}")


def _line(r):
    if "error" in r:
        return f"{r['case']:<14} {r['implementation']:<11} ERROR {r['error']}"
    return (
        f"{r['case']:<14} {r['implementation']:<11} run {r['run_s']:9.4f} s  "
        f"compile {r['compile_s']:6.2f} s  "
        f"xla-flops {r.get('xla_flops', float('nan')):9.3e}  model-flops {r['model_flops']:9.3e}  "
        f"xla-buffers {_fmt_bytes(r.get('xla_buffers_bytes'))}  peak-rss {_fmt_bytes(r['peak_rss_bytes'])}  "
        f"auto→{r['auto_choice']}"
    )


if __name__ == "__main__":
    main()
