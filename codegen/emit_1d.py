"""Emission of one-dimensional-tier modules (method ``quadrature_1d``).

The module carries σ's pieces as data (``PIECES``) and evaluates T, Ṫ, their diagonals and the
zero-variance means with :class:`dualact.runtime.quadrature_1d.Kernel1D`; the closed forms of
g(μ, s) = E[σ(μ + s z)] and gd(μ, s) = E[σ'(μ + s z)] are printed in the docstring.
"""

from __future__ import annotations

from dualact.symbolic.derivation import Derivation, _from_srepr

from .template import HELPER_FLOATS

CONVENTIONS_1D = """\
  * T = E_z[σ(√q11 z)·g(c z, s)] with c = q12/√q11, s = √((q11 q22 − q12²)/q11) (Ṫ likewise with σ' and gd),
    by composite Gauss–Legendre on z ∈ [−10, 10] with panel edges at the kinks of σ(√q11 z) and around the
    boundary layer of g(c z, s) at z = k/c (dualact.runtime.quadrature_1d); g(μ, 0) = σ(μ) at ρ = ±1.
  * diag, ntk_diag and the zero-variance means are the closed forms g_{σ²}(0, √q), g_{σ'²}(0, √q), g(0, √q).
  * Parameter values are fixed: $fixed."""


def _pieces_text(pieces: dict) -> str:
    lines = ["PIECES = {"]
    for key in ("activation", "derivative", "activation_sq", "derivative_sq"):
        lines.append(f"    {key!r}: (")
        for lo, hi, terms in pieces[key]:
            tt = tuple((float(b), tuple(float(c) for c in cs)) for b, cs in terms)
            lines.append(f"        ({lo!r}, {hi!r}, {tt!r}),")
        lines.append("    ),")
    lines.append("}")
    return "\n".join(lines) + "\n"


def emit_1d(d: Derivation, name: str) -> str:
    """The source text of a ``quadrature_1d`` module (deterministic)."""
    from dualact.errors import CatalogError

    from .emit import _fixed_params, _header, _pointwise_blocks, _wrap

    info = d.conditional
    if d.activation is None or not info:
        raise CatalogError("a quadrature_1d entry needs its activation and its conditional-mean record")
    fixed = _fixed_params(d)
    blocks = _pointwise_blocks(d)
    for fname, doc in (
        ("nngp(q11, q12, q22)", "NNGP dual kernel T(q11, q12, q22) = E[σ(u)σ(v)] (one-dimensional quadrature)."),
        ("ntk_factor(q11, q12, q22)", "NTK factor Ṫ(q11, q12, q22) = E[σ'(u)σ'(v)] (one-dimensional quadrature)."),
        ("diag(q)", "T(q, q, q) = E[σ(u)²] for u ~ N(0, q) (closed form)."),
        ("ntk_diag(q)", "Ṫ(q, q, q) = E[σ'(u)²] for u ~ N(0, q) (closed form)."),
    ):
        call = fname.split("(")[0]
        args = fname.split("(")[1].rstrip(")")
        blocks.append(f'def {fname}:\n    """{doc}"""\n    return _KERNEL.{call}({args})')
    body = "\n\n\n".join(blocks)
    imports = ["import jax.numpy as jnp"]
    if "jsp." in body:
        imports.append("import jax.scipy.special as jsp")
    imports += ["", "from dualact.runtime import quadrature_1d"]
    if "_num." in body:
        imports.append("from dualact.runtime import numerics as _num")
    fixed_text = ", ".join(f"{k} = {v!r}" for k, v in sorted(fixed.items())) or "none (no parameters)"
    formulas = [
        _wrap("g(μ, s) = E[σ(μ + s z)]", _from_srepr(info["g"])),
        _wrap("gd(μ, s) = E[σ'(μ + s z)]", _from_srepr(info["gd"])),
    ]
    conv = CONVENTIONS_1D.replace("$fixed", fixed_text)
    head = _header(d, name, "\n".join(imports), conv, extra_formulas=formulas)
    kinks = tuple(float(k) for k in info.get("kinks", d.kinks))
    head += f"FIXED = {fixed!r}\nKINKS = {kinks!r}\nCONTINUOUS = {bool(info.get('continuous'))!r}\n"
    data = "\n\n" + _pieces_text(info["pieces"]) + "\n_KERNEL = quadrature_1d.Kernel1D(PIECES, KINKS, CONTINUOUS)\n"
    return head + HELPER_FLOATS + data + "\n\n" + body + "\n"
