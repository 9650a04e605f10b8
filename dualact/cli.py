"""The ``dualact`` command line.

    dualact add NAME EXPR [--param k=v ...] [--force]   derive σ, generate its module, register it
    dualact show NAME [--plot out.png]                   formulas, method, accuracy, provenance, file
    dualact catalog list                                 table of entries
    dualact catalog regenerate [--jobs N] [--rederive]   rebuild modules (progress bar on a terminal)
    dualact catalog check                                exit 1 if a module is stale, edited or missing

Exit codes: 0 success, 1 ``catalog check``/``regenerate`` found problems, 2 bad input (any
:class:`dualact.errors.DualactError` or a usage error), reported as one line on stderr.

Subcommands live in a registry: a new one (e.g. ``dualact demo``) is a function decorated with
:func:`command`, without touching the parser code::

    @command("demo", help="run a small demonstration")
    def _demo(args, out):
        out.print("hello")
        return 0
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dualact.errors import DualactError

__all__ = ["Output", "command", "build_parser", "main"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


# ---------------------------------------------------------------------------------------------------------
# output


class Output:
    """Writes to stdout/stderr; colours only when the stream is a terminal (and ``NO_COLOR`` is unset)."""

    _CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, stdout=None, stderr=None):
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.color = _isatty(self.stdout) and not os.environ.get("NO_COLOR")

    def style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(self._CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def print(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def error(self, text: str) -> None:
        print(f"dualact: error: {text}", file=self.stderr)


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------------
# the command registry


@dataclass
class Command:
    path: tuple[str, ...]
    help: str
    run: Callable[[argparse.Namespace, Output], int | None]
    arguments: list[tuple[tuple, dict]] = field(default_factory=list)
    description: str | None = None


_COMMANDS: dict[tuple[str, ...], Command] = {}
_GROUPS: dict[tuple[str, ...], str] = {("catalog",): "inspect and maintain the catalog of generated kernels"}


def command(*path: str, help: str, description: str | None = None, arguments: list | None = None):
    """Register a (sub)command: ``@command("catalog", "list", help=...)`` on ``run(args, out) -> exit code``.

    ``arguments``: ``[(args, kwargs), ...]`` passed to ``parser.add_argument``.
    """

    def deco(run):
        _COMMANDS[path] = Command(path, help, run, list(arguments or []), description)
        return run

    return deco


def arg(*args, **kwargs) -> tuple[tuple, dict]:
    return args, kwargs


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump, exit code 2 (handled in main)
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    from dualact import __version__

    parser = _Parser(
        prog="dualact",
        description="Infinite-width NNGP/NTK dual kernels for any activation: derive, generate and inspect.",
        epilog="Exit codes: 0 ok, 1 check/regenerate found problems, 2 bad input.",
    )
    parser.add_argument("--version", action="version", version=f"dualact {__version__}")
    subparsers: dict[tuple[str, ...], argparse._SubParsersAction] = {}

    def subparsers_of(path: tuple[str, ...], p: argparse.ArgumentParser):
        if path not in subparsers:
            subparsers[path] = p.add_subparsers(title="commands", metavar="COMMAND")
        return subparsers[path]

    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): parser}
    for path in sorted(_COMMANDS, key=lambda t: (len(t), t)):
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            if prefix in parsers:
                continue
            cmd = _COMMANDS.get(prefix)
            helptext = cmd.help if cmd else _GROUPS.get(prefix, "")
            sp = subparsers_of(prefix[:-1], parsers[prefix[:-1]]).add_parser(
                prefix[-1], help=helptext, description=(cmd.description if cmd else None) or helptext
            )
            parsers[prefix] = sp
            if cmd is not None:
                for a, kw in cmd.arguments:
                    sp.add_argument(*a, **kw)
                sp.set_defaults(_run=cmd.run)
            else:
                sp.set_defaults(_group=sp)
    parser.set_defaults(_group=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dualact`` console script; returns the exit code."""
    out = Output()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        out.error(str(exc))
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0)
    run = getattr(args, "_run", None)
    if run is None:  # a group without its subcommand: show its help
        args._group.print_help(out.stdout)
        given = sys.argv[1:] if argv is None else argv
        return EXIT_OK if not given else EXIT_BAD_INPUT
    try:
        return int(run(args, out) or 0)
    except DualactError as exc:
        out.error(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130


# ---------------------------------------------------------------------------------------------------------
# helpers


def _parse_params(items: list[str] | None) -> dict[str, float | None]:
    params: dict[str, float | None] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name.isidentifier():
            raise DualactError(f"invalid --param {item!r}: expected NAME=VALUE (or NAME for a free one)")
        if not sep or value.strip() == "":
            params[name] = None
            continue
        try:
            params[name] = float(value)
        except ValueError:
            raise DualactError(f"invalid --param {item!r}: {value!r} is not a number") from None
    return params


def _fmt_err(v) -> str:
    return "-" if v is None else f"{v:.1e}"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _catalog_dir(args) -> Path:
    from dualact.codegen import writer

    return Path(args.catalog_dir) if getattr(args, "catalog_dir", None) else writer.default_target_dir()


_CATALOG_DIR_ARG = arg(
    "--catalog-dir",
    metavar="DIR",
    help="catalog directory to use (default: catalog/ in a source checkout, else $DUALACT_CATALOG or "
    "~/.cache/dualact/catalog)",
)


# ---------------------------------------------------------------------------------------------------------
# commands


@command(
    "add",
    help="derive a dual kernel, generate its module and register it",
    description="Derive the NNGP/NTK dual kernel of EXPR (a function of x), generate a JAX module and "
    "register it in the catalog as NAME. Nothing is written if the derivation fails.",
    arguments=[
        arg("name", metavar="NAME", help="catalog name (lower-case snake_case)"),
        arg("expression", metavar="EXPR", help='activation σ(x), e.g. "x*sigmoid(b*x)"'),
        arg(
            "--param", "-p", action="append", metavar="NAME=VALUE",
            help="parameter with a default value (repeatable); NAME alone: no default (required in calls)",
        ),
        arg("--force", action="store_true", help="replace an existing entry of the same name"),
        _CATALOG_DIR_ARG,
    ],
)
def _add(args, out: Output) -> int:
    from dualact.codegen import writer

    params = _parse_params(args.param)
    directory = _catalog_dir(args)
    try:
        import dualact.symbolic.derive  # noqa: F401
    except ImportError as exc:
        raise DualactError(f"the derivation engine is not available ({exc})") from None
    directory, rec = writer.add_entry(
        args.name, args.expression, params, force=args.force, directory=directory
    )
    out.print(f"{out.style('added', 'green')} {out.style(args.name, 'bold')} → {directory / rec['file']}")
    out.print(f"  method:   {rec['method']} (tier: {rec['tier']})")
    out.print(f"  accuracy: {_accuracy_line(rec)}")
    return EXIT_OK


def _accuracy_line(rec) -> str:
    acc = rec.get("accuracy") or {}
    bound = rec.get("error_bound")
    parts = [f"error bound {_fmt_err(bound)}"] if bound is not None else []
    parts += [f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(acc.items())]
    return "; ".join(parts) or "not recorded"


@command(
    "show",
    help="show an entry: formulas, method, accuracy, provenance, file",
    arguments=[
        arg("name", metavar="NAME", help="catalog entry"),
        arg(
            "--plot", metavar="FILE",
            help="also draw σ, its Hermite approximation and T(ρ) at a few variances (needs matplotlib)",
        ),
    ],
)
def _show(args, out: Output) -> int:
    import sympy as sp

    import dualact.catalog
    from dualact.codegen import writer

    found = writer.find_entry(args.name)
    if found is None:
        raise DualactError(f"no catalog entry named {args.name!r}; `dualact catalog list` shows the entries")
    rec = found.record
    k = dualact.catalog.get(args.name)
    d = k.derivation
    label = lambda s: out.style(f"{s:<13}", "bold")  # noqa: E731
    out.print(f"{out.style(args.name, 'bold', 'cyan')}  ({rec.get('kind', k.kind)})")
    out.print(f"{label('source')}{d.source}")
    if d.activation is not None:
        out.print(f"{label('σ(x)')}{sp.sstr(d.activation)}")
    if d.params:
        ps = ", ".join(f"{p}={v}" if v is not None else f"{p} (required)" for p, v in rec["params"].items())
        out.print(f"{label('parameters')}{ps}")
    out.print(f"{label('method')}{d.method} (tier: {d.tier})")
    if d.homogeneity is not None:
        out.print(f"{label('homogeneous')}degree {d.homogeneity}")
    out.print(f"{label('accuracy')}{_accuracy_line(rec)}")
    if d.method == "quadrature_1d":
        from dualact.symbolic.conditional import formula_lines

        for name, text in formula_lines(d):
            out.print(f"{label(name)}{text}")
    elif d.method != "hermite":
        out.print(f"{label('T')}{sp.sstr(d.nngp)}")
        out.print(f"{label('Ṫ')}{sp.sstr(d.ntk_factor)}")
        out.print(f"{label('T(q,q,q)')}{sp.sstr(d.diag)}")
        out.print(f"{label('Ṫ(q,q,q)')}{sp.sstr(d.ntk_diag)}")
    else:
        meta = d.hermite or {}
        out.print(f"{label('T, Ṫ')}Hermite series, J = {meta.get('J')} / {meta.get('J_ntk')} terms")
    out.print(f"{label('file')}{found.module_path}")
    prov = (
        f"dualact.codegen {rec.get('generator_version')}, engine {rec.get('engine_version') or '-'}, "
        f"sympy {rec.get('sympy_version')}, derivation sha256:{rec.get('derivation_sha256', '')[:16]}…"
    )
    out.print(f"{label('provenance')}{prov}")
    if args.plot:
        path = _plot(k, args.plot)
        out.print(f"{label('plot')}{path}")
    return EXIT_OK


def _plot(k, filename: str) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DualactError("--plot needs matplotlib: pip install 'dualact[plot]'") from None
    import numpy as np

    params = {p: (v if v is not None else 1.0) for p, v in k.defaults.items()}
    params.update({p: 1.0 for p in k.params if p not in params})
    ncols = 2 if k.has_activation else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.8), squeeze=False)
    axes = axes[0]
    if k.has_activation:
        xs = np.linspace(-3, 3, 301)
        J = 8
        c = k.hermite_coefficients(1.0, J, dps=20, **{p: params[p] for p in k.params})
        h_prev, h = np.ones_like(xs), xs.copy()
        approx = c[0] * h_prev + (c[1] * h if J > 1 else 0)
        for j in range(1, J - 1):
            h_prev, h = h, (xs * h - np.sqrt(j) * h_prev) / np.sqrt(j + 1)
            approx = approx + c[j + 1] * h
        axes[0].plot(xs, np.asarray(k.activation(xs, **params)), label="σ(x)")
        axes[0].plot(xs, approx, "--", label=f"Hermite, {J} terms")
        axes[0].set_xlabel("x")
        axes[0].legend()
        axes[0].set_title(k.name)
    ax = axes[-1]
    rho = np.linspace(-1, 1, 201)
    for qv in (0.25, 1.0, 4.0):
        ax.plot(rho, np.asarray(k.nngp(qv, rho * qv, qv, **params)), label=f"q = {qv:g}")
    ax.set_xlabel("ρ")
    ax.set_ylabel("T(q, ρq, q)")
    ax.legend()
    fig.tight_layout()
    path = Path(filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@command(
    "catalog", "list",
    help="list the catalog entries",
    arguments=[arg("--names-only", action="store_true", help="print only the names, one per line")],
)
def _catalog_list(args, out: Output) -> int:
    from dualact.codegen import writer

    entries = writer.all_entries()
    if args.names_only:
        for name in entries:
            out.print(name)
        return EXIT_OK
    builtin = writer.builtin_catalog_dir()
    rows = []
    for name, loc in entries.items():
        rec = loc.record
        expr = rec.get("source") or ""
        if rec.get("params"):
            expr += "  [" + ", ".join(
                f"{p}={v:g}" if isinstance(v, (int, float)) else p for p, v in rec["params"].items()
            ) + "]"
        where = "" if loc.directory == builtin else " (user)"
        err = _fmt_err(rec.get("error_bound"))
        rows.append((name + where, _truncate(expr, 60), rec.get("method", ""), err))
    header = ("name", "expression", "method", "error bound")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    out.print(out.style(fmt(header), "bold"))
    for r in rows:
        out.print(fmt(r))
    return EXIT_OK


@command(
    "catalog", "regenerate",
    help="rebuild generated modules from their recorded derivations",
    description="Rebuild every module (or the NAMEs given) from the Derivation recorded in the registry; "
    "with --rederive, derive again (in the built-in catalog: every entry of dualact.codegen.entries).",
    arguments=[
        arg("names", nargs="*", metavar="NAME", help="only these entries"),
        arg("--jobs", "-j", type=int, default=1, metavar="N", help="worker processes (default 1)"),
        arg("--rederive", action="store_true", help="run the engine again instead of reusing the records"),
        _CATALOG_DIR_ARG,
    ],
)
def _catalog_regenerate(args, out: Output) -> int:
    from dualact.codegen import writer

    if args.jobs < 1:
        raise DualactError("--jobs must be at least 1")
    directory = _catalog_dir(args)
    if not directory.exists():
        raise DualactError(f"catalog directory {directory} does not exist")
    total = len(writer.read_registry(directory)["entries"])
    if args.rederive and directory.resolve() == writer.builtin_catalog_dir():
        from dualact.codegen import entries

        total = len(set(writer.read_registry(directory)["entries"]) | set(entries.names()))
    if args.names:
        total = len(args.names)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="entry", disable=not _isatty(sys.stderr), file=sys.stderr, desc="regenerate")
    try:
        written, errors = writer.regenerate(
            directory, names=args.names or None, rederive=args.rederive, jobs=args.jobs,
            progress=lambda name: (bar.set_postfix_str(name), bar.update(1)),
        )
    finally:
        bar.close()
    out.print(f"regenerated {len(written)} entr{'y' if len(written) == 1 else 'ies'} in {directory}")
    for name, msg in sorted(errors.items()):
        out.print(f"  {out.style('failed', 'red')} {name}: {msg}")
    return EXIT_CHECK_FAILED if errors else EXIT_OK


@command(
    "catalog", "check",
    help="exit 1 and list entries whose module is stale, edited or missing",
    arguments=[_CATALOG_DIR_ARG],
)
def _catalog_check(args, out: Output) -> int:
    from dualact.codegen import writer

    if args.catalog_dir:
        dirs = [Path(args.catalog_dir)]
        if not dirs[0].is_dir():
            raise DualactError(f"catalog directory {dirs[0]} does not exist")
    else:
        dirs = [d for d in writer.catalog_dirs() if d.exists()]
    problems, count = [], 0
    for directory in dirs:
        count += len(writer.read_registry(directory)["entries"])
        problems += [(directory, p) for p in writer.check_directory(directory)]
    for directory, p in problems:
        out.print(f"{out.style(p.status, 'red'):<12} {p.name}: {p.detail} ({directory})")
    if problems:
        out.print(f"{len(problems)} problem(s); run `dualact catalog regenerate` to rebuild the modules")
        return EXIT_CHECK_FAILED
    out.print(f"catalog OK: {count} entries checked in {', '.join(str(d) for d in dirs)}")
    return EXIT_OK


@command(
    "catalog", "remove",
    help="delete an entry (its module, table and registry record)",
    arguments=[arg("name", metavar="NAME"), _CATALOG_DIR_ARG],
)
def _catalog_remove(args, out: Output) -> int:
    from dualact.codegen import writer

    directory = _catalog_dir(args)
    writer.remove_entry(directory, args.name)
    out.print(f"removed {args.name} from {directory}")
    return EXIT_OK


@command(
    "demo",
    help="derive a new activation, fit a deep kernel to handwritten digits and plot it",
    description="Derive the dual kernel of Snake, σ(x) = x + sin²(x), compute the NNGP/NTK of a deep fully "
    "connected network on scikit-learn's digits, report the kernel-regression test accuracy and write PNG "
    "plots (needs scikit-learn and matplotlib).",
    arguments=[
        arg("--out", metavar="DIR", default="demo_out", help="folder for the plots (default: demo_out)"),
        arg("--quick", action="store_true", help="a smaller, faster run"),
        arg("--n-train", type=int, metavar="N", help="training points out of 1797 (default 1500)"),
    ],
)
def _demo(args, out: Output) -> int:
    from dualact.demo import run_demo

    run_demo(args.out, n_train=args.n_train, quick=args.quick, print_fn=out.print)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
