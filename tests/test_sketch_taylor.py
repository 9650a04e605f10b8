"""Polynomial approximations of homogeneous dual activations (dualact.sketch.taylor)."""

import numpy as np
import pytest

from dualact import catalog
from dualact.sketch.taylor import approximation_error, exact_functions, taylor_approximation

HOMOGENEOUS = [n for n in ("relu", "leaky_relu", "normalized_gaussian", "abs", "step") if n in catalog.names()]


@pytest.mark.parametrize("name", HOMOGENEOUS)
@pytest.mark.parametrize("method", ["fold", "nnls"])
def test_nonnegative_and_exact_at_endpoints(name, method):
    a = taylor_approximation(name, 8, method=method)
    assert a.homogeneity == catalog.get(name).homogeneity
    assert (a.kappa >= 0).all() and (a.kappa_prime >= 0).all()
    f, fp = exact_functions(name, {})
    ends = np.array([1.0, -1.0])
    tol = 1e-12 if method == "fold" else 1e-3
    np.testing.assert_allclose(np.polynomial.polynomial.polyval(ends, a.kappa), f(ends), atol=tol)
    if a.kappa_prime.any():
        np.testing.assert_allclose(np.polynomial.polynomial.polyval(ends, a.kappa_prime), fp(ends), atol=tol)


def test_coefficients_come_from_the_engine():
    kappa, kprime = catalog.get("relu").taylor_coefficients(6)
    a = taylor_approximation("relu", 7, method="fold")
    # below the folded top coefficients the polynomial is the Taylor series itself
    np.testing.assert_allclose(a.kappa[:5], kappa[:5], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.kappa_prime[:5], kprime[:5], rtol=1e-12, atol=1e-15)


def test_relu_error_decays_with_degree():
    """κ (arc-cosine κ1): error ~ q^-3/2; κ' (κ0): ~ q^-1/2 (slow, pitfall 13)."""
    degrees = np.array([4, 8, 16, 32])
    for method in ("fold", "nnls"):
        e = [approximation_error(taylor_approximation("relu", int(q), method=method)) for q in degrees]
        slope = np.polyfit(np.log(degrees), np.log([x["kappa_max"] for x in e]), 1)[0]
        slope_p = np.polyfit(np.log(degrees), np.log([x["kappa_prime_max"] for x in e]), 1)[0]
        assert -2.0 < slope < -1.0, (method, slope)
        assert -0.9 < slope_p < -0.25, (method, slope_p)


def test_normalized_gaussian_converges_fast():
    e = approximation_error(taylor_approximation("normalized_gaussian", 12, gamma=1.0))
    assert e["kappa_max"] < 1e-10 and e["kappa_prime_max"] < 1e-10


def test_not_homogeneous_raises():
    from dualact.runtime.dual_kernel import NotHomogeneousError

    with pytest.raises(NotHomogeneousError, match="hermite"):
        taylor_approximation("gelu", 4)
