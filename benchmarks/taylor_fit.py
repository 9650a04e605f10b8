"""Fold vs NNLS closure of the Taylor series of κ and κ' (dualact.sketch.taylor), ReLU and friends.

For each degree q: max / RMS error of κ and κ' on [−1, 1], and the downstream error of the depth-3 ReLU NTK
(Zandieh et al.'s α recursion) when κ1, κ0 are replaced by the degree-q polynomials (no sketching noise), on
n = 300 inputs in R^16 (relative Frobenius error). Also the plain truncated Taylor series for reference.

Usage: ``python benchmarks/taylor_fit.py``; results in ``benchmarks/results/taylor_fit.json``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np

from dualact import catalog
from dualact.sketch.taylor import approximation_error, exact_functions, taylor_approximation

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "taylor_fit.json"


def deep_ntk(rho, kappa, kappa_prime, depth=3):
    """Normalised depth-L NTK with κ1 = 2κ, κ0 = 2κ' (ReLU has κ(1) = 1/2)."""
    theta, a = rho, rho
    for _ in range(depth):
        theta = theta * 2 * kappa_prime(a) + 2 * kappa(a)
        a = np.clip(2 * kappa(a), -1, 1)
    return theta


def main():
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rho = np.clip(x @ x.T, -1, 1)
    f, fp = exact_functions("relu", {})
    exact = deep_ntk(rho, f, fp)
    rows = []
    for q in (2, 4, 8, 16, 32):
        kappa, kprime = catalog.get("relu").taylor_coefficients(q + 1)
        pv = np.polynomial.polynomial.polyval
        trunc = deep_ntk(rho, functools.partial(pv, c=kappa), functools.partial(pv, c=kprime))
        row = {"degree": q, "truncated_ntk_err": float(np.linalg.norm(trunc - exact) / np.linalg.norm(exact))}
        for method in ("fold", "nnls"):
            a = taylor_approximation("relu", q, method=method)
            approx = deep_ntk(rho, a.kappa_fn, a.kappa_prime_fn)
            approx = np.asarray(approx)
            row[method] = {**approximation_error(a),
                           "ntk_depth3_rel_err": float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))}
        rows.append(row)
        print(f"q={q:>2}  κ' max: fold {row['fold']['kappa_prime_max']:.2e} nnls {row['nnls']['kappa_prime_max']:.2e}"
              f"  | NTK err: truncated {row['truncated_ntk_err']:.2e} fold {row['fold']['ntk_depth3_rel_err']:.2e}"
              f" nnls {row['nnls']['ntk_depth3_rel_err']:.2e}")
    OUT.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
