"""What a difference of one FID point means on MNIST-5k, with the domain classifier's and Inception's features.

    python benchmarks/metric_scale.py [--threads 1] [--batch-size 50] [--out docs/results/metric-scale.json]

The reference is the held-out split (1,000 digits). Compared against it:
  train-vs-heldout  the training split (4,000 digits, disjoint from the held-out ones)
  second-draw       1,000 digits drawn from the training split (seed 0): a second sample of the same distribution
  noise             1,000 images of uniform noise (seed 0)
  blurred           the second draw after a Gaussian blur (σ = 1 px)
Each row has FID, precision and recall (and sFID for Inception); the file also
records how long Inception features take per 1,000 images on this machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sparseguidance.data import mnist5k
from sparseguidance.metrics import extract, fit_gaussian, frechet_distance, precision_recall
from sparseguidance.metrics.features import FeatureExtractor, Features
from sparseguidance.metrics.inception import default_weights, load_inception
from sparseguidance.metrics.mnist_features import load_classifier
from sparseguidance.provenance import provenance, write_json

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "metric-scale.json"
DRAW = 1000
BLUR_SIGMA = 1.0


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (N, H, W) images convolved with a separable Gaussian (radius 3σ, edges zero-padded), rounded."""
    radius = int(3 * sigma)
    taps = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    x = torch.from_numpy(images).float()[:, None]
    x = F.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, radius))
    x = F.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))
    return x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def subset(features: Features, index: np.ndarray) -> Features:
    """The features of some of the images."""
    return Features(*(None if f is None else f[index] for f in (features.pool, features.spatial, features.logits)))


def row(name: str, comparison: str, samples: Features, reference: Features) -> dict[str, str | int | float]:
    """The metrics of one comparison against the reference."""
    out = {"features": name, "comparison": comparison, "n": len(samples)}
    out["fid"] = frechet_distance(fit_gaussian(samples.pool), fit_gaussian(reference.pool))
    if samples.spatial is not None:
        out["sfid"] = frechet_distance(fit_gaussian(samples.spatial), fit_gaussian(reference.spatial))
    out["precision"], out["recall"] = precision_recall(reference.pool, samples.pool)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    """Extract features of every image set with both extractors, compare, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    heldout, _ = mnist5k("heldout")
    train, _ = mnist5k("train")
    rng = np.random.default_rng(0)
    draw = rng.choice(len(train), DRAW, replace=False)
    sets = {
        "reference": heldout,
        "train": train,
        "noise": rng.integers(0, 256, size=(DRAW, 32, 32), dtype=np.uint8),
        "blurred": blur(train[draw], BLUR_SIGMA),
    }
    extractors: dict[str, FeatureExtractor] = {"mnist": load_classifier(), "inception": load_inception()}
    rows, inception_seconds, inception_images = [], 0.0, 0
    for name, extractor in extractors.items():
        feats = {}
        for key, images in sets.items():
            start = time.perf_counter()
            feats[key] = extract(extractor, images, args.batch_size, progress=True, desc=f"{name} {key}")
            if name == "inception":
                inception_seconds += time.perf_counter() - start
                inception_images += len(images)
        reference = feats["reference"]
        rows += [
            row(name, "train-vs-heldout", feats["train"], reference),
            row(name, "second-draw", subset(feats["train"], draw), reference),
            row(name, "noise", feats["noise"], reference),
            row(name, "blurred", feats["blurred"], reference),
        ]
        for r in rows[-4:]:
            print(r)

    seconds_per_1000 = round(1000 * inception_seconds / inception_images, 1)
    print(f"Inception features: {seconds_per_1000} s per 1,000 images ({args.threads} thread(s))")
    write_json(
        args.out,
        {
            **provenance(),
            "reference": f"MNIST-5k held-out split ({len(heldout)} digits)",
            "extractors": {name: e.tag for name, e in extractors.items()},
            "inception_weights": default_weights().name,
            "inception_seconds_per_1000_images": seconds_per_1000,
            "blur_sigma_px": BLUR_SIGMA,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
