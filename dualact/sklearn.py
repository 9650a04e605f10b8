"""scikit-learn estimators backed by infinite-width network kernels (requires the ``sklearn`` extra).

``NeuralKernelRegressor`` is kernel ridge regression (or the gradient-descent prediction at a finite time
``t``) with the NNGP or NTK of a fully connected network — or of any ``dualact.layers`` architecture given
as ``architecture``. ``alpha`` is the ridge, as in :class:`sklearn.kernel_ridge.KernelRidge`. All
constructor arguments are hyperparameters (``get_params``/``set_params``), so the estimators work in
``GridSearchCV``:

>>> from sklearn.model_selection import GridSearchCV                          # doctest: +SKIP
>>> search = GridSearchCV(NeuralKernelRegressor(), {"depth": [1, 3], "W_std": [1.0, 1.5],
...                                                 "alpha": [1e-4, 1e-2]}).fit(X, y)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils.validation import check_array, check_is_fitted, check_X_y
except ImportError as e:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("dualact.sklearn needs scikit-learn: pip install 'dualact[sklearn]'") from e

import jax.numpy as jnp

from dualact import predict

__all__ = ["NeuralKernelClassifier", "NeuralKernelRegressor"]


class _NeuralKernelBase(BaseEstimator):
    def __init__(
        self,
        architecture=None,
        *,
        depth=2,
        activation="relu",
        activation_params=None,
        W_std=1.5,
        b_std=0.05,
        kernel="ntk",
        alpha=1e-6,
        t=None,
        learning_rate=1.0,
        block_size=None,
    ):
        self.architecture = architecture
        self.depth = depth
        self.activation = activation
        self.activation_params = activation_params
        self.W_std = W_std
        self.b_std = b_std
        self.kernel = kernel
        self.alpha = alpha
        self.t = t
        self.learning_rate = learning_rate
        self.block_size = block_size

    # ---- kernels -------------------------------------------------------------------------------------

    def _network(self):
        from dualact import layers as L

        if self.architecture is not None:
            return (
                self.architecture()
                if callable(self.architecture) and not isinstance(self.architecture, L.Layer)
                else self.architecture
            )
        return L.fully_connected(
            self.depth,
            512,
            self.activation,
            W_std=self.W_std,
            b_std=self.b_std,
            **(self.activation_params or {}),
        )

    def _kernel(self, a, b=None):
        if self.kernel not in ("ntk", "nngp"):
            raise ValueError(f"kernel must be 'ntk' or 'nngp'; got {self.kernel!r}")
        net = self.network_
        options = {} if self.block_size is None else {"block_size": self.block_size}
        return np.asarray(net.kernel_fn(a, b, self.kernel, **options), dtype=np.float64)

    def _fit_targets(self, X, Y):
        self.network_ = self._network()
        self.X_fit_ = X
        k = self._kernel(X)
        self.n_features_in_ = X.shape[1]
        if self.t is None:
            a = k + self.alpha * np.eye(len(k))
            chol = np.asarray(predict.cholesky(jnp.asarray(a)))
            self.dual_coef_ = np.asarray(predict._cho_solve(jnp.asarray(chol), jnp.asarray(Y)))
        else:
            lam, vec = np.linalg.eigh((k + k.T) / 2 + self.alpha * np.eye(len(k)))
            lam = np.maximum(lam, 0.0)
            fac = np.asarray(predict._flow_factors(jnp.asarray(lam), self.t, self.learning_rate / Y.size))
            self.dual_coef_ = vec @ (fac[:, None] * (vec.T @ Y))
        return self

    def _decision(self, X):
        check_is_fitted(self, "dual_coef_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but the estimator was fitted with {self.n_features_in_}"
            )
        return self._kernel(X, self.X_fit_) @ self.dual_coef_


class NeuralKernelRegressor(RegressorMixin, _NeuralKernelBase):
    """Regression with the NNGP/NTK of an infinitely wide network.

    Args:
      architecture: a ``dualact.layers`` network (or a zero-argument callable returning one); if ``None``,
        ``fully_connected(depth, act=activation, W_std=W_std, b_std=b_std)``.
      depth, activation, activation_params, W_std, b_std: the default fully connected architecture.
      kernel: ``"ntk"`` (fully trained network) or ``"nngp"`` (Bayesian / readout-only).
      alpha: ridge added to the training kernel's diagonal.
      t: training time of gradient flow (``None``: infinite time, i.e. kernel ridge regression).
      learning_rate: gradient-flow learning rate (neural-tangents convention), used when ``t`` is set.
      block_size: passed to ``kernel_fn`` for large data (memory-bounded tiles).
    """

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64, y_numeric=True, multi_output=True)
        self._y_1d = y.ndim == 1
        return self._fit_targets(X, y[:, None] if y.ndim == 1 else y)

    def predict(self, X):
        out = self._decision(X)
        return out[:, 0] if self._y_1d else out


class NeuralKernelClassifier(ClassifierMixin, _NeuralKernelBase):
    """Classification by kernel regression on centred one-hot targets (argmax of the decision function)."""

    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        self._binarizer = LabelBinarizer(neg_label=-1, pos_label=1)
        Y = self._binarizer.fit_transform(y).astype(np.float64)
        self.classes_ = self._binarizer.classes_
        if len(self.classes_) < 2:
            raise ValueError("NeuralKernelClassifier needs at least two classes")
        return self._fit_targets(X, Y)

    def decision_function(self, X):
        out = self._decision(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def predict(self, X):
        out = self._decision(X)
        if out.shape[1] == 1:
            return self.classes_[(out[:, 0] > 0).astype(int)]
        return self.classes_[np.argmax(out, axis=1)]
