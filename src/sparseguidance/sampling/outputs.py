"""Writing samples: a PNG grid, one PNG per image, an ADM-format `.npz`, and resumable shards of one.

ADM npz (the evaluator of Dhariwal & Nichol): `arr_0` uint8 (N, H, W, C), `arr_1` int64 labels (N,).
A large run is split by sample index into shards of fixed size; shard s holds samples
s·size .. (s+1)·size − 1 and is written atomically, so a killed run re-run skips the finished ones and
the merge (sorted by index) is the same npz as an uninterrupted run's. `run.json` in the shard folder
records the settings, so shards of a different run are never mixed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sparseguidance.errors import ConfigError, DataError
from sparseguidance.files import NPZ_ERRORS, atomic_write

MANIFEST = "run.json"


def write_npz(path: str | Path, images: np.ndarray, labels: np.ndarray, **extra: np.ndarray) -> None:
    """Write an ADM-format npz atomically: arr_0 uint8 NHWC images, arr_1 labels (plus named extras)."""
    if images.dtype != np.uint8 or images.ndim != 4 or len(labels) != len(images):
        raise ValueError(f"expected uint8 (N, H, W, C) images and N labels, got {images.dtype} {images.shape}")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, arr_0=images, arr_1=np.asarray(labels, dtype=np.int64), **extra)

    atomic_write(path, write)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an npz file, or DataError if it is missing or unreadable."""
    try:
        with np.load(path) as data:
            return {key: data[key] for key in data.files}
    except NPZ_ERRORS as e:
        raise DataError(f"{path} is missing or not a readable npz ({e})") from None


def save_grid(path: str | Path, images: np.ndarray, columns: int | None = None) -> None:
    """One PNG of uint8 NHWC images in rows of `columns` (default: a near-square grid), black where none."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for k, image in enumerate(images):
        r, q = divmod(k, columns)
        grid[r * h : (r + 1) * h, q * w : (q + 1) * w] = image
    atomic_write(path, lambda tmp: png(grid).save(tmp, format="PNG"))


def save_pngs(folder: str | Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    """One PNG per image, named INDEX_LABEL.png (e.g. 000042_207.png)."""
    for image, label, index in zip(images, labels, indices, strict=True):
        atomic_write(Path(folder) / f"{int(index):06d}_{int(label)}.png", lambda tmp, a=image: png(a).save(tmp, "PNG"))


def png(image: np.ndarray) -> Image.Image:
    """A PIL image from uint8 HWC (one channel: grayscale)."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def shard_range(shard: int, count: int, shard_size: int) -> range:
    """Sample indices of a shard."""
    return range(shard * shard_size, min((shard + 1) * shard_size, count))


def num_shards(count: int, shard_size: int) -> int:
    """Shards of a run of `count` samples."""
    return math.ceil(count / shard_size)


def rank_shards(count: int, shard_size: int, rank: int, world: int) -> list[int]:
    """The shards rank r of K writes: r, r + K, r + 2K, …"""
    return list(range(rank, num_shards(count, shard_size), world))


def shard_folder(out: str | Path) -> Path:
    """The shard folder of an npz output: `x.npz` -> `x_shards/`."""
    out = Path(out)
    return out.with_name(f"{out.stem}_shards")


def shard_path(folder: str | Path, shard: int) -> Path:
    """Where a shard lives."""
    return Path(folder) / f"shard-{shard:05d}.npz"


def write_shard(folder: str | Path, shard: int, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    """Write one finished shard atomically (with its sample indices, checked by the merge)."""
    write_npz(shard_path(folder, shard), images, labels, indices=np.asarray(indices, dtype=np.int64))


def missing_shards(folder: str | Path, count: int, shard_size: int) -> list[int]:
    """Shards not yet written (a shard file exists only once complete)."""
    return [s for s in range(num_shards(count, shard_size)) if not shard_path(folder, s).is_file()]


def check_manifest(folder: str | Path, settings: Mapping[str, Any]) -> None:
    """Record the run's settings in the shard folder, or refuse a folder that holds another run's shards."""
    path = Path(folder) / MANIFEST
    document = json.loads(json.dumps(settings))  # plain data, as it will read back
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored != document:
            differing = sorted(k for k in stored.keys() | document.keys() if stored.get(k) != document.get(k))
            raise ConfigError(
                f"{folder} holds shards of a different run (settings differ in: {', '.join(differing)}); "
                "use another output or delete that folder"
            )
        return
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))


def merge_shards(folder: str | Path, count: int, shard_size: int, out: str | Path) -> None:
    """Write the single ADM npz of samples 0..count−1 from the shards, checking that each holds its indices."""
    missing = missing_shards(folder, count, shard_size)
    if missing:
        raise DataError(f"{folder}: {len(missing)} shard(s) missing (first: {missing[0]}); re-run to finish them")
    images, labels = [], []
    for shard in range(num_shards(count, shard_size)):
        data = read_npz(shard_path(folder, shard))
        if not np.array_equal(data["indices"], np.asarray(shard_range(shard, count, shard_size))):
            raise DataError(
                f"{shard_path(folder, shard)} does not hold samples {shard_range(shard, count, shard_size)}"
            )
        images.append(data["arr_0"])
        labels.append(data["arr_1"])
    write_npz(out, np.concatenate(images), np.concatenate(labels))
