"""Image sets to evaluate: an ADM-style npz (`arr_0` uint8 NHWC, optional `arr_1` labels), an image folder,
or an MNIST-5k split named `mnist5k:train|heldout|all`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sparseguidance.data import IMAGE_SUFFIXES, MNIST_SPLITS, mnist5k
from sparseguidance.errors import DataError
from sparseguidance.files import NPZ_ERRORS

MNIST_PREFIX = "mnist5k:"


class ImageFiles:
    """Image files decoded on demand: `files[a:b]` is uint8 (B, H, W[, C]); every file must have one shape."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: slice) -> np.ndarray:
        images = [self.read(path) for path in self.files[index]]
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise DataError(f"images of different shapes in one folder: {sorted(shapes)}")
        return np.stack(images)

    @staticmethod
    def read(path: Path) -> np.ndarray:
        """One image as uint8 (H, W) for greyscale files, (H, W, 3) for any other mode."""
        try:
            with Image.open(path) as image:
                return np.asarray(image if image.mode == "L" else image.convert("RGB"), dtype=np.uint8)
        except (OSError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {path} ({e})") from None


@dataclass(frozen=True, eq=False)
class ImageSet:
    """uint8 images (N, H, W[, C]) as an array or decoded-on-demand files, with class labels when known."""

    images: np.ndarray | ImageFiles
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def check_images(images: np.ndarray, where: str) -> np.ndarray:
    """Raise DataError unless `images` is uint8 (N, H, W) or (N, H, W, 1|3)."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise DataError(f"{where}: expected uint8 images (N, H, W[, 1|3]), got {images.dtype} {images.shape}")
    return images


def check_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    """Raise DataError unless `labels` is (count,) non-negative integers."""
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer) or (count and labels.min() < 0):
        raise DataError(f"{where}: labels must be {count} non-negative integers, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


def read_npz(path: Path) -> ImageSet:
    """`arr_0` (images) and, when it is a label vector, `arr_1` of an ADM sample or reference batch."""
    try:
        with np.load(path) as archive:
            if "arr_0" not in archive:
                raise DataError(f"{path} has no image array arr_0 (it holds {', '.join(archive.files)})")
            images = check_images(archive["arr_0"], str(path))
            labels = archive["arr_1"] if "arr_1" in archive else None
    except NPZ_ERRORS as e:
        raise DataError(f"cannot read {path} ({e})") from None
    return ImageSet(images, None if labels is None else check_labels(labels, len(images), f"{path} arr_1"))


def read_folder(root: Path) -> ImageSet:
    """Every image under `root`, in sorted order; labels when all of them sit in per-class sub-folders."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    parents = [p.relative_to(root).parent for p in files]
    if any(parent == Path(".") or len(parent.parts) > 1 for parent in parents):
        return ImageSet(ImageFiles(files))
    classes = sorted({parent.name for parent in parents})
    return ImageSet(ImageFiles(files), np.array([classes.index(parent.name) for parent in parents], dtype=np.int64))


def read_images(source: str | Path) -> ImageSet:
    """The images (and labels) of an npz file, an image folder or `mnist5k:SPLIT`."""
    text = str(source)
    if text.startswith(MNIST_PREFIX):
        split = text[len(MNIST_PREFIX) :]
        if split not in MNIST_SPLITS:
            raise DataError(f"unknown MNIST-5k split {split!r} in {text}; known: {', '.join(MNIST_SPLITS)}")
        images, labels = mnist5k(split)
        return ImageSet(images, labels)
    path = Path(source)
    if path.is_dir():
        return read_folder(path)
    if path.suffix == ".npz" and path.is_file():
        return read_npz(path)
    raise DataError(f"{path} is neither an .npz file nor an image folder (or {MNIST_PREFIX}SPLIT)")
