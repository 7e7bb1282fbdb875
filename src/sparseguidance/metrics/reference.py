"""Reference statistics files: ADM's reference batches and our own, tagged with the extractor that made them.

ADM's batches (`VIRTUAL_imagenet256_labeled.npz`, …) hold `mu`, `sigma` (pool features), `mu_s`, `sigma_s`
(spatial features) and the reference images `arr_0`; their statistics come from the same 2015 Inception
graph as ours, so they carry its tag. Ours add `extractor` (the tag) and `features` (the pool features,
for precision and recall, so the reference images need not be kept or re-encoded).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseguidance.errors import ConfigError, DataError
from sparseguidance.files import NPZ_ERRORS, atomic_write
from sparseguidance.metrics.features import Features
from sparseguidance.metrics.frechet import Gaussian, fit_gaussian
from sparseguidance.metrics.inception import TAG as INCEPTION_TAG


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """What a reference contributes to the metrics: Gaussians of its features, and the features for P/R."""

    extractor: str  # tag of the feature extractor that made these statistics
    pool: Gaussian
    spatial: Gaussian | None = None
    features: np.ndarray | None = None  # pool features (N, D), for precision / recall

    def __post_init__(self) -> None:
        if self.features is not None and not np.isfinite(self.features).all():
            raise DataError("the reference's features hold NaN or infinite values")

    def check_extractor(self, tag: str) -> None:
        """Raise ConfigError unless these statistics were made by the extractor `tag`."""
        if tag != self.extractor:
            raise ConfigError(
                f"the reference statistics were made by extractor {self.extractor!r}, not {tag!r}: "
                "features of different networks are not comparable; recompute them with `sparseguidance ref-stats`"
            )


def reference_from_features(features: Features, tag: str) -> ReferenceStats:
    """Reference statistics of extracted features."""
    spatial = None if features.spatial is None else fit_gaussian(features.spatial)
    return ReferenceStats(tag, fit_gaussian(features.pool), spatial, features.pool.astype(np.float32))


def is_statistics_file(path: str | Path) -> bool:
    """Whether `path` is an npz that holds statistics (`mu`), rather than only images."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path) as archive:
            return "mu" in archive.files
    except NPZ_ERRORS as e:
        raise DataError(f"cannot read {path} ({e})") from None


def save_reference(path: str | Path, stats: ReferenceStats) -> None:
    """Write statistics as an ADM-compatible npz (plus `extractor` and `features`), atomically."""
    arrays = {"mu": stats.pool.mu, "sigma": stats.pool.sigma, "extractor": np.array(stats.extractor)}
    if stats.spatial is not None:
        arrays.update(mu_s=stats.spatial.mu, sigma_s=stats.spatial.sigma)
    if stats.features is not None:
        arrays["features"] = stats.features

    def write(tmp: str) -> None:
        buffer = io.BytesIO()  # np.savez would append `.npz` to a temporary name; write the bytes ourselves
        np.savez(buffer, **arrays)
        Path(tmp).write_bytes(buffer.getvalue())

    atomic_write(path, write)


def load_reference(path: str | Path) -> ReferenceStats:
    """Statistics from one of our files or an ADM reference batch (tagged as the 2015 Inception)."""
    path = Path(path)
    try:
        with np.load(path) as archive:
            if "mu" not in archive.files or "sigma" not in archive.files:
                raise DataError(f"{path} holds no statistics (mu, sigma); it has {', '.join(archive.files)}")
            tag = str(archive["extractor"]) if "extractor" in archive.files else INCEPTION_TAG
            spatial = Gaussian(archive["mu_s"], archive["sigma_s"]) if "mu_s" in archive.files else None
            features = archive["features"] if "features" in archive.files else None
            return ReferenceStats(tag, Gaussian(archive["mu"], archive["sigma"]), spatial, features)
    except (*NPZ_ERRORS, KeyError) as e:
        raise DataError(f"cannot read reference statistics {path} ({e})") from None
