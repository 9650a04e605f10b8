"""Write ``docs/catalog.md`` from the built-in catalog's registry (``catalog/_registry.json``).

Run by ``docs/conf.py`` at every build; can also be run by hand: ``python docs/gen_catalog.py [OUT]``.
The page has a table of all entries (name, expression, method, error bound) and, per entry, the formulas
of T, Ṫ and their diagonals, rendered with :func:`sympy.latex` from the recorded
:class:`~dualact.symbolic.derivation.Derivation`.

:func:`summary_rows` and :func:`markdown_table` need only the standard library; ``gen_readme_catalog.py``
uses them for the table in ``README.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "catalog" / "_registry.json"
DEFAULT_OUT = Path(__file__).resolve().parent / "catalog.md"

METHOD_LABELS = {
    "closed_form": "closed form",
    "one_dimensional": "1-D integral",
    "hermite": "Hermite series",
    "kernel_only": "kernel only",
}


def read_entries(registry: Path = REGISTRY) -> dict[str, dict]:
    """The registry records, sorted by name."""
    data = json.loads(Path(registry).read_text(encoding="utf-8"))
    return dict(sorted(data.get("entries", {}).items()))


_FIXED_METHODS = ("hermite", "quadrature_1d")  # tables/pieces are built at the recorded values


def _fmt_params(params: dict, method: str | None = None) -> str:
    text = ", ".join(p if v is None else f"{p}={v:g}" for p, v in params.items())
    return f"{text} (fixed)" if text and method in _FIXED_METHODS else text


def _fmt_bound(v) -> str:
    return "—" if v is None else ("0 (exact)" if v == 0 else f"{v:.1e}")


def summary_rows(entries: dict[str, dict]) -> list[tuple[str, str, str, str, str]]:
    """``(name, expression, parameters, method, error bound)`` per entry, as plain text."""
    rows = []
    for name, rec in entries.items():
        expr = rec.get("source") or ""
        if rec.get("kind") == "kernel":
            expr = expr.split(":", 1)[-1].strip() + " (kernel only)"
        method = METHOD_LABELS.get(rec.get("method"), rec.get("method", ""))
        if rec.get("tier"):
            method += f" ({rec['tier']})"
        params = _fmt_params(rec.get("params") or {}, rec.get("method"))
        rows.append((name, expr, params, method, _fmt_bound(rec.get("error_bound"))))
    return rows


def _cell(text: str, code: bool = False) -> str:
    text = text.replace("|", "\\|")
    if code and text:
        return f"`{text}`"
    return text or " "


def markdown_table(entries: dict[str, dict], link: bool = False) -> str:
    """A Markdown table of the entries (``link``: names link to their section of the docs page)."""
    lines = ["| name | σ(x) | parameters | method | error bound |", "|---|---|---|---|---|"]
    for name, expr, params, method, bound in summary_rows(entries):
        shown = f"[`{name}`](#catalog-{name.replace('_', '-')})" if link else f"`{name}`"
        lines.append(f"| {shown} | {_cell(expr, True)} | {_cell(params, True)} | {method} | {bound} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# formulas (needs sympy and dualact)


def _latex(expr) -> str:
    import sympy as sp

    from dualact.symbolic.symbols import q11, q12, q22

    names = {q11: "q_{11}", q12: "q_{12}", q22: "q_{22}"}
    return sp.latex(expr, symbol_names=names)


def _math(label: str, expr) -> list[str]:
    return ["$$", f"{label} = {_latex(expr)}", "$$", ""]


def entry_section(name: str, rec: dict) -> list[str]:
    from dualact.symbolic.derivation import Derivation

    d = Derivation.from_json_dict(rec["derivation"])
    out = [f"(catalog-{name.replace('_', '-')})=", f"### `{name}`", ""]
    facts = [f"**source:** `{rec.get('source', '')}`"]
    facts.append(f"**method:** {METHOD_LABELS.get(d.method, d.method)} (tier `{d.tier}`)")
    if rec.get("params"):
        facts.append(f"**parameters:** `{_fmt_params(rec['params'], rec.get('method'))}`")
    if d.homogeneity is not None:
        facts.append(f"**positively homogeneous** of degree {d.homogeneity}")
    facts.append(f"**error bound:** {_fmt_bound(rec.get('error_bound'))}")
    note = (rec.get("accuracy") or {}).get("note")
    if note:
        facts.append(f"**note:** {note}")
    out += [" · ".join(facts), ""]
    if d.activation is not None:
        out += _math(r"\sigma(x)", d.activation)
    if d.method == "hermite":
        meta = d.hermite or {}
        out += [
            "Hermite series with per-scale coefficients (no closed form):",
            "",
            "$$",
            r"T = \sum_{j<J} c_j(\sqrt{q_{11}})\, c_j(\sqrt{q_{22}})\, \rho^j,\qquad "
            r"c_j(s) = \mathbb{E}[\sigma(s z)\, h_j(z)]",
            "$$",
            "",
            f"with J = {meta.get('J', '?')} terms for T and {meta.get('J_ntk', '?')} for Ṫ.",
            "",
        ]
        return out
    if d.method == "quadrature_1d":
        from dualact.symbolic.derivation import _from_srepr

        cond = d.conditional or {}
        out += [
            "One-dimensional tier: with $c = q_{12}/\\sqrt{q_{11}}$ and "
            "$s = \\sqrt{(q_{11} q_{22} - q_{12}^2)/q_{11}}$, evaluated by Gauss–Legendre panels split at the kinks",
            "",
            "$$",
            r"T = \mathbb{E}_z\left[\sigma(\sqrt{q_{11}}\, z)\, g(c z, s)\right],\qquad "
            r"\dot T = \mathbb{E}_z\left[\sigma'(\sqrt{q_{11}}\, z)\, g_d(c z, s)\right]",
            "$$",
            "",
        ]
        for label, key in ((r"g(\mu, s) = \mathbb{E}[\sigma(\mu + s z)]", "g"),
                           (r"g_d(\mu, s) = \mathbb{E}[\sigma'(\mu + s z)]", "gd")):
            if cond.get(key):
                out += _math(label, _from_srepr(cond[key]))
        return out
    for label, expr in (
        (r"T(q_{11}, q_{12}, q_{22})", d.nngp),
        (r"\dot T(q_{11}, q_{12}, q_{22})", d.ntk_factor),
        (r"T(q, q, q)", d.diag),
        (r"\dot T(q, q, q)", d.ntk_diag),
    ):
        if expr is not None:
            out += _math(label, expr)
    return out


HEADER = r"""# Catalog

<!-- generated by docs/gen_catalog.py from catalog/_registry.json at every docs build: do not edit -->

The built-in catalog: every entry is a generated JAX module in `catalog/` with its registry record
(`catalog/_registry.json`), which holds the full derivation. Load one with `dualact.catalog.get(name)`
(a {class}`~dualact.runtime.dual_kernel.DualKernel`) or use its name in
`dualact.layers.Activation(name, **params)`. `dualact catalog list` prints the same table; `dualact show NAME`
prints one entry. Conventions are those of {doc}`concepts`: $(u, v)$ centred Gaussian with covariance
$\begin{pmatrix} q_{11} & q_{12} \\ q_{12} & q_{22} \end{pmatrix}$, $T = \mathbb{E}[\sigma(u)\sigma(v)]$,
$\dot T = \mathbb{E}[\sigma'(u)\sigma'(v)]$ with $\sigma'$ the almost-everywhere derivative.
Parameters without a default must be passed in every call.

The error bound is the largest relative error measured (or certified) when the entry was derived;
"—" means none is recorded yet.

@TABLE@
## Formulas

"""


def render(entries: dict[str, dict]) -> str:
    text = HEADER.replace("@TABLE@", markdown_table(entries, link=True))
    for name, rec in entries.items():
        text += "\n".join(entry_section(name, rec)) + "\n"
    return text


def write(out: Path = DEFAULT_OUT, registry: Path = REGISTRY) -> Path:
    """Write the page if its content changed (keeps Sphinx from rebuilding it needlessly)."""
    text = render(read_entries(registry))
    out = Path(out)
    if not out.exists() or out.read_text(encoding="utf-8") != text:
        out.write_text(text, encoding="utf-8")
    return out


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT))
