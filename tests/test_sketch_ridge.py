"""Streamed ridge regression / classification on features."""

import numpy as np
import pytest

from dualact.sketch import RidgeClassifier, RidgeRegression

rng = np.random.default_rng(0)
PHI = rng.normal(size=(600, 30))
W = rng.normal(size=(30, 2))
Y = PHI @ W + 0.5 * rng.normal(size=(600, 2))


def _batches(phi, y, bs=97):
    return [(phi[i:i + bs], y[i:i + bs]) for i in range(0, len(phi), bs)]


def test_stream_equals_direct_solve():
    lam = 3.0
    model = RidgeRegression(ridge=lam).fit_stream(_batches(PHI, Y))
    direct = np.linalg.solve(PHI.T @ PHI + lam * np.eye(30), PHI.T @ Y)
    np.testing.assert_allclose(model.coef_, direct, rtol=1e-10)
    assert model.n_train_ == 600 and model.n_validation_ == 0


def test_validation_choice_and_refit():
    cands = [1e-3, 1.0, 1e6]
    model = RidgeRegression(ridge=cands, validation_fraction=0.2, seed=1).fit_stream(_batches(PHI, Y))
    assert set(model.validation_scores_) == set(cands)
    assert model.ridge_ != 1e6  # the huge ridge underfits on validation data
    assert model.n_validation_ + model.n_train_ == 600 and 60 < model.n_validation_ < 180
    # the final solve uses every training example (train + validation)
    direct = np.linalg.solve(PHI.T @ PHI + model.ridge_ * np.eye(30), PHI.T @ Y)
    np.testing.assert_allclose(model.coef_, direct, rtol=1e-8)
    # candidates given as a generator (consumed once) choose the same ridge
    again = RidgeRegression(ridge=(c for c in cands), validation_fraction=0.2, seed=1).fit_stream(_batches(PHI, Y))
    assert again.ridge_ == model.ridge_ and set(again.validation_scores_) == set(cands)


def test_default_grid_and_validation_only_uses_training_data():
    model = RidgeRegression().fit(PHI, Y)
    assert len(model.validation_scores_) == 19
    assert model.score(PHI, Y) > -1.0


def test_classifier_with_feature_map():
    x = rng.normal(size=(400, 3))
    labels = (x[:, 0] + x[:, 1] > 0).astype(int) + 2 * (x[:, 2] > 0)
    fmap = lambda z: np.concatenate([z, z**2, np.ones((len(z), 1))], axis=1)
    clf = RidgeClassifier(feature_map=fmap, num_classes=4).fit_stream(_batches(x, labels, 64))
    assert clf.coef_.shape == (7, 4)
    assert clf.score(x, labels) > 0.9
    assert set(np.unique(clf.predict(x))) <= {0, 1, 2, 3}


def test_empty_stream():
    with pytest.raises(ValueError):
        RidgeRegression(1.0).fit_stream([])


@pytest.mark.parametrize("ridge", [2.0, None])
def test_device_path_matches_host_path(monkeypatch, ridge):
    """The accelerator path (Gram, eigh and solve in JAX float64) gives the host path's answer; forced on CPU."""
    import dualact.sketch.ridge as ridge_mod

    x = rng.normal(size=(300, 12))
    labels = rng.integers(0, 3, size=300)
    labels[-1] = 4  # a class first seen in the last batch: the targets grow while streaming
    host = RidgeClassifier(ridge, seed=2).fit_stream(_batches(x, labels, 50))
    monkeypatch.setattr(ridge_mod, "_on_accelerator", lambda: True)
    dev = RidgeClassifier(ridge, seed=2).fit_stream(_batches(x, labels, 50))
    assert dev.ridge_ == host.ridge_ and dev.n_validation_ == host.n_validation_
    assert isinstance(dev.coef_, np.ndarray) and dev.coef_.shape == host.coef_.shape == (12, 5)
    np.testing.assert_allclose(dev.coef_, host.coef_, rtol=1e-9, atol=1e-12)
    assert dev.gram_trace_ == pytest.approx(host.gram_trace_, rel=1e-12)
