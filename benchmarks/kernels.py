"""Benchmark of the infinite-width kernels (dualact.layers): run time with compile time reported separately.

Cases (the issue's):

* ``fc``: fully connected depth 3 (width irrelevant), W_std=1.5, b_std=0.05, n=1000 inputs of dimension 256
  (entries N(0, 1/256)), ``kernel_fn(x, None, ("nngp", "ntk"))`` in float64, for 8 activations.
* ``fc_engine``: the same for tanh and SiLU, which have no closed form (``dualact.derive``); target < 0.5 s.
* ``myrtle5``: Myrtle-5 CNTK (NNGP and NTK) of 20 CIFAR-sized images 32×32×3, float64, ReLU.
  neural-tangents takes 48 s on this kind of machine (mostly slow float64 XLA convolutions on CPU).
  Run twice: with the catalog's ReLU and with a ReLU whose arctan2 is vectorised arithmetic (the test
  double in ``tests/_duals.py``; XLA's CPU arctan2 is a scalar libm call).
* ``fc_large``: n=20,000 fully connected (ReLU, depth 3), NNGP and NTK, computed in memory-bounded tiles
  (1 GiB working-set budget) into host memory.
* ``fc_hermite``: Hermite-table catalog entries (tanh, SiLU, swish) through the layer API, FC depth 3,
  NNGP+NTK: ``after`` is the matrix path (per-input coefficients, an (n, n) Horner accumulator, adaptive
  number of terms) at n=1000 on the issue's inputs (set A, entries N(0, 1/256): per-layer variances ~0.01)
  and on inputs of norm √d (set D: variances ~2, where many more terms are needed); ``before`` is the
  previous elementwise path ((n, n, J) arrays), timed at n=200 only (it takes minutes beyond that),
  with the matrix path at n=200 beside it.
* ``fc_hermite_large``: tanh at n=20,000 (set A), tiled like ``fc_large``.
* ``fc_1d``: the one-dimensional tier's catalog entries (ELU, SELU, relu(x − ½)), FC depth 3, NNGP+NTK, set
  A, at n=200 and n=1000. Each activation layer takes the closed form (bivariate normal rectangle moments)
  where the batch's variances are within its reach, else the Gauss–Legendre rule over panels (column
  ``nodes``); column ``path`` records which, layer by layer.

Compile time = first call − best later call (the first call compiles every step; later calls hit the
caches). All JAX devices are used (one on a plain CPU; ``--host-devices N`` splits the CPU into N XLA host
devices, ``--xla_force_host_platform_device_count=N``, so the kernels shard over them; column ``devices``).
Activations come from ``dualact.catalog`` when it has them, else from the closed-form test doubles (column ``source``).

Usage: ``python benchmarks/kernels.py [--cases fc,fc_engine,myrtle5,fc_large,fc_hermite,fc_hermite_large,fc_1d]
[--repeats 3] [--host-devices N]``.
Results: ``benchmarks/results/kernels.json`` (``--results`` to choose another file; GPU runs go to
``kernels_gpu.json``) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # closed-form test doubles (_duals.py)
RESULTS = ROOT / "benchmarks" / "results" / "kernels.json"
NEURAL_TANGENTS = {"myrtle5": 48.0}

# name -> (catalog entry, params, test-double factory name)
FC_ACTIVATIONS = {
    "relu": ("relu", {}, "relu"),
    "leaky_relu": ("leaky_relu", {"alpha": 0.1}, "leaky_relu"),
    "abs": ("abs", {}, "abs"),
    "erf": ("erf_family", {"a": 1.0, "b": 1.0, "c": 0.0}, "erf"),
    "gelu": ("gelu", {}, "gelu"),
    "sin": ("sin", {}, "sin"),
    "gaussian": ("gaussian", {}, "gaussian"),
    "gabor": ("gabor", {}, "gabor"),
}
ENGINE_ACTIVATIONS = {"tanh": "tanh(x)", "silu": "x/(1+exp(-x))"}
HERMITE_ACTIVATIONS = {
    "tanh": "tanh(x)",
    "silu": "x/(1 + exp(-x))",
    "swish": "x/(1 + exp(-x))",
}
ONE_DIMENSIONAL = ("elu", "selu", "relu_shifted")  # catalog entries of the one-dimensional tier (quadrature_1d)


def _activation(name):
    """(Activation layer, source) from the catalog if possible, else the test double."""
    from dualact import layers as L

    entry, params, double = FC_ACTIVATIONS[name]
    try:
        from dualact import catalog

        catalog.get(entry)
        return L.Activation(entry, **params), "catalog"
    except Exception:
        import _duals

        d = _duals.get(double)
        if name == "leaky_relu":
            return L.Activation(d, alpha=0.1), "test double"
        return L.Activation(d), "test double"


def _block(out):
    import jax

    return jax.block_until_ready(out)


def _time(fn, repeats):
    t0 = time.perf_counter()
    _block(fn())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(fn())
        runs.append(time.perf_counter() - t0)
    run = min(runs)
    return {"run_s": run, "compile_s": max(first - run, 0.0), "first_call_s": first, "runs_s": runs}


def bench_fc(repeats):
    import numpy as np

    from dualact import layers as L

    x = np.random.default_rng(0).normal(0.0, 1 / 16, size=(1000, 256))
    rows = []
    for name in FC_ACTIVATIONS:
        act, source = _activation(name)
        net = L.fully_connected(3, 512, act, W_std=1.5, b_std=0.05)
        r = _time(lambda net=net: net.kernel_fn(x, None, ("nngp", "ntk")), repeats)
        rows.append({"case": "fc", "activation": name, "source": source, "n": 1000, "d": 256, **r})
    return rows


def bench_fc_engine(repeats):
    import numpy as np

    from dualact import layers as L

    x = np.random.default_rng(0).normal(0.0, 1 / 16, size=(1000, 256))
    rows = []
    for name, expr in ENGINE_ACTIVATIONS.items():
        row = {
            "case": "fc_engine",
            "activation": name,
            "expression": expr,
            "n": 1000,
            "d": 256,
            "target_s": 0.5,
        }
        try:
            t0 = time.perf_counter()
            act = L.Activation(name)
            row["resolve_s"] = time.perf_counter() - t0
            row["source"] = "catalog/derive"
        except Exception as e:  # no catalog entry and no derivation engine yet
            try:
                act = L.Activation(expr)
                row["source"] = "derive"
            except Exception as e2:
                row.update(status="unavailable", error=f"{type(e).__name__}: {e} / {type(e2).__name__}: {e2}")
                rows.append(row)
                continue
        net = L.fully_connected(3, 512, act, W_std=1.5, b_std=0.05)
        row.update(_time(lambda net=net: net.kernel_fn(x, None, ("nngp", "ntk")), repeats))
        rows.append(row)
    return rows


def bench_myrtle(repeats):
    import _duals
    import numpy as np

    from dualact import layers as L

    x = np.random.default_rng(0).normal(size=(20, 32, 32, 3))
    rows = []
    variants = [("catalog relu", lambda: L.Activation("relu")), ("relu, vectorised arctan2", _duals.relu)]
    for label, make in variants:
        try:
            act = make()
        except Exception as e:
            rows.append({"case": "myrtle5", "activation": label, "status": "unavailable", "error": str(e)})
            continue
        net = L.myrtle(5, act=act, out_dim=1)
        est = L.estimate_cost(net, x.shape)
        r = _time(lambda net=net: net.kernel_fn(x, None, ("nngp", "ntk")), max(1, repeats - 1))
        rows.append(
            {
                "case": "myrtle5",
                "activation": label,
                "n": 20,
                "image": "32x32x3",
                **r,
                "neural_tangents_s": NEURAL_TANGENTS["myrtle5"],
                "speedup_vs_nt": NEURAL_TANGENTS["myrtle5"] / r["run_s"],
                "estimate": est.summary(),
                "estimate_gflop": est.flops / 1e9,
            }
        )
    return rows


def bench_fc_large(repeats):
    import _duals
    import numpy as np

    from dualact import layers as L

    try:
        from dualact import catalog

        catalog.get("relu")
        act, source = L.Activation("relu"), "catalog"
    except Exception:
        act, source = L.Activation(_duals.relu()), "test double"
    n = 20_000
    x = np.random.default_rng(0).normal(0.0, 1 / 16, size=(n, 256))
    net = L.fully_connected(3, 512, act, W_std=1.5, b_std=0.05)
    est = L.estimate_cost(net, x.shape)
    t0 = time.perf_counter()
    k = net.kernel_fn(x, None, ("nngp", "ntk"))
    total = time.perf_counter() - t0
    ok = bool(np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all())
    return [
        {
            "case": "fc_large",
            "activation": "relu",
            "source": source,
            "n": n,
            "d": 256,
            "total_s": total,
            "estimate": est.summary(),
            "finite": ok,
            "output_gib": 2 * k.nngp.nbytes / 2**30,
        }
    ]


class _Elementwise:
    """A DualKernel seen through its four kernel functions only: the layer then evaluates it entry by entry
    (the path Hermite-table entries took before the matrix path)."""

    def __init__(self, dual):
        self._d = dual
        self.name = getattr(dual, "name", "elementwise") + " (elementwise)"

    def nngp(self, q11, q12, q22):
        return self._d.nngp(q11, q12, q22)

    def ntk_factor(self, q11, q12, q22):
        return self._d.ntk_factor(q11, q12, q22)

    def diag(self, q):
        return self._d.diag(q)

    def ntk_diag(self, q):
        return self._d.ntk_diag(q)


def _hermite_dual(name):
    """(DualKernel, source): the catalog entry, else the expression derived in memory."""
    try:
        from dualact import catalog

        found = catalog.get(name)
        if found is not None:
            return found, "catalog"
    except Exception:
        pass
    import dualact

    return dualact.derive(HERMITE_ACTIVATIONS[name]), "derive"


def _fc_inputs(n, kind, seed=0):
    import numpy as np

    x = np.random.default_rng(seed).normal(0.0, 1 / 16, size=(n, 256))
    return x if kind == "A" else x * 16  # D: rows of norm ≈ √d


def bench_fc_hermite(repeats):
    from dualact import layers as L

    rows = []
    for name in HERMITE_ACTIVATIONS:
        dual, source = _hermite_dual(name)
        variants = [("after", dual, 1000, "A"), ("after", dual, 1000, "D"), ("after", dual, 200, "A")]
        variants.append(("before", _Elementwise(dual), 200, "A"))
        for path, act, n, kind in variants:
            x = _fc_inputs(n, kind)
            net = L.fully_connected(3, 512, L.Activation(act), W_std=1.5, b_std=0.05)
            reps = repeats if path == "after" else 1
            r = _time(lambda net=net, x=x: net.kernel_fn(x, None, ("nngp", "ntk")), reps)
            rows.append(
                {
                    "case": "fc_hermite",
                    "activation": f"{name} {path} n={n} set {kind}",
                    "source": source,
                    "path": path,
                    "n": n,
                    "d": 256,
                    "inputs": kind,
                    **r,
                }
            )
            print(f"  {rows[-1]['activation']}: {r['run_s']:.3f} s (compile {r['compile_s']:.1f} s)", flush=True)
    return rows


def bench_fc_hermite_large(repeats):
    import numpy as np

    from dualact import layers as L

    dual, source = _hermite_dual("tanh")
    n = 20_000
    x = _fc_inputs(n, "A")
    net = L.fully_connected(3, 512, L.Activation(dual), W_std=1.5, b_std=0.05)
    t0 = time.perf_counter()
    k = net.kernel_fn(x, None, ("nngp", "ntk"))
    total = time.perf_counter() - t0
    ok = bool(np.isfinite(k.nngp).all() and np.isfinite(k.ntk).all())
    return [
        {
            "case": "fc_hermite_large",
            "activation": "tanh (hermite)",
            "source": source,
            "n": n,
            "d": 256,
            "total_s": total,
            "finite": ok,
            "output_gib": 2 * k.nngp.nbytes / 2**30,
        }
    ]


def _one_dimensional_path(dual, x, depth, W_std, b_std):
    """Per activation layer of the FC net, "closed" where the batch's variances lie within the closed form's
    reach (:func:`dualact.runtime.rectangle_moments.within_reach`) for both T and Ṫ, else "rule"."""
    import numpy as np

    from dualact.runtime import rectangle_moments

    kernel = dual.module._KERNEL
    q = W_std**2 * np.mean(np.asarray(x) ** 2, axis=1) + b_std**2  # pre-activation variances of layer 1
    paths = []
    for _ in range(depth):
        reach = all(bool(rectangle_moments.within_reach(kernel.pieces[key], q.min(), q.max()))
                    for key in ("activation", "derivative"))
        paths.append("closed" if reach else "rule")
        q = W_std**2 * np.asarray(dual.diag(q)) + b_std**2
    return "/".join(paths)


def bench_fc_1d(repeats):
    from dualact import catalog
    from dualact import layers as L

    rows = []
    for name in ONE_DIMENSIONAL:
        dual = catalog.get(name)
        for n in (200, 1000):
            x = _fc_inputs(n, "A")
            net = L.fully_connected(3, 512, L.Activation(name), W_std=1.5, b_std=0.05)
            reps = repeats if n <= 200 else 1  # n=1000 takes tens of seconds per call
            r = _time(lambda net=net, x=x: net.kernel_fn(x, None, ("nngp", "ntk")), reps)
            nodes = dual.derivation.accuracy["nodes"]
            path = _one_dimensional_path(dual, x, depth=3, W_std=1.5, b_std=0.05)
            rows.append({"case": "fc_1d", "activation": f"{name} n={n} set A", "source": "catalog", "n": n,
                         "d": 256, "inputs": "A", "nodes": nodes, "path": path, **r})
            print(f"  {rows[-1]['activation']}: {r['run_s']:.3f} s (compile {r['compile_s']:.1f} s; {path})",
                  flush=True)
    return rows


CASES = {
    "fc": bench_fc,
    "fc_engine": bench_fc_engine,
    "myrtle5": bench_myrtle,
    "fc_large": bench_fc_large,
    "fc_hermite": bench_fc_hermite,
    "fc_hermite_large": bench_fc_hermite_large,
    "fc_1d": bench_fc_1d,
}


def _table(rows):
    lines = [f"{'case':10} {'activation':30} {'source':12} {'dev':>3} {'run s':>9} {'compile s':>10}  note"]
    for r in rows:
        run = r.get("run_s", r.get("total_s"))
        run = "-" if run is None else f"{run:9.3f}"
        comp = "-" if "compile_s" not in r else f"{r['compile_s']:10.2f}"
        note = ""
        if "speedup_vs_nt" in r:
            note = f"neural-tangents {r['neural_tangents_s']:.0f} s -> {r['speedup_vs_nt']:.1f}x"
        if r.get("status") == "unavailable":
            note = "unavailable: " + r.get("error", "")[:80]
        if "target_s" in r and "run_s" in r:
            note = f"target < {r['target_s']} s"
        if "nodes" in r:
            note = f"layers {r['path']} (rule: {r['nodes']} nodes per entry)" if "path" in r else \
                f"{r['nodes']} quadrature nodes per entry"
        if r.get("case") in ("fc_large", "fc_hermite_large"):
            note = f"{r['output_gib']:.1f} GiB output, tiled"
        src = r.get("source", "")
        dev = r.get("devices", 1)
        lines.append(f"{r['case']:10} {r['activation']:30} {src:12} {dev:>3} {run:>9} {comp:>10}  {note}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--host-devices", type=int, default=1,
        help="split the CPU into N XLA host devices (the kernels shard over all devices); rows record it",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to update (default %(default)s)")
    args = parser.parse_args(argv)
    results = args.results
    if args.host_devices > 1:
        flag = f"--xla_force_host_platform_device_count={args.host_devices}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()

    import jax

    jax.config.update("jax_enable_x64", True)
    rows = []
    for case in args.cases.split(","):
        new = CASES[case](args.repeats)
        for r in new:
            r["devices"] = len(jax.devices())
        rows.extend(new)
        print(f"done: {case}", flush=True)
    meta = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "loadavg": os.getloadavg(),
        "x64": True,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(results.read_text()) if results.exists() else {}
    ran = {(r["case"], r["devices"]) for r in rows}
    old_rows = [r for r in old.get("rows", []) if (r["case"], r.get("devices", 1)) not in ran]
    results.write_text(json.dumps({"meta": meta, "rows": old_rows + rows}, indent=1))
    print(_table(old_rows + rows))


if __name__ == "__main__":
    main()
