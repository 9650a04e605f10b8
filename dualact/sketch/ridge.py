"""Ridge regression / classification on random features, streamed: ΦᵀΦ and Φᵀy are accumulated batch by batch.

Memory is O(m² + m·outputs) for m features, independent of the number of examples, so n = 60,000 MNIST images
with m = 8192 features never materialise an n×n (or n×m) matrix. When ``ridge`` is ``None`` or a sequence, the
ridge parameter is chosen on a validation split of the *training* stream (a seeded random fraction of the
examples, held out while accumulating, then folded back in for the final solve) — never on test data.
On an accelerator (GPU/TPU as JAX's default backend, with float64 enabled) ΦᵀΦ, Φᵀy and the m×m eigen-
decomposition and solve stay on the device in float64; otherwise they are NumPy float64 on the host.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> phi = rng.normal(size=(500, 20)); w = rng.normal(size=(20, 1))
>>> y = phi @ w + 0.01 * rng.normal(size=(500, 1))
>>> batches = ((phi[i:i + 100], y[i:i + 100]) for i in range(0, 500, 100))
>>> model = RidgeRegression(ridge=[1e-4, 1e2, 1e4]).fit_stream(batches)
>>> model.ridge_, bool(np.abs(model.coef_ - w).max() < 0.01)
(0.0001, True)
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["RidgeClassifier", "RidgeRegression", "progress_bar"]


def progress_bar(iterable, total=None, desc=None, enable: bool | None = None):
    """``tqdm`` progress bar, shown only when ``enable`` (default: stderr is a TTY)."""
    if enable is None:
        enable = sys.stderr.isatty()
    if not enable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def _on_accelerator() -> bool:
    """Whether the Gram accumulation and solves run on JAX's default device (an accelerator, float64 on)."""
    import jax
    import jax.numpy as jnp

    return jax.default_backend() != "cpu" and jnp.asarray(0.0).dtype == jnp.float64


def _gram_step_host(A, b, phi, t, w):
    """Add the rows of the batch with weight 1 (training rows) to ΦᵀΦ and Φᵀy, in place (NumPy)."""
    keep = w.astype(bool)
    A += phi[keep].T @ phi[keep]
    b += phi[keep].T @ t[keep]
    return A, b


@functools.cache
def _gram_step_fn():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def step(A, b, phi, t, w):  # w: 1 for the training rows of the batch, 0 for held-out ones
        phi = phi.astype(A.dtype)
        pw = phi * w[:, None]
        hi = jax.lax.Precision.HIGHEST
        return A + jnp.matmul(pw.T, phi, precision=hi), b + jnp.matmul(pw.T, t, precision=hi)

    return step


def _as_2d(y):
    y = np.asarray(y)
    return y[:, None] if y.ndim == 1 else y


class RidgeRegression:
    """Linear ridge regression on features: w = (ΦᵀΦ + λI)⁻¹Φᵀy.

    Args:
      ridge: λ (a float), a sequence of candidates, or ``None`` for a log grid relative to tr(ΦᵀΦ)/m
        (``grid_size`` values from 1e-8 to 10 times it). Candidates are compared on the validation split.
      validation_fraction: fraction of streamed examples held out for choosing λ (only if several candidates).
      max_validation: cap on the number of held-out examples stored (they are kept to score candidates).
      feature_map: optional callable x → Φ (e.g. :func:`dualact.sketch.ntk_features`); batches are then
        ``(x, y)`` and the features are computed batch by batch on all JAX devices.
      seed: seed of the validation split.
      progress: show a tqdm bar (default: only when stderr is a TTY).

    Attributes after fitting: ``coef_`` (m, outputs), ``ridge_``, ``validation_scores_`` (λ → score),
    ``n_train_``, ``n_validation_``.
    """

    classification = False

    def __init__(self, ridge: float | Sequence[float] | None = None, *, validation_fraction: float = 0.1,
                 max_validation: int = 10_000, feature_map=None, seed: int = 0, grid_size: int = 19,
                 progress: bool | None = None):
        # an iterable of candidates is kept as a tuple: a generator would be used up by the first look
        self.ridge = tuple(ridge) if isinstance(ridge, Iterable) and not isinstance(ridge, (str, bytes)) else ridge
        self.validation_fraction = float(validation_fraction)
        self.max_validation = int(max_validation)
        self.feature_map = feature_map
        self.seed = seed
        self.grid_size = grid_size
        self.progress = progress

    # ---- targets ---------------------------------------------------------------------------------------------
    def _targets(self, y):
        return _as_2d(y).astype(np.float64)

    def _score(self, pred, y) -> float:
        """Higher is better: negative mean squared error."""
        return -float(np.mean((pred - self._targets(y)) ** 2))

    # ---- fitting ---------------------------------------------------------------------------------------------
    def _features(self, x):
        if self.feature_map is None:
            return np.asarray(x, dtype=np.float64)
        from dualact.sketch.features import features_on_devices

        return np.asarray(features_on_devices(self.feature_map, x), dtype=np.float64)

    def _several(self) -> bool:
        return self.ridge is None or (isinstance(self.ridge, Iterable) and len(list(self.ridge)) > 1)

    def fit(self, phi, y):
        """Fit on in-memory features (or inputs, with ``feature_map``)."""
        return self.fit_stream([(phi, y)])

    def fit_stream(self, batches: Iterable, total: int | None = None):
        """Fit on an iterable of ``(phi, y)`` (or ``(x, y)`` with ``feature_map``) batches, in one pass."""
        rng = np.random.default_rng(self.seed)
        hold = self._several() and self.validation_fraction > 0
        on_device = _on_accelerator()
        if on_device:
            import jax.numpy as xp

            gram_step = _gram_step_fn()
        else:
            xp, gram_step = np, _gram_step_host
        A = b = None
        val_phi, val_y = [], []
        n_val = n_tr = 0
        if total is None and hasattr(batches, "__len__"):
            total = len(batches)
        for xb, yb in progress_bar(batches, total=total, desc="ridge", enable=self.progress):
            phi = self._features(xb)
            t = self._prepare(yb)
            if A is None:
                A = xp.zeros((phi.shape[1], phi.shape[1]), np.float64)
                b = xp.zeros((phi.shape[1], t.shape[1]), np.float64)
            b = self._grow(b, t.shape[1], xp)
            t = self._pad_targets(t, b.shape[1])
            mask = np.zeros(len(phi), bool)
            if hold:
                mask = rng.random(len(phi)) < self.validation_fraction
                room = self.max_validation - n_val
                mask &= np.cumsum(mask) <= room
            if mask.any():
                val_phi.append(phi[mask])
                val_y.append(np.asarray(yb)[mask])
                n_val += int(mask.sum())
            tr = ~mask
            A, b = gram_step(A, b, phi, t, tr.astype(np.float64))
            n_tr += int(tr.sum())
        if A is None:
            raise ValueError("fit_stream: no batches")
        self.n_train_, self.n_validation_ = n_tr, n_val
        candidates = self._candidates(A)
        self.validation_scores_ = {}
        if len(candidates) > 1 and n_val:
            vphi = np.concatenate(val_phi)
            vy = np.concatenate(val_y)
            evals, evecs = xp.linalg.eigh(A)
            proj = evecs.T @ b
            for lam in candidates:
                w = np.asarray(evecs @ (proj / (xp.maximum(evals, 0.0) + lam)[:, None]))
                self.validation_scores_[lam] = self._score(vphi @ w, vy)
            self.ridge_ = max(self.validation_scores_, key=self.validation_scores_.get)
            vt = self._pad_targets(self._prepare(vy), b.shape[1])
            A, b = gram_step(A, b, vphi, vt, np.ones(len(vphi)))  # refit on train + validation
        else:
            self.ridge_ = candidates[0]
        self.coef_ = (self._solve_on_device if on_device else self._solve)(A, b, self.ridge_)
        self.gram_trace_ = float(xp.trace(A))
        return self

    def _candidates(self, A) -> list[float]:
        if self.ridge is None:
            scale = max(float(A.trace()) / A.shape[0], 1e-300)
            return [float(v) for v in scale * np.logspace(-8, 1, self.grid_size)]
        if isinstance(self.ridge, Iterable):
            return [float(v) for v in self.ridge]
        return [float(self.ridge)]

    @staticmethod
    def _solve(A, b, lam):
        import scipy.linalg

        M = A + lam * np.eye(A.shape[0])
        try:
            return scipy.linalg.solve(M, b, assume_a="pos")
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(M, b, rcond=None)[0]

    @staticmethod
    def _solve_on_device(A, b, lam):
        import jax.numpy as jnp
        import jax.scipy.linalg as jsl

        M = A + lam * jnp.eye(A.shape[0], dtype=A.dtype)
        w = np.asarray(jsl.solve(M, b, assume_a="pos"))
        if not np.isfinite(w).all():  # Cholesky failed (M not numerically positive definite)
            w = np.asarray(jnp.linalg.lstsq(M, b)[0])
        return w

    def _prepare(self, y):
        return self._targets(y)

    @staticmethod
    def _grow(b, k, xp=np):
        return b if b.shape[1] >= k else xp.pad(b, ((0, 0), (0, k - b.shape[1])))

    @staticmethod
    def _pad_targets(t, k):
        return t if t.shape[1] >= k else np.pad(t, ((0, 0), (0, k - t.shape[1])))

    # ---- prediction -----------------------------------------------------------------------------------------
    def decision_function(self, x):
        return self._features(x) @ self.coef_

    def predict(self, x):
        """Predictions for features (or inputs, with ``feature_map``)."""
        return self.decision_function(x)

    def predict_stream(self, batches: Iterable, total: int | None = None) -> np.ndarray:
        """Predictions for an iterable of feature (or input) batches."""
        return np.concatenate([self.predict(xb) for xb in progress_bar(batches, total, "predict", self.progress)])

    def score(self, x, y) -> float:
        """Negative MSE (regression) or accuracy (classification)."""
        return self._score(self.decision_function(x), y)


class RidgeClassifier(RidgeRegression):
    """Ridge regression to one-hot targets; predictions are the argmax. Labels are integers 0..C−1.

    ``num_classes`` may be given (otherwise the largest label seen so far decides). The validation score is
    accuracy.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 5)); labels = (x[:, 0] > 0).astype(int)
    >>> clf = RidgeClassifier(ridge=1e-3).fit(x, labels)
    >>> clf.score(x, labels) > 0.9
    True
    """

    classification = True

    def __init__(self, ridge=None, *, num_classes: int | None = None, **kwargs):
        super().__init__(ridge, **kwargs)
        self.num_classes = num_classes

    def _prepare(self, y):
        y = np.asarray(y).astype(int).reshape(-1)
        k = max(self.num_classes or 0, int(y.max()) + 1 if len(y) else 0)
        out = np.zeros((len(y), k))
        out[np.arange(len(y)), y] = 1.0
        return out

    def _score(self, pred, y) -> float:
        return float(np.mean(np.argmax(pred, axis=1) == np.asarray(y).reshape(-1)))

    def predict(self, x):
        return np.argmax(self.decision_function(x), axis=1)
