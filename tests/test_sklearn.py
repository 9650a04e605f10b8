"""scikit-learn estimators: fit/predict, get_params/set_params, clone, GridSearchCV."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import _duals as D  # noqa: E402

from dualact import layers as L  # noqa: E402
from dualact import predict  # noqa: E402
from dualact.sklearn import NeuralKernelClassifier, NeuralKernelRegressor  # noqa: E402

RELU = D.relu()
ERF = D.erf_()


def _reg_data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2


def test_regressor_equals_kernel_ridge():
    X, y = _reg_data()
    est = NeuralKernelRegressor(depth=2, activation=RELU, W_std=1.4, b_std=0.1, kernel="ntk", alpha=1e-3)
    est.fit(X[:30], y[:30])
    net = L.fully_connected(2, 512, RELU, W_std=1.4, b_std=0.1)
    k = net.kernel_fn(X[:30], None, "ntk")
    ks = net.kernel_fn(X[30:], X[:30], "ntk")
    expect = np.asarray(predict.kernel_ridge(k, y[:30], ks, ridge=1e-3))
    np.testing.assert_allclose(est.predict(X[30:]), expect, rtol=1e-8, atol=1e-10)
    assert est.score(X[:30], y[:30]) > 0.99
    assert est.n_features_in_ == 3


def test_regressor_finite_time_and_custom_architecture():
    X, y = _reg_data()
    arch = L.serial(L.Dense(1, 1.3, 0.1), L.Activation(ERF), L.Dense(1, 1.3))
    est = NeuralKernelRegressor(arch, kernel="nngp", alpha=1e-4, t=1e12).fit(X, y)
    inf = NeuralKernelRegressor(arch, kernel="nngp", alpha=1e-4).fit(X, y)
    np.testing.assert_allclose(est.predict(X), inf.predict(X), rtol=1e-5, atol=1e-6)
    early = NeuralKernelRegressor(arch, kernel="nngp", alpha=1e-4, t=1e-3).fit(X, y)
    assert np.abs(early.predict(X)).max() < np.abs(inf.predict(X)).max()


def test_get_set_params_and_clone():
    est = NeuralKernelRegressor(activation=RELU, alpha=0.1)
    params = est.get_params()
    assert params["alpha"] == 0.1 and params["depth"] == 2 and params["kernel"] == "ntk"
    est.set_params(alpha=0.5, W_std=2.0)
    assert est.alpha == 0.5 and est.W_std == 2.0
    c = sklearn.base.clone(est)
    assert c.get_params()["alpha"] == 0.5 and c is not est
    arch_est = NeuralKernelRegressor(L.serial(L.Dense(1), L.Activation(RELU), L.Dense(1)))
    X, y = _reg_data(10)
    sklearn.base.clone(arch_est).fit(X, y)


def test_grid_search_cv():
    from sklearn.model_selection import GridSearchCV

    X, y = _reg_data(36)
    search = GridSearchCV(
        NeuralKernelRegressor(activation=ERF), {"depth": [1, 2], "alpha": [1e-4, 1e-1]}, cv=3
    )
    search.fit(X, y)
    assert set(search.best_params_) == {"depth", "alpha"}
    assert np.isfinite(search.best_score_)


def test_classifier_binary_and_multiclass():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    yb = np.where(X[:, 0] + X[:, 1] > 0, "pos", "neg")
    clf = NeuralKernelClassifier(activation=RELU, alpha=1e-2).fit(X[:40], yb[:40])
    assert set(clf.classes_) == {"neg", "pos"}
    assert clf.score(X[40:], yb[40:]) > 0.8
    assert clf.decision_function(X[40:]).shape == (20,)
    ym = np.digitize(X[:, 0], [-0.5, 0.5])
    clf3 = NeuralKernelClassifier(activation=RELU, alpha=1e-2, kernel="nngp").fit(X[:40], ym[:40])
    assert clf3.decision_function(X[40:]).shape == (20, 3)
    assert clf3.score(X[40:], ym[40:]) > 0.7


def test_not_fitted_and_bad_kernel():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        NeuralKernelRegressor(activation=RELU).predict(np.ones((2, 3)))
    X, y = _reg_data(8)
    with pytest.raises(ValueError, match="kernel"):
        NeuralKernelRegressor(activation=RELU, kernel="rbf").fit(X, y)


def test_grid_search_cv_with_catalog_activation_architecture():
    """Regression: an architecture holding Activation("relu") (a generated-module DualKernel) is cloned."""
    import pickle

    from sklearn.model_selection import GridSearchCV

    X, y = _reg_data(30)
    arch = L.serial(L.Dense(64, W_std=1.3, b_std=0.1), L.Activation("relu"), L.Dense(1, W_std=1.3))
    search = GridSearchCV(NeuralKernelRegressor(architecture=arch), {"alpha": [1e-4, 1e-2]}, cv=3)
    search.fit(X, y)
    assert set(search.best_params_) == {"alpha"}
    assert np.isfinite(search.best_score_)
    restored = pickle.loads(pickle.dumps(search.best_estimator_))
    np.testing.assert_array_equal(restored.predict(X[:5]), search.best_estimator_.predict(X[:5]))
