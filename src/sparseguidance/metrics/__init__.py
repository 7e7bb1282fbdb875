"""Sample-quality metrics computed as ADM's evaluator computes them: FID, sFID, IS, precision / recall, accuracy.

`evaluate("samples.npz", "VIRTUAL_imagenet256_labeled.npz")` scores samples with Inception features;
`Evaluator("mnist5k:heldout", EvalConfig(features="mnist"))` loads the domain classifier and the reference
once and then scores any number of uint8 image sets: `evaluator(images, labels)`. See docs/metrics.md.
"""

from sparseguidance.metrics.evaluate import EXTRACTORS, METRICS, EvalConfig, Evaluator, evaluate
from sparseguidance.metrics.features import FeatureExtractor, Features, extract
from sparseguidance.metrics.frechet import Gaussian, fit_gaussian, frechet_distance
from sparseguidance.metrics.reference import ReferenceStats, load_reference, reference_from_features, save_reference
from sparseguidance.metrics.scores import accuracy, inception_score, precision_recall

__all__ = [
    "EXTRACTORS",
    "METRICS",
    "EvalConfig",
    "Evaluator",
    "FeatureExtractor",
    "Features",
    "Gaussian",
    "ReferenceStats",
    "accuracy",
    "evaluate",
    "extract",
    "fit_gaussian",
    "frechet_distance",
    "inception_score",
    "load_reference",
    "precision_recall",
    "reference_from_features",
    "save_reference",
]
