"""Bad input to the engine: specific ``dualact.errors`` exceptions, nothing cached or written on failure, and the
disk cache itself (a repeated derivation is instant and equal).

The parser's own rejections (positions, reasons, limits, fuzzing of ``parse_activation``) are covered in
``tests/test_parse.py``; here the same inputs go through the public entry points ``dualact.derive`` and
``dualact.symbolic.derive.derive``, and a grammar fuzz drives the stages after parsing (normal form,
second-moment and real-valuedness checks).
"""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dualact
from dualact.errors import (
    ActivationSyntaxError,
    DerivationError,
    DivergentActivationError,
    DualactError,
    MissingParameterError,
    NotAFunctionOfXError,
    NotRealValuedError,
    UnknownFunctionError,
)
from dualact.symbolic.derive import derive
from dualact.symbolic.normalize import check_real_valued, check_second_moment, to_heaviside
from dualact.symbolic.parse import parse_activation


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("DUALACT_CACHE_DIR", str(d))
    return d


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


BAD = [
    ("__import__('os')", ActivationSyntaxError),
    ("x.real", ActivationSyntaxError),
    ("(lambda: x)()", ActivationSyntaxError),
    ("x[0]", ActivationSyntaxError),
    ("x" * 3000, ActivationSyntaxError),
    ("(" * 200 + "x" + ")" * 200, ActivationSyntaxError),
    ("exp(" * 80 + "x" + ")" * 80, ActivationSyntaxError),
    ("open('/etc/passwd')", UnknownFunctionError),
    ("foo(x)", UnknownFunctionError),
    ("gamma(x)", UnknownFunctionError),
    ("exp(x**2)", DivergentActivationError),
    ("exp(x**2/2)", DivergentActivationError),
    ("x*exp(x**2/4 + 1)", DivergentActivationError),
    ("sigmoid(x)/(3*x)", DivergentActivationError),  # a pole inside a non-polynomial denominator 3x(1 + e^-x)
    ("x + y", NotAFunctionOfXError),
    ("sin(t)", NotAFunctionOfXError),
    ("log(x)", NotRealValuedError),
    ("sqrt(x)", NotRealValuedError),
    ("1/x", DivergentActivationError),
    ("1/Abs(x)**(1/2)", DivergentActivationError),
    ("cosh(cosh(x))", DivergentActivationError),  # super-exponential: σ(±10³) overflows everywhere
    ("sinh(sinh(sinh(x)))", DivergentActivationError),
    ("cosh(cosh(exp(x)))", DivergentActivationError),  # mpmath at x = 10⁴ would never return (fuzz finding)
    ("exp(x/erfc(x**2))", DivergentActivationError),  # mpmath runs out of memory there (fuzz finding)
]


@pytest.mark.parametrize("src, exc", BAD)
def test_bad_input_raises_specific_error_and_caches_nothing(src, exc, cache):
    with pytest.raises(exc) as info:
        derive(src)
    assert isinstance(info.value, DualactError)
    assert str(info.value)  # a one-line message naming the cause
    with pytest.raises(exc):
        dualact.derive(src)
    assert _files(cache) == []


def test_unknown_function_message_names_it():
    with pytest.raises(UnknownFunctionError, match="foo"):
        dualact.derive("foo(x) + 1")


def test_divergent_message_names_the_cause():
    with pytest.raises(DivergentActivationError) as info:
        dualact.derive("exp(x**2)")
    assert "exp" in str(info.value) or "moment" in str(info.value).lower()


@pytest.mark.parametrize("src", ["sqrt(Abs(x))", "log(Abs(x))", "Abs(x)**(1/4)"])
def test_divergent_derivative_second_moment_is_rejected(src, cache):
    """E[σ'(u)²] = ∞ (σ' ~ |x|^(-1/2) or 1/x at 0): the NTK factor does not exist. It used to derive, with an
    NTK factor of 0j (Hermite) for every ρ."""
    with pytest.raises(DivergentActivationError, match="σ'"):
        dualact.derive(src)
    assert _files(cache) == []


def test_super_exponential_decay_is_not_divergence():
    """exp(−exp(x)) is bounded (σ(10⁴) underflows; mpmath would take forever to say so): accepted, quickly."""
    import time

    from dualact.symbolic.normalize import check_second_moment, to_heaviside
    from dualact.symbolic.parse import parse_activation

    t0 = time.monotonic()
    check_second_moment(to_heaviside(parse_activation("exp(-exp(x))").expr), {})
    assert time.monotonic() - t0 < 10.0


def test_missing_parameter_at_evaluation(cache):
    k = dualact.derive("a*erf(b*x)", {"a": None, "b": None})
    assert set(k.params) == {"a", "b"}
    for call in (
        lambda: k.nngp(1.0, 0.5, 1.0),
        lambda: k.nngp(1.0, 0.5, 1.0, a=1.0),
        lambda: k.ntk_factor(1.0, 0.5, 1.0, b=2.0),
        lambda: k.diag(1.0),
        lambda: k.ntk_diag(1.0, a=1.0),
    ):
        with pytest.raises(MissingParameterError, match="'[ab]'"):
            call()
    assert float(k.nngp(1.0, 0.5, 1.0, a=1.0, b=2.0)) > 0
    assert float(k.bind(a=1.0, b=2.0).nngp(1.0, 0.5, 1.0)) == float(k.nngp(1.0, 0.5, 1.0, a=1.0, b=2.0))


def test_unknown_parameter_name_at_evaluation():
    k = dualact.derive("a*erf(x)", {"a": 1.0})
    with pytest.raises(DualactError, match="unknown parameter"):
        k.nngp(1.0, 0.5, 1.0, z=3.0)


def test_hermite_with_symbolic_parameters(cache):
    with pytest.raises(DerivationError, match="a"):
        derive("tanh(a*x)", {"a": None})
    assert _files(cache) == []


@pytest.mark.parametrize("src", ["relu(x - a)", "Max(x, log(a)**a)"])
def test_kink_that_moves_with_a_symbolic_parameter(src, cache):
    """A kink at a symbolic location has no numeric position: a DerivationError asking for a value (SymPy's
    DomainError from its root finder escaped before), nothing cached."""
    with pytest.raises(DerivationError, match="needs numeric values for a"):
        derive(src, {"a": None})
    assert _files(cache) == []


@pytest.mark.parametrize("value", [0.5, 0.9])
def test_parameter_value_that_makes_sigma_complex(value, cache):
    """log(a)**a is complex for 0 < a < 1; SymPy refuses to build Heaviside of a complex argument (a raw
    ValueError escaped from the substitution before, found by the front-end fuzz)."""
    with pytest.raises(NotRealValuedError, match=f"a = {value}"):
        derive("Max(x, log(a)**a)", {"a": value})
    with pytest.raises(NotRealValuedError):
        _front_end("Max(x, (log(a))**(a))")
    assert _files(cache) == []
    assert float(dualact.derive("Max(x, log(a)**a)", {"a": 2.0}).nngp(1.0, 0.0, 1.0)) > 0  # real for a > 1


def test_essential_singularity_ends_with_a_clear_error(cache):
    """sin(exp((x + 1/2)/(x − 1))) oscillates without bound near x = 1: the square-integrability probe next to
    the pole reduced a 10^(10^8) argument in mpmath for minutes (each probe now has 2 s), and the float64
    values near the pole are NaN, so no Hermite table reaches the core variances: a DerivationError saying so
    (a table up to variance 0.005 with a TypeError in its accuracy report before)."""
    with pytest.raises(DerivationError, match="no Hermite table"):
        derive("sin(exp((x+0.5)/(x-1)))")
    assert _files(cache) == []


def test_no_closed_form_without_hermite(cache):
    with pytest.raises(DerivationError):
        derive("tanh(x)", use_cache=False, allow_hermite=False)
    assert _files(cache) == []


# --------------------------------------------------------------------------------------------- cache
def test_second_derivation_is_cached_and_equal(cache):
    src = "relu(x) + erf(x)/3"
    t0 = time.perf_counter()
    d1 = derive(src)
    first = time.perf_counter() - t0
    assert d1.method == "closed_form"
    assert len(_files(cache)) == 1
    t0 = time.perf_counter()
    d2 = derive(src)
    second = time.perf_counter() - t0
    assert second < 0.5, (first, second)
    assert d2 == d1
    assert d2.content_hash() == d1.content_hash()
    # the user-facing entry point reads the same record
    assert dualact.derive(src).derivation == d1


def test_hermite_derivation_is_cached(cache):
    src = "tanh(2*x) + x/4"
    d1 = derive(src)
    assert d1.method == "hermite"
    assert any(f.endswith(".npz") for f in _files(cache)) and any(f.endswith(".json") for f in _files(cache))
    t0 = time.perf_counter()
    d2 = derive(src)
    assert time.perf_counter() - t0 < 0.5
    assert d2 == d1


def test_use_cache_false_writes_nothing(cache):
    derive("relu(x) + x/5", use_cache=False)
    assert _files(cache) == []


# --------------------------------------------------------------------------------------------- fuzzing
@contextlib.contextmanager
def _no_side_effects(src: str = ""):
    """No process, no file opened; eval/exec (SymPy's lambdify uses them on code it prints itself) never see
    the user's text."""
    targets = [(os, "system"), (subprocess, "Popen"), (builtins, "open")]
    with contextlib.ExitStack() as stack:
        mocks = [stack.enter_context(mock.patch.object(m, n, wraps=getattr(m, n))) for m, n in targets]
        code = [
            stack.enter_context(mock.patch.object(builtins, n, wraps=getattr(builtins, n))) for n in ("eval", "exec")
        ]
        yield
    called = [f"{m.__name__}.{n}" for (m, n), mk in zip(targets, mocks, strict=True) if mk.called]
    assert not called, f"side effects: {called}"
    if src.strip():
        for mk in code:
            for args in mk.call_args_list:
                assert not (args.args and isinstance(args.args[0], str) and args.args[0].strip() == src.strip())


_LEAVES = st.sampled_from(["x", "a", "1", "2", "0.5", "pi", "E", "x**2", "-x", "3*x", "y"])
_UNARY = st.sampled_from(
    ["exp", "log", "sqrt", "erf", "erfc", "sin", "cos", "tanh", "sinh", "cosh", "atan", "Abs", "sign",
     "Heaviside", "relu", "step", "sigmoid", "softplus", "gelu", "elu", "silu"]
)  # fmt: skip
_BINARY = st.sampled_from(["+", "-", "*", "/", "**"])


def _expr(depth: int):
    if depth == 0:
        return _LEAVES
    sub = _expr(depth - 1)
    return st.one_of(
        _LEAVES,
        st.builds(lambda f, e: f"{f}({e})", _UNARY, sub),
        st.builds(lambda a, o, b: f"({a}){o}({b})", sub, _BINARY, sub),
        st.builds(lambda a, b: f"Max({a}, {b})", sub, sub),
    )


def _front_end(src: str):
    """What ``derive`` runs before any tier: parse, normal form, divergence and real-valuedness checks."""
    parsed = parse_activation(src, {"a": 0.5})
    sigma = to_heaviside(parsed.expr)
    values = dict(parsed.param_values)
    check_second_moment(sigma, values)
    check_real_valued(sigma, values)
    return sigma


_FUZZ = settings(
    max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_FUZZ
@given(src=_expr(3))
def test_fuzz_front_end(src):
    """Random well-formed expressions: the pre-derivation stages return a SymPy σ(x) or raise a DualactError
    (never another exception), with no side effects."""
    _front_end("x")  # lazy SymPy imports before the recorders go in
    with _no_side_effects(src):
        try:
            sigma = _front_end(src)
        except DualactError:
            return
    assert isinstance(sigma, sp.Expr)
    assert sigma.free_symbols <= {sp.Symbol("x", real=True), sp.Symbol("a", real=True)}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(src=st.text(alphabet="x()+-*/. _[]'\"abcdefghijklmnopqrstuvwxyz0123456789", max_size=30))
def test_fuzz_derive_rejects_or_parses(src, tmp_path_factory):
    """Random text through the public ``derive`` is rejected with an ActivationSyntaxError-family error, or it
    parses (then we stop before deriving); nothing is written to the cache when it is rejected."""
    cache = tmp_path_factory.mktemp("fuzz-cache")
    with mock.patch.dict(os.environ, {"DUALACT_CACHE_DIR": str(cache)}), _no_side_effects(src):
        try:
            parse_activation(src)
        except ActivationSyntaxError:
            with pytest.raises(ActivationSyntaxError):
                derive(src)
        except DualactError:  # NotAFunctionOfX etc.: also a derive-time error
            with pytest.raises(DualactError):
                derive(src)
    assert _files(cache) == []


def test_symbolic_parameter_divergence_is_checked_at_use(cache):
    """exp(a·x²) derived with ``a`` symbolic: a > 0 makes E[σ(u)²] infinite, which the formula (an analytic
    continuation) hid — nngp(1, 0.3, 1, a=1) gave 1.25. Concrete values are checked; traced ones are not."""
    import jax

    k = dualact.derive("exp(a*x**2)", params={"a": None})
    assert float(k.nngp(1.0, 0.3, 1.0, a=-0.5)) == pytest.approx(1 / math.sqrt(4 - 0.09), rel=1e-12)  # det(I+Q)^-½
    with pytest.raises(DivergentActivationError, match="a = 1"):
        k.nngp(1.0, 0.3, 1.0, a=1.0)
    with pytest.raises(DivergentActivationError):
        k.bind(a=0.25).diag(1.0)
    assert float(jax.jit(lambda a: k.nngp(1.0, 0.3, 1.0, a=a))(-0.5)) == pytest.approx(1 / math.sqrt(3.91))
