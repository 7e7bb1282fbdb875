"""How much IS and precision/recall move with the convention: ADM's chunks of 5,000 against 10 splits, ADM's
float16 distances against float32.

    python benchmarks/metric_parity.py [--threads 1] [--out benchmarks/results/metric_parity.json]

IS: synthetic logits of a classifier sure (by `sharpness`) of one class drawn uniformly, over Inception's 1,008
classes and over MNIST's 10; each N takes the first N of one 50,000-sample draw, so N = 50,000, where the two
conventions agree, is the yardstick. Also the shipped MNIST classifier's IS of held-out digits taken classes
0..9 in turn (as the sampler and the study order them), at the study's sizes. Precision/recall: synthetic
Inception-like features (2,048 non-negative dimensions, 50 clusters; the samples' clusters 2 % further from 0
than the reference's), the same shifted by 1 in every dimension (larger norms, the same distances), and the
MNIST classifier's features of the MNIST-5k training split against the held-out one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sparseguidance.data import mnist5k
from sparseguidance.metrics import extract, inception_score, precision_recall
from sparseguidance.metrics.mnist_features import load_classifier
from sparseguidance.metrics.scores import IS_CONVENTIONS
from sparseguidance.provenance import provenance, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "metric_parity.json"
IS_COUNTS = (300, 1000, 5000, 10_000, 12_000, 50_000)
IS_SHARPNESS = {1008: (3.0, 6.0, 8.0, 9.0, 10.0), 10: (1.0, 3.0, 6.0)}  # classes -> logit margins of the sure class
DIGIT_COUNTS = (100, 200, 300, 500, 1000)
PR_COUNTS = (1000, 2000, 5000)
CLUSTERS, DIMS = 50, 2048


def sure_logits(n: int, classes: int, sharpness: float, rng: np.random.Generator) -> np.ndarray:
    """Logits `sharpness` above N(0, 1) noise for one class drawn uniformly per sample."""
    return sharpness * np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)] + rng.standard_normal(
        (n, classes), dtype=np.float32
    )


def is_rows() -> list[dict[str, float]]:
    """IS of both conventions at each N, and each one's difference from the 50,000-sample value."""
    rows = []
    for classes, margins in IS_SHARPNESS.items():
        for sharpness in margins:
            logits = sure_logits(max(IS_COUNTS), classes, sharpness, np.random.default_rng(0))
            full = inception_score(logits, "chunks-5000")
            for n in IS_COUNTS:
                row = {"classes": classes, "sharpness": sharpness, "n": n, "is_50k": full}
                for convention in IS_CONVENTIONS:
                    row[convention] = inception_score(logits[:n], convention)
                    row[f"{convention}_vs_50k"] = row[convention] / full - 1
                row["splits-10_vs_chunks-5000"] = row["splits-10"] / row["chunks-5000"] - 1
                rows.append({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
                print(rows[-1])
    return rows


def digit_is_rows() -> list[dict[str, float]]:
    """The classifier's IS of held-out digits in class-cycling order, both conventions, at the study's sizes."""
    images, labels = mnist5k("heldout")
    rank = np.zeros(len(labels), dtype=int)  # each digit's place among those of its class
    for label in np.unique(labels):
        rank[labels == label] = np.arange(np.sum(labels == label))
    order = np.lexsort((labels, rank))  # first digits of classes 0..9, then the second ones, ...
    logits = extract(load_classifier(), images[order]).logits
    rows = []
    for n in DIGIT_COUNTS:
        row = {"features": "mnist classifier, held-out digits", "n": n}
        row |= {convention: round(inception_score(logits[:n], convention), 4) for convention in IS_CONVENTIONS}
        row["splits-10_vs_chunks-5000"] = round(row["splits-10"] / row["chunks-5000"] - 1, 5)
        rows.append(row)
        print(row)
    return rows


def inception_like(n: int, centroids: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    """Non-negative features near random centroids, like Inception's pool features (mean ≈ 0.4)."""
    return np.maximum(centroids[rng.integers(0, len(centroids), n)] + spread * rng.standard_normal((n, DIMS)), 0)


def pr_row(name: str, reference: np.ndarray, samples: np.ndarray) -> dict[str, float | str | int]:
    """Precision/recall with float16 and float32 distances, and the difference."""
    row: dict[str, float | str | int] = {"features": name, "n_reference": len(reference), "n_samples": len(samples)}
    row["median_squared_norm"] = float(np.median((reference.astype(np.float64) ** 2).sum(1)))
    for distances in ("adm-float16", "float32"):
        row[f"precision_{distances}"], row[f"recall_{distances}"] = precision_recall(
            reference, samples, distances=distances
        )
    for metric in ("precision", "recall"):
        row[f"{metric}_float16_minus_float32"] = row[f"{metric}_adm-float16"] - row[f"{metric}_float32"]
    row = {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
    print(row)
    return row


def pr_rows() -> list[dict[str, float | str | int]]:
    """Both distance arithmetics on synthetic Inception-like features, large-norm ones and MNIST digits."""
    rng = np.random.default_rng(0)
    centroids = rng.gamma(0.8, 0.5, size=(CLUSTERS, DIMS))
    rows = []
    for n in PR_COUNTS:
        reference = inception_like(n, centroids, 0.3, rng).astype(np.float32)
        samples = inception_like(n, centroids * 1.02, 0.3, rng).astype(np.float32)  # a generator a little off
        rows.append(pr_row("inception-like", reference, samples))
        rows.append(pr_row("inception-like + 1", reference + 1, samples + 1))  # the same distances, larger norms
    classifier = load_classifier()
    heldout, train = (extract(classifier, mnist5k(split)[0]).pool for split in ("heldout", "train"))
    rows.append(pr_row(f"{classifier.tag} (train vs heldout)", heldout, train))
    return rows


def main() -> None:
    """Measure both metrics under both conventions and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    write_json(
        args.out,
        {**provenance(), "inception_score": is_rows(), "digits_is": digit_is_rows(), "precision_recall": pr_rows()},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
