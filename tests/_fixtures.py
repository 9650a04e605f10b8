"""Hand-built Derivation records used by the codegen, catalog and CLI tests (independent of the engine)."""

from __future__ import annotations

import sympy as sp

from dualact.symbolic.derivation import Derivation
from dualact.symbolic.symbols import param_symbol, q, q11, q12, q22, x

P = q11 * q22
RHO = q12 / sp.sqrt(P)
pi = sp.pi


def relu() -> Derivation:
    return Derivation(
        source="max(x, 0)",
        method="closed_form",
        tier="polar",
        activation=sp.Max(x, 0),
        derivative=sp.Heaviside(x),
        nngp=(sp.sqrt(P - q12**2) + (pi - sp.acos(RHO)) * q12) / (2 * pi),
        ntk_factor=(pi - sp.acos(RHO)) / (2 * pi),
        diag=q / 2,
        ntk_diag=sp.S.Half,
        mean=sp.sqrt(q) / sp.sqrt(2 * pi),
        ntk_mean=sp.S.Half,
        homogeneity=1,
        kinks=(0.0,),
        accuracy={"max_rel_err_nngp": 2e-15, "points": 6},
        ntk_singular=True,
    )


def step() -> Derivation:
    return Derivation(
        source="Heaviside(x)",
        method="closed_form",
        tier="polar",
        activation=sp.Heaviside(x),
        derivative=sp.S.Zero,
        nngp=(pi - sp.acos(RHO)) / (2 * pi),
        ntk_factor=sp.S.Zero,
        diag=sp.S.Half,
        ntk_diag=sp.S.Zero,
        mean=sp.S.Half,
        ntk_mean=sp.S.Zero,
        homogeneity=0,
        kinks=(0.0,),
        accuracy={"max_rel_err_nngp": 1e-15, "points": 6},
    )


def leaky_relu() -> Derivation:
    a = param_symbol("alpha")
    theta = sp.acos(RHO)
    return Derivation(
        source="max(x, alpha*x)",
        method="closed_form",
        tier="polar",
        activation=sp.Max(x, a * x),
        derivative=sp.Heaviside(x) + a * sp.Heaviside(-x),
        nngp=(a - 1) ** 2 / (2 * pi) * sp.sqrt(P - q12**2)
        + ((a**2 + 1) / 2 - (a - 1) ** 2 * theta / (2 * pi)) * q12,
        ntk_factor=(a**2 + 1) / 2 - (a - 1) ** 2 * theta / (2 * pi),
        diag=(a**2 + 1) * q / 2,
        ntk_diag=(a**2 + 1) / 2,
        mean=(1 - a) * sp.sqrt(q) / sp.sqrt(2 * pi),
        ntk_mean=(1 + a) / 2,
        params=("alpha",),
        param_values={"alpha": 0.01},
        homogeneity=1,
        kinks=(0.0,),
        accuracy={"max_rel_err_nngp": 3e-15},
        ntk_singular=True,
    )


def erf_family() -> Derivation:
    a, b, c = (param_symbol(n) for n in "abc")
    D = (1 + 2 * b**2 * q11) * (1 + 2 * b**2 * q22)
    return Derivation(
        source="a*erf(b*x)+c",
        method="closed_form",
        tier="price",
        activation=a * sp.erf(b * x) + c,
        derivative=2 * a * b * sp.exp(-(b**2) * x**2) / sp.sqrt(pi),
        nngp=a**2 * 2 / pi * sp.asin(2 * b**2 * q12 / sp.sqrt(D)) + c**2,
        ntk_factor=a**2 * b**2 * 4 / pi / sp.sqrt(D - 4 * b**4 * q12**2),
        diag=a**2 * 2 / pi * sp.asin(2 * b**2 * q / (1 + 2 * b**2 * q)) + c**2,
        ntk_diag=a**2 * b**2 * 4 / pi / sp.sqrt((1 + 2 * b**2 * q) ** 2 - 4 * b**4 * q**2),
        mean=c,
        ntk_mean=2 * a * b / sp.sqrt(pi) / sp.sqrt(1 + 2 * b**2 * q),
        params=("a", "b", "c"),
        accuracy={"max_rel_err_nngp": 4e-15},
    )


def gelu() -> Derivation:
    A = (1 + q11) * (1 + q22)
    D2 = A - q12**2
    D = sp.sqrt(D2)
    nngp = q12 / 4 + ((q12**2 + P * D2) / (A * D) + q12 * sp.asin(q12 / sp.sqrt(A))) / (2 * pi)
    ntk = sp.S(1) / 4 + sp.asin(q12 / sp.sqrt(A)) / (2 * pi) + q12 / (2 * pi * D) * (1 / D2 + (1 - P) / A + 1)
    diag = q * (sp.S(1) / 4 + (q / ((q + 1) * sp.sqrt(1 + 2 * q)) + sp.atan(q / sp.sqrt(1 + 2 * q)) / 2) / pi)
    return Derivation(
        source="x*erf(x/sqrt(2))/2 + x/2",
        method="closed_form",
        tier="price",
        activation=x * sp.erf(x / sp.sqrt(2)) / 2 + x / 2,
        derivative=sp.erf(x / sp.sqrt(2)) / 2 + sp.S.Half + x * sp.exp(-(x**2) / 2) / sp.sqrt(2 * pi),
        nngp=nngp,
        ntk_factor=ntk,
        diag=diag,
        ntk_diag=ntk.subs({q11: q, q22: q, q12: q}),
        mean=q / sp.sqrt(2 * pi * (1 + q)),
        ntk_mean=sp.S.Half,
        accuracy={"max_rel_err_nngp": 5e-15},
    )


def normalized_gaussian() -> Derivation:
    g = param_symbol("gamma")
    return Derivation(
        source="kernel: sqrt(q11*q22)*exp(gamma*(rho - 1))",
        method="kernel_only",
        tier="kernel",
        nngp=sp.sqrt(P) * sp.exp(g * (RHO - 1)),
        ntk_factor=g * sp.exp(g * (RHO - 1)),
        diag=q,
        ntk_diag=g,
        mean=sp.sqrt(q) * sp.exp(-g / 2),
        ntk_mean=sp.sqrt(g) * sp.exp(-g / 2),
        params=("gamma",),
        param_values={"gamma": 1.0},
        homogeneity=1,
    )


ALL = {
    "relu": relu,
    "step": step,
    "leaky_relu": leaky_relu,
    "erf_family": erf_family,
    "gelu": gelu,
    "normalized_gaussian": normalized_gaussian,
}
