"""Inception Score, improved precision and recall, and classifier accuracy, over extracted features."""

from __future__ import annotations

import numpy as np
import torch

from sparseguidance.errors import DataError


def inception_score(logits: np.ndarray, splits: int = 10) -> float:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))), averaged over `splits` consecutive chunks (no shuffling).

    p(y|x) is the softmax of `logits` (N, K); p(y) is its mean over the chunk. ADM cuts chunks of
    5,000 samples, which is 10 splits for the usual 50k; improved-gan's boundaries are used here.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise DataError(f"IS needs logits (N, K) with N ≥ {splits} (the splits), got shape {tuple(logits.shape)}")
    p = torch.softmax(logits, dim=1)
    n = len(p)
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(dim=0, keepdim=True)
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(dim=1)  # 0·log 0 = 0
        scores.append(kl.mean().exp())
    return float(torch.stack(scores).mean())


def squared_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (U, V) between rows of u and v, clamped at 0 as ADM does."""
    return (u.square().sum(1)[:, None] - 2 * u @ v.T + v.square().sum(1)[None, :]).clamp_min(0)


def manifold_radii(features: torch.Tensor, k: int = 3, batch_size: int = 1000) -> torch.Tensor:
    """Squared distance of each feature to its k-th nearest neighbour in the same set (itself excluded)."""
    if len(features) <= k:
        raise DataError(f"a k = {k} manifold needs more than {k} feature vectors, got {len(features)}")
    radii = [
        squared_distances(features[start : start + batch_size], features).kthvalue(k + 1, dim=1).values  # +1: self
        for start in range(0, len(features), batch_size)
    ]
    return torch.cat(radii)


def precision_recall(
    reference: np.ndarray,
    samples: np.ndarray,
    k: int = 3,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with ADM's k = 3 manifold estimate.

    precision: fraction of samples inside the k-NN ball of some reference feature;
    recall: fraction of reference features inside the k-NN ball of some sample. Distances are computed
    in blocks of `batch_size` rows and columns, so memory stays O(batch_size · N), on `device`.
    """
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float32, device=device)
    fake = torch.as_tensor(np.asarray(samples), dtype=torch.float32, device=device)
    if ref.ndim != 2 or fake.ndim != 2 or ref.shape[1] != fake.shape[1]:
        raise DataError(f"precision/recall need features (N, D) of one size, got {tuple(ref.shape)}, {fake.shape}")
    ref_radii, fake_radii = manifold_radii(ref, k, batch_size), manifold_radii(fake, k, batch_size)
    fake_in_ref = torch.zeros(len(fake), dtype=torch.bool, device=device)
    ref_in_fake = torch.zeros(len(ref), dtype=torch.bool, device=device)
    for r in range(0, len(ref), batch_size):
        for f in range(0, len(fake), batch_size):
            d = squared_distances(ref[r : r + batch_size], fake[f : f + batch_size])  # (refs, samples)
            fake_in_ref[f : f + batch_size] |= (d <= ref_radii[r : r + batch_size, None]).any(dim=0)
            ref_in_fake[r : r + batch_size] |= (d <= fake_radii[None, f : f + batch_size]).any(dim=1)
    return fake_in_ref.double().mean().item(), ref_in_fake.double().mean().item()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max class is the label they were generated for."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise DataError(f"accuracy needs logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise DataError(f"labels must lie in [0, {logits.shape[1]}), got {labels.min()}..{labels.max()}")
    return float((logits.argmax(axis=1) == labels).mean())
