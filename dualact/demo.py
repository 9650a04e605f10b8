"""``dualact demo``: derive a new activation, use it in a deep kernel on handwritten digits, plot it.

The demo runs in well under two minutes on two CPU cores:

1. derives the dual kernel of the *Snake* activation σ(x) = x + sin²(x) (Ziyin et al., 2020), which is in
   no catalog, with :func:`dualact.derive`, and prints its formulas, method and accuracy;
2. computes the NNGP and NTK of a deep fully connected network with that activation
   (:func:`dualact.layers.fully_connected`) on scikit-learn's bundled ``load_digits`` (no download);
3. fits kernel regression (:func:`dualact.predict.kernel_ridge`) and prints the test accuracy (≈ 99 %);
4. writes three PNG plots (matplotlib, Agg backend) into ``out_dir``:

   * ``activation_hermite.png``: σ and its truncated Hermite expansions Σ_{j<J} c_j(1) h_j(x);
   * ``dual_kernel.png``: T(q, ρq, q) and Ṫ(q, ρq, q) against ρ at several variances q;
   * ``hermite_vs_monte_carlo.png``: relative error of the truncated Hermite dual kernel against its degree,
     and of a Monte Carlo (random features) estimate against the number of features, both measured
     against the exact ``nngp`` on digits projected onto the sphere (the setting of Han et al. 2022, Fig. 1).

``run_demo(quick=True)`` is a reduced version (fewer points, smaller network) used by the test suite.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dualact.errors import DualactError

__all__ = ["DEMO_EXPRESSION", "DemoResult", "run_demo"]

#: the activation the demo derives: Snake (Ziyin, Hartwig and Ueda, NeurIPS 2020) with a = 1
DEMO_EXPRESSION = "x + sin(x)**2"


@dataclass
class DemoResult:
    """What :func:`run_demo` computed."""

    expression: str
    method: str
    error_bound: float | None
    accuracy: dict[str, float]  # test accuracy per kernel ("nngp", "ntk")
    n_train: int
    n_test: int
    plots: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out_dir: str | Path = "demo_out",
    n_train: int | None = None,
    quick: bool = False,
    *,
    expression: str = DEMO_EXPRESSION,
    print_fn: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demonstration and write its plots into ``out_dir`` (created if needed).

    Args:
      out_dir: folder for the PNG files.
      n_train: training points taken from the 1797 digits (default 1500, quick mode 300); the test set is
        the rest (at most 200 points in quick mode).
      quick: smaller network, data and plots (a few seconds; used by the tests).
      expression: the activation to derive (any expression :func:`dualact.derive` accepts).
      print_fn: where the report lines go.

    Returns a :class:`DemoResult` with the test accuracies and the paths of the plots.
    """
    import jax

    previous = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)  # the error curves go down to ~1e-14
    try:
        return _run(Path(out_dir), n_train, quick, expression, print_fn)
    finally:
        jax.config.update("jax_enable_x64", previous)


# ---------------------------------------------------------------------------------------------------------


def _requirements():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DualactError("the demo needs matplotlib: pip install 'dualact[plot]'") from None
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise DualactError("the demo needs scikit-learn: pip install 'dualact[sklearn]'") from None
    return plt


def _run(out: Path, n_train, quick, expression, say) -> DemoResult:
    plt = _requirements()
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    x_train, y_train, x_test, y_test = _digits(n_train, quick)  # checks n_train before any work

    # 1. derive ------------------------------------------------------------------------------------------
    say(f"1. deriving the dual kernel of σ(x) = {expression}")
    k = _derive(expression)
    seconds["derive"] = time.perf_counter() - t0
    _describe(k, say)
    say(f"   ({seconds['derive']:.1f} s)")

    # 2. deep kernel on digits ---------------------------------------------------------------------------
    t = time.perf_counter()
    depth = 2 if quick else 3
    say("")
    say(
        f"2. NNGP and NTK of a depth-{depth} fully connected network (W_std=1.5, b_std=0.1) on "
        f"{len(x_train)} + {len(x_test)} handwritten digits (8×8 pixels)"
    )
    from dualact import layers as L
    from dualact import predict

    net = L.fully_connected(depth, 512, k, W_std=1.5, b_std=0.1)
    x_all = np.concatenate([x_train, x_test])
    kern = net.kernel_fn(x_all, None, ("nngp", "ntk"))
    n = len(x_train)
    seconds["kernel"] = time.perf_counter() - t
    say(f"   kernel matrices {x_all.shape[0]}×{x_all.shape[0]} in {seconds['kernel']:.1f} s")

    # 3. kernel regression -------------------------------------------------------------------------------
    t = time.perf_counter()
    targets = np.eye(10)[y_train] - 0.1  # centred one-hot
    accuracy = {}
    say("")
    say("3. kernel regression (ridge = 1e-2 × mean training variance), test accuracy:")
    for get in ("nngp", "ntk"):
        K = np.asarray(getattr(kern, get))
        k_tr, k_te = K[:n, :n], K[n:, :n]
        ridge = 1e-2 * float(np.mean(np.diag(k_tr)))
        pred = np.asarray(predict.kernel_ridge(k_tr, targets, k_te, ridge=ridge))
        accuracy[get] = float(np.mean(np.argmax(pred, axis=1) == y_test))
        label = "NNGP (Bayesian posterior mean)" if get == "nngp" else "NTK (trained network, t → ∞)"
        say(f"   {label:<33} {100 * accuracy[get]:.1f} %")
    seconds["regression"] = time.perf_counter() - t

    # 4. plots -------------------------------------------------------------------------------------------
    t = time.perf_counter()
    say("")
    say(f"4. plots in {out}/")
    plots = [
        _plot_hermite_approximation(plt, k, out / "activation_hermite.png", quick),
        _plot_dual_kernel(plt, k, out / "dual_kernel.png"),
        _plot_error_curves(plt, k, x_train, out / "hermite_vs_monte_carlo.png", quick, say),
    ]
    seconds["plots"] = time.perf_counter() - t
    for p in plots:
        say(f"   {p}")
    seconds["total"] = time.perf_counter() - t0
    say(f"done in {seconds['total']:.1f} s")
    return DemoResult(
        expression=expression,
        method=k.method,
        error_bound=k.error_bound,
        accuracy=accuracy,
        n_train=len(x_train),
        n_test=len(x_test),
        plots=plots,
        seconds=seconds,
    )


# ---- step 1 ----------------------------------------------------------------------------------------------


def _derive(expression: str):
    """``dualact.derive(expression)`` (cached on disk after the first run)."""
    import dualact

    return dualact.derive(expression)


def _describe(k, say) -> None:
    import sympy as sp

    d = k.derivation
    say(f"   method:     {k.method} (tier: {k.tier})")
    if k.method == "hermite":
        meta = d.hermite or {}
        say(
            "   T:          Σ_j c_j(√q11) c_j(√q22) ρ^j, "
            f"{meta.get('J', '?')} Hermite terms (NTK: {meta.get('J_ntk', '?')})"
        )
    elif k.method == "quadrature_1d":
        from dualact.symbolic.conditional import formula_lines

        for name, text in formula_lines(d):
            say(f"   {name + ':':15s} {text}")
    else:
        say(f"   T(q11,q12,q22) = {sp.sstr(k.expression)}")
        say(f"   Ṫ(q11,q12,q22) = {sp.sstr(k.ntk_expression)}")
        if k.diag_expression is not None:
            say(f"   T(q,q,q)       = {sp.sstr(k.diag_expression)}")
    bound = k.error_bound
    say(f"   accuracy:   {'not recorded' if bound is None else f'max. relative error {bound:.1e}'}")
    if k.homogeneity is not None:
        say(f"   positively homogeneous of degree {k.homogeneity}")


# ---- step 2 ----------------------------------------------------------------------------------------------


def _digits(n_train, quick):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # pixel intensities in [0, 1]
    if n_train is None:
        n_train = 300 if quick else 1500
    if not 10 <= n_train <= len(x) - 10:
        raise DualactError(f"n_train must be between 10 and {len(x) - 10}; got {n_train}")
    n_test = min(len(x) - n_train, 200) if quick else len(x) - n_train
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, train_size=n_train, test_size=n_test, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te


# ---- step 4 ----------------------------------------------------------------------------------------------


def _plot_hermite_approximation(plt, k, path: Path, quick: bool) -> Path:
    xs = np.linspace(-4, 4, 401)
    terms = (2, 4, 8) if quick else (2, 4, 8, 16)
    c = k.hermite_coefficients(1.0, max(terms))
    from dualact.symbolic.hermite_quadrature import hermite_matrix

    h = hermite_matrix(xs, max(terms))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(xs, np.asarray(k.activation(xs)), "k", lw=2.5, label="σ(x)")
    for J in terms:
        ax.plot(xs, c[:J] @ h[:J], "--", lw=1.3, label=f"Σ_(j<{J}) c_j(1) h_j(x)")
    ax.axvspan(-2, 2, color="0.92", zorder=0, label="|x| < 2 (95 % of N(0, 1))")
    lo, hi = np.min(k.activation(xs)), np.max(k.activation(xs))
    ax.set_ylim(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo))
    ax.set_xlabel("x")
    ax.set_title(f"σ(x) = {k.derivation.source} and its Hermite expansion (unit scale)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_dual_kernel(plt, k, path: Path) -> Path:
    rho = np.linspace(-1, 1, 201)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for q in (0.25, 1.0, 4.0):
        axes[0].plot(rho, np.asarray(k.nngp(q, rho * q, q)), label=f"q = {q:g}")
        axes[1].plot(rho, np.asarray(k.ntk_factor(q, rho * q, q)), label=f"q = {q:g}")
    axes[0].set_ylabel("T(q, ρq, q) = E[σ(u)σ(v)]")
    axes[1].set_ylabel("Ṫ(q, ρq, q) = E[σ'(u)σ'(v)]")
    for ax, what in zip(axes, ("NNGP map", "NTK factor"), strict=True):
        ax.set_xlabel("correlation ρ of the pre-activations (u, v)")
        ax.set_title(what)
        ax.legend()
    fig.suptitle(f"dual kernel of σ(x) = {k.derivation.source}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_error_curves(plt, k, x_train, path: Path, quick: bool, say) -> Path:
    import jax

    n = 150 if quick else 400
    x = np.asarray(x_train[:n], dtype=np.float64)
    d = x.shape[1]
    x = x / np.linalg.norm(x, axis=1, keepdims=True) * math.sqrt(d)  # every pre-activation has variance 1
    rho = np.clip(x @ x.T / d, -1.0, 1.0)
    exact = np.array(k.nngp(1.0, rho, 1.0))
    np.fill_diagonal(exact, float(k.diag(1.0)))
    norm = np.linalg.norm(exact)

    # truncated Hermite series: T ≈ Σ_{j≤q} c_j(1)² ρ^j on the unit sphere
    degrees = np.arange(0, 13 if quick else 25)
    c = k.hermite_coefficients(1.0, int(degrees[-1]) + 1)
    herm = np.zeros_like(rho)
    power = np.ones_like(rho)
    h_err = []
    for j in degrees:
        herm = herm + c[j] ** 2 * power
        power = power * rho
        h_err.append(np.linalg.norm(herm - exact) / norm)

    # Monte Carlo: (1/m) Σ_i σ(⟨w_i, x⟩/√d) σ(⟨w_i, y⟩/√d), w_i ~ N(0, I)
    features = 2 ** np.arange(4, 12 if quick else 15)
    key = jax.random.PRNGKey(0)
    w = np.asarray(jax.random.normal(key, (d, int(features[-1])), dtype=np.float64))
    phi_all = np.asarray(k.activation(x @ w / math.sqrt(d)))
    mc_err = []
    for m in features:
        phi = phi_all[:, :m]
        mc_err.append(np.linalg.norm(phi @ phi.T / m - exact) / norm)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    floor = 1e-16
    axes[0].semilogy(degrees, np.maximum(h_err, floor), "o-", label="truncated Hermite series")
    axes[0].set_xlabel("Hermite degree q (terms j = 0 … q)")
    axes[0].set_ylabel("relative Frobenius error ‖K̂ − K‖ / ‖K‖")
    axes[0].set_title("Hermite expansion")
    axes[1].loglog(features, mc_err, "s-", color="C1", label="Monte Carlo features")
    axes[1].loglog(features, mc_err[0] * np.sqrt(features[0] / features), ":", color="0.5", label="∝ m^(−1/2)")
    for qd, style in ((2, "--"), (4, "-."), (8, ":")):
        if qd < len(h_err):
            axes[1].axhline(max(h_err[qd], floor), color="C0", ls=style, lw=1, label=f"Hermite, q = {qd}")
    axes[1].set_xlabel("number of random features m")
    axes[1].set_title("Monte Carlo (random features)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"approximating the NNGP of σ(x) = {k.derivation.source} on {n} digits (unit variance)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    say(
        f"   Hermite error: {h_err[2]:.1e} (q = 2), {h_err[8]:.1e} (q = 8), {h_err[-1]:.1e} (q = {degrees[-1]}); "
        f"Monte Carlo: {mc_err[-1]:.1e} with m = {features[-1]} features"
    )
    return path
