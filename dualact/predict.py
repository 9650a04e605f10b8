"""Inference with infinite-width kernels: GP posterior, kernel ridge, gradient-descent MSE, evidence.

All functions take kernel matrices (e.g. from ``kernel_fn``) and are differentiable with JAX, so
hyperparameters (``W_std``, ``b_std``, activation parameters, ``ridge``) can be fitted by gradient:

>>> import jax, jax.numpy as jnp
>>> from dualact import layers as L, predict
>>> x = jnp.linspace(-1, 1, 8)[:, None]; y = jnp.sin(3 * x)
>>> def nll(w):
...     net = L.serial(L.Dense(1, W_std=w, b_std=0.1), L.Activation("relu"), L.Dense(1, W_std=w))
...     return -predict.log_marginal_likelihood(net.kernel_fn(x, None, "nngp"), y, ridge=1e-3)
>>> g = jax.grad(nll)(1.5)
>>> bool(jnp.isfinite(g))
True

``ridge`` is always an absolute value added to the diagonal of the training kernel. Kernels that are not
numerically positive definite raise :class:`IllConditionedKernelError`, or, with ``jitter="auto"`` (the
default), get the smallest sufficient diagonal jitter from 1e-10 to 1e-4 times their mean diagonal, with an
:class:`IllConditionedKernelWarning` — never a silent NaN.

Gradient-descent conventions are those of neural-tangents: continuous-time gradient flow on
``½ Σ (f − y)² / y_train.size`` with learning rate ``η``, so the training residual decays as
``exp(−η t Θ / y_train.size)``; ``t=None`` means infinite time.
"""

from __future__ import annotations

import collections
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from dualact.errors import DualactError

__all__ = [
    "IllConditionedKernelError",
    "IllConditionedKernelWarning",
    "Posterior",
    "gp_inference",
    "gradient_descent_mse",
    "gradient_descent_mse_ensemble",
    "kernel_ridge",
    "log_marginal_likelihood",
    "posterior",
]

_JITTERS = (1e-10, 1e-8, 1e-6, 1e-4)

Posterior = collections.namedtuple("Posterior", ["mean", "covariance"])


class IllConditionedKernelError(DualactError, np.linalg.LinAlgError):
    """The training kernel (plus ridge) is not numerically positive definite."""


class IllConditionedKernelWarning(UserWarning):
    """A diagonal jitter was added to make the training kernel positive definite."""


def _is_traced(*xs) -> bool:
    return any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def _as_2d(y):
    y = jnp.asarray(y)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _check_square(k):
    k = jnp.asarray(k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"the training kernel must be a square (n, n) matrix; got shape {k.shape}")
    return k


def _regularize(k, ridge):
    k = _check_square(k)
    k = (k + k.T) / 2
    return k + ridge * jnp.eye(k.shape[0], dtype=k.dtype)


def _warn_jitter(amount):
    warnings.warn(
        f"kernel matrix is not numerically positive definite: added diagonal jitter {amount:.3g} "
        "(pass a larger ridge= to silence this)",
        IllConditionedKernelWarning,
        stacklevel=3,
    )


def _fail(detail=""):
    raise IllConditionedKernelError(
        "the kernel matrix (plus ridge) is not positive definite"
        + detail
        + "; increase ridge= (or let jitter='auto' add a small diagonal jitter)"
    )


def _ok(chol):
    """Finite factor whose smallest pivot is not lost in round-off (relative pivot² above 10·n·eps)."""
    d = jnp.abs(jnp.diag(chol))
    eps = jnp.finfo(chol.dtype).eps
    ratio = jnp.min(d) / jnp.where(jnp.max(d) > 0, jnp.max(d), 1.0)
    return jnp.all(jnp.isfinite(chol)) & (ratio * ratio > 10 * chol.shape[0] * eps)


def cholesky(a, jitter="auto"):
    """Lower Cholesky factor of a symmetric matrix, with the jitter policy of this module.

    ``jitter``: ``"auto"`` (try 0, then 1e-10 … 1e-4 × mean diagonal, warning when used), a number
    (always add that absolute jitter) or ``None`` (no jitter; raise if the factorisation fails).
    A factorisation "fails" when it has non-finite entries or a pivot lost in round-off (numerically
    singular matrix).
    """
    a = jnp.asarray(a)
    eye = jnp.eye(a.shape[0], dtype=a.dtype)
    if jitter not in ("auto", None):
        a = a + jitter * eye
        jitter = None
    if not _is_traced(a):
        chol = jnp.linalg.cholesky(a)
        if bool(_ok(chol)):
            return chol
        if jitter is None:
            _fail()
        scale = float(jnp.mean(jnp.abs(jnp.diag(a)))) or 1.0
        for rel in _JITTERS:
            chol = jnp.linalg.cholesky(a + rel * scale * eye)
            if bool(_ok(chol)):
                _warn_jitter(rel * scale)
                return chol
        _fail(f" even with jitter {_JITTERS[-1] * scale:.3g}")
    # traced (inside jit/grad): the same ladder with lax.cond, warnings through a debug callback
    if jitter is None:
        chol = jnp.linalg.cholesky(a)
        jax.debug.callback(_report_traced, _ok(chol), jnp.zeros((), a.dtype))
        return chol
    scale = jnp.mean(jnp.abs(jnp.diag(a)))
    scale = jnp.where(scale > 0, scale, 1.0)

    def attempt(level):
        amount = 0.0 if level < 0 else _JITTERS[level] * scale
        chol = jnp.linalg.cholesky(a + amount * eye)
        ok = _ok(chol)
        if level == len(_JITTERS) - 1:
            return chol, ok, jnp.asarray(amount, a.dtype)
        return jax.lax.cond(ok, lambda: (chol, ok, jnp.asarray(amount, a.dtype)), lambda: attempt(level + 1))

    chol, ok, amount = attempt(-1)
    jax.debug.callback(_report_traced, ok, amount)
    return chol


def _report_traced(ok, amount):
    if not bool(ok):
        warnings.warn(
            "kernel matrix is not positive definite even with jitter: results are NaN; increase ridge=",
            IllConditionedKernelWarning,
            stacklevel=2,
        )
    elif float(amount) > 0:
        _warn_jitter(float(amount))


def _cho_solve(chol, b):
    z = jax.scipy.linalg.solve_triangular(chol, b, lower=True)
    return jax.scipy.linalg.solve_triangular(chol.T, z, lower=False)


# ---- GP posterior and kernel ridge -------------------------------------------------------------------


def posterior(k_train_train, y_train, k_test_train=None, k_test_test=None, *, ridge=0.0, jitter="auto"):
    """Gaussian-process posterior given training data.

    Args:
      k_train_train: ``(n, n)`` kernel of the training inputs.
      y_train: ``(n,)`` or ``(n, outputs)`` targets.
      k_test_train: ``(m, n)`` test-train kernel (``None``: predict on the training set).
      k_test_test: ``(m, m)`` kernel of the test inputs; if given, the posterior covariance is returned.
      ridge: observation noise variance added to the diagonal of ``k_train_train``.

    Returns ``Posterior(mean, covariance)`` (covariance ``None`` unless ``k_test_test`` is given).

    >>> import jax.numpy as jnp
    >>> k = jnp.array([[2.0, 1.0], [1.0, 2.0]])
    >>> posterior(k, jnp.array([1.0, 2.0]), ridge=0.0).mean.round(6).tolist()
    [1.0, 2.0]
    """
    a = _regularize(k_train_train, ridge)
    y, flat = _as_2d(y_train)
    chol = cholesky(a, jitter)
    alpha = _cho_solve(chol, y.astype(a.dtype))
    kxt = (
        a - ridge * jnp.eye(a.shape[0], dtype=a.dtype) if k_test_train is None else jnp.asarray(k_test_train)
    )
    mean = kxt @ alpha
    cov = None
    if k_test_test is not None:
        v = jax.scipy.linalg.solve_triangular(chol, kxt.T, lower=True)
        cov = jnp.asarray(k_test_test) - v.T @ v
    return Posterior(mean[:, 0] if flat else mean, cov)


gp_inference = posterior


def kernel_ridge(k_train_train, y_train, k_test_train=None, *, ridge=0.0, jitter="auto"):
    """Kernel ridge regression prediction ``K_*X (K_XX + ridge·I)⁻¹ y`` (the GP posterior mean)."""
    return posterior(k_train_train, y_train, k_test_train, ridge=ridge, jitter=jitter).mean


def log_marginal_likelihood(k_train_train, y_train, *, ridge=0.0, jitter="auto"):
    """GP log evidence ``log N(y | 0, K + ridge·I)``, summed over output columns; differentiable.

    >>> import jax.numpy as jnp
    >>> float(log_marginal_likelihood(jnp.eye(2), jnp.zeros(2)))  # −log(2π)
    -1.8378770664093453
    """
    a = _regularize(k_train_train, ridge)
    y, _ = _as_2d(y_train)
    y = y.astype(a.dtype)
    chol = cholesky(a, jitter)
    z = jax.scipy.linalg.solve_triangular(chol, y, lower=True)
    n, outputs = y.shape
    logdet = 2 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * jnp.sum(z * z) - 0.5 * outputs * logdet - 0.5 * n * outputs * math.log(2 * math.pi)


# ---- gradient descent on the MSE ---------------------------------------------------------------------


def _flow_factors(eigvals, t, rate):
    """(1 − exp(−rate·t·λ)) / λ, continuous at λ → 0 (= rate·t); 1/λ for t=None."""
    if t is None:
        return 1.0 / eigvals
    x = rate * t * eigvals
    safe = jnp.where(jnp.abs(eigvals) > 0, eigvals, 1.0)
    return jnp.where(jnp.abs(x) > 1e-12, -jnp.expm1(-x) / safe, rate * t * (1 - x / 2))


def gradient_descent_mse(
    k_train_train, y_train, k_test_train=None, *, t=None, learning_rate=1.0, ridge=0.0, jitter="auto"
):
    """Mean prediction of an infinitely wide network trained by gradient flow on the MSE (zero mean at t=0).

    With ``Θ`` the training kernel (NTK for a fully trained network, NNGP when only the readout is trained)
    ``Θ_r = Θ + ridge·I`` and ``E_t = exp(−η t Θ_r / y_train.size)``:
    ``f_t(x_test) = Θ(x_test, X) Θ_r⁻¹ (I − E_t) y`` and on the training set ``f_t(X) = Θ Θ_r⁻¹ (I − E_t) y``
    (``= (I − E_t) y`` when ridge = 0).
    ``t=None`` gives the infinite-time limit (kernel ridge regression).

    >>> import jax.numpy as jnp
    >>> k = jnp.array([[2.0, 1.0], [1.0, 2.0]]); y = jnp.array([1.0, -1.0])
    >>> gradient_descent_mse(k, y, t=None).round(6).tolist()
    [1.0, -1.0]
    """
    if t is None:
        return kernel_ridge(k_train_train, y_train, k_test_train, ridge=ridge, jitter=jitter)
    a = _regularize(k_train_train, ridge)
    y, flat = _as_2d(y_train)
    y = y.astype(a.dtype)
    lam, vec = jnp.linalg.eigh(a)
    lam = jnp.maximum(lam, 0.0)
    rate = learning_rate / y.size
    coef = vec @ (_flow_factors(lam, t, rate)[:, None] * (vec.T @ y))
    kxt = (
        a - ridge * jnp.eye(a.shape[0], dtype=a.dtype) if k_test_train is None else jnp.asarray(k_test_train)
    )
    out = kxt @ coef
    return out[:, 0] if flat else out


def gradient_descent_mse_ensemble(
    kernel_fn, x_train, y_train, *, learning_rate=1.0, ridge=0.0, jitter="auto", **kernel_options
):
    """Ensemble (over initialisations) of infinitely wide networks trained by gradient flow on the MSE.

    Returns ``predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False)`` giving, for each
    entry of ``get``, the mean (and with ``compute_cov`` the covariance, as a :class:`Posterior`) of the
    outputs at time ``t`` (``None``: infinite time) on ``x_test`` (``None``: the training inputs).
    ``"nngp"``: only the readout layer is trained (Bayesian posterior at ``t=None``); ``"ntk"``: all layers
    are trained (Lee et al. 2019, eq. 16).

    >>> import jax.numpy as jnp
    >>> from dualact import layers as L
    >>> x = jnp.linspace(-1, 1, 6)[:, None]; y = jnp.sin(3 * x); x_new = jnp.array([[0.25], [0.5]])
    >>> net = L.serial(L.Dense(1, W_std=1.5, b_std=0.1), L.Activation("gelu"), L.Dense(1))
    >>> predict_fn = gradient_descent_mse_ensemble(net.kernel_fn, x, y, ridge=1e-4)
    >>> out = predict_fn(t=10.0, x_test=x_new, get="ntk", compute_cov=True)
    >>> out.mean.shape, out.covariance.shape
    ((2, 1), (2, 2))
    """
    y, flat = _as_2d(y_train)
    k_train = kernel_fn(x_train, None, ("nngp", "ntk"), **kernel_options)
    cache = {}

    def train_eig(get):
        if get not in cache:
            a = _regularize(jnp.asarray(getattr(k_train, get)), ridge)
            lam, vec = jnp.linalg.eigh(a)
            cache[get] = (jnp.maximum(lam, 0.0), vec)
        return cache[get]

    def one(get, t, k_tt, k_ttest, compute_cov):
        lam, vec = train_eig(get)
        rate = learning_rate / y.size
        if t is None:
            chol = cholesky(_regularize(jnp.asarray(getattr(k_train, get)), ridge), jitter)
            inv_flow = lambda b: _cho_solve(chol, b)  # noqa: E731
        else:
            fac = _flow_factors(lam, t, rate)
            inv_flow = lambda b: vec @ (fac[:, None] * (vec.T @ b))  # noqa: E731  Θ⁻¹(I − E_t)
        theta_xt = jnp.asarray(getattr(k_ttest, get))  # (m, n) test-train kernel of the trained quantity
        mean = theta_xt @ inv_flow(y.astype(lam.dtype))
        mean = mean[:, 0] if flat else mean
        if not compute_cov:
            return mean
        k_nn = _regularize(jnp.asarray(k_train.nngp), ridge)  # ridge acts as observation noise
        k_xt = jnp.asarray(k_ttest.nngp)
        k_xx = jnp.asarray(k_tt.nngp)
        a_mat = inv_flow(theta_xt.T).T  # Θ*X Θ⁻¹ (I − E)
        cov = k_xx + a_mat @ k_nn @ a_mat.T - a_mat @ k_xt.T - k_xt @ a_mat.T
        return Posterior(mean, (cov + cov.T) / 2)

    def predict_fn(t=None, x_test=None, get=("nngp", "ntk"), compute_cov=False):
        names = (get,) if isinstance(get, str) else tuple(get)
        if x_test is None:
            k_ttest, k_tt = k_train, k_train
        else:
            k_ttest = kernel_fn(x_test, x_train, ("nngp", "ntk"), **kernel_options)
            k_tt = kernel_fn(x_test, None, ("nngp", "ntk"), **kernel_options) if compute_cov else None
        outs = {g: one(g, t, k_tt, k_ttest, compute_cov) for g in names}
        if isinstance(get, str):
            return outs[get]
        return collections.namedtuple("Prediction", names)(*(outs[g] for g in names))

    return predict_fn
