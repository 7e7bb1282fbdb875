"""Inception Score, improved precision and recall, and classifier accuracy, over extracted features.

Each metric follows OpenAI's ADM evaluator (`guided-diffusion/evaluations/evaluator.py`) by default, with the
other convention in use as an option: IS over chunks of 5,000 samples or over 10 equal splits, precision / recall
on float16 (ADM's) or float32 pairwise distances.
"""

from __future__ import annotations

import numpy as np
import torch

from sparseguidance.errors import ConfigError, DataError

IS_CHUNK = 5000  # ADM's split_size: samples per IS part
IS_SPLITS = 10  # improved-gan's number of IS parts
INCEPTION_CLASSES = 1008  # outputs of the FID Inception's classifier, whose IS ADM's chunks of 5,000 were made for
IS_CONVENTIONS = {
    "chunks-5000": "consecutive chunks of 5,000 samples, the last one shorter (ADM's evaluator)",
    "splits-10": "10 equal consecutive splits (improved-gan, Salimans et al. 2016)",
}
ADM_BLOCK = 10_000  # ADM's row and column batch for pairwise distances; it falls back to float32 per block
PR_DISTANCES = {
    "adm-float16": "distances in float16, a block of 10,000 × 10,000 in float32 if one overflows (ADM's evaluator)",
    "float32": "distances in float32",
}


def check_choice(value: str, choices: dict[str, str], what: str) -> None:
    """Refuse a convention that is not one of `choices`, naming them."""
    if value not in choices:
        raise ConfigError(f"unknown {what} {value!r}; known: {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------- IS
def is_parts(n: int, convention: str) -> list[slice]:
    """The consecutive parts IS averages over: ADM's chunks of 5,000 (one chunk below that) or 10 equal splits."""
    check_choice(convention, IS_CONVENTIONS, "IS convention")
    if convention == "chunks-5000":
        return [slice(start, min(start + IS_CHUNK, n)) for start in range(0, n, IS_CHUNK)]
    return [slice(i * n // IS_SPLITS, (i + 1) * n // IS_SPLITS) for i in range(IS_SPLITS)]


def part_sizes(n: int, convention: str) -> list[int]:
    """Samples in each IS part."""
    return [len(range(n)[part]) for part in is_parts(n, convention)]


def is_min_part(classes: int) -> int:
    """Smallest IS part that estimates p(y) as well as ADM's: 5,000 samples per 1,008 classes, in proportion."""
    return round(IS_CHUNK * classes / INCEPTION_CLASSES)


def is_warning(n: int, classes: int, convention: str) -> str | None:
    """Why IS of `n` samples over `classes` classes is biased low against ADM's chunks of 5,000 (None if it is not)."""
    smallest, least = min(part_sizes(n, convention)), is_min_part(classes)
    if smallest >= least:
        return None
    return (
        f"IS over a part of {smallest:,} samples ({convention}: {parts_text(n, convention)}) is biased low: "
        f"the marginal p(y) over {classes:,} classes wants parts of at least {least:,} (ADM: 5,000 for Inception)"
    )


def parts_text(n: int, convention: str) -> str:
    """`1 part of 300`, `10 parts of 500`, `3 parts of 5,000, 5,000, 2,000`."""
    sizes = part_sizes(n, convention)
    each = f"{sizes[0]:,}" if len(set(sizes)) == 1 else ", ".join(f"{s:,}" for s in sizes)
    return f"{len(sizes)} part{'s' * (len(sizes) > 1)} of {each}"


def inception_score(logits: np.ndarray, convention: str = "chunks-5000") -> float:
    """IS = exp(E_x KL(p(y|x) ‖ p(y))) on each consecutive part (no shuffling), averaged over the parts.

    p(y|x) is the softmax of `logits` (N, K); p(y) is its mean over the part. `convention`: a key of
    IS_CONVENTIONS; the two agree at N = 50,000 (ten parts of 5,000).
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    sizes = part_sizes(len(logits), convention) if logits.ndim == 2 else [0]
    if min(sizes, default=0) < 1:
        raise DataError(f"IS ({convention}) needs logits (N, K), a sample in every part; got {tuple(logits.shape)}")
    p = torch.softmax(logits, dim=1)
    return float(torch.stack([part_score(p[part]) for part in is_parts(len(p), convention)]).mean())


def part_score(p: torch.Tensor) -> torch.Tensor:
    """exp of the mean KL divergence of each row of p (N, K) from their mean; 0·log 0 = 0."""
    marginal = p.mean(dim=0, keepdim=True)
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, marginal)).sum(dim=1).mean().exp()


# ---------------------------------------------------------------------------------------------- precision / recall
def squared_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances (U, V) between rows of u and v, ‖u‖² − 2 u·v + ‖v‖², clamped at 0."""
    return (u.square().sum(1)[:, None] - 2 * u @ v.T + v.square().sum(1)[None, :]).clamp_min(0)


def half(x: torch.Tensor) -> torch.Tensor:
    """x rounded to float16 (±inf beyond 65,504), kept in float32, which holds every float16 exactly."""
    return x.half().float()


def squared_distances_float16(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same distances in ADM's float16 arithmetic: the inputs and every operation's result rounded to float16.

    Sums (the norms, the matmul) accumulate in float32 before their rounding, as GPUs sum float16; products of
    float16 numbers are exact in float32. Overflow gives ±inf (or NaN), as in float16.
    """
    u, v = half(u), half(v)
    norm_u, norm_v = half(half(u.square()).sum(1)), half(half(v.square()).sum(1))
    return half(half(norm_u[:, None] - half(2 * half(u @ v.T))) + norm_v[None, :]).clamp_min(0)


def block_distances(u: torch.Tensor, v: torch.Tensor, distances: str) -> torch.Tensor:
    """Squared distances of one block: ADM's float16 ones unless one is not finite, float32 then (and by choice)."""
    if distances == "adm-float16":
        d = squared_distances_float16(u, v)
        if d.isfinite().all():
            return d
    return squared_distances(u, v)


def manifold_radii(features: torch.Tensor, k: int, distances: str, batch_size: int = ADM_BLOCK) -> torch.Tensor:
    """Squared distance of each feature to its k-th nearest neighbour in the same set (itself excluded).

    Rows and columns go in blocks of `batch_size`; each column block keeps its k + 1 nearest (self included).
    """
    if len(features) <= k:
        raise DataError(f"a k = {k} manifold needs more than {k} feature vectors, got {len(features)}")
    radii = []
    for rows in features.split(batch_size):
        nearest = [
            block_distances(rows, cols, distances).topk(min(k + 1, len(cols)), dim=1, largest=False).values
            for cols in features.split(batch_size)
        ]
        radii.append(torch.cat(nearest, dim=1).kthvalue(k + 1, dim=1).values)  # k + 1: the feature itself counts
    return torch.cat(radii)


def precision_recall(
    reference: np.ndarray,
    samples: np.ndarray,
    k: int = 3,
    distances: str = "float32",
    batch_size: int = ADM_BLOCK,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with ADM's k = 3 manifold estimate.

    precision: fraction of samples inside the k-NN ball of some reference feature;
    recall: fraction of reference features inside the k-NN ball of some sample (squared distances, `≤`).
    `distances`: a key of PR_DISTANCES. Features are float32 (as ADM feeds them); distances are computed in blocks
    of `batch_size` rows and columns on `device`, so memory stays O(batch_size²); ADM's 10,000 decides where
    float16 falls back to float32 as ADM does.
    """
    check_choice(distances, PR_DISTANCES, "precision/recall distances")
    ref = torch.as_tensor(np.asarray(reference), dtype=torch.float32, device=device)
    fake = torch.as_tensor(np.asarray(samples), dtype=torch.float32, device=device)
    if ref.ndim != 2 or fake.ndim != 2 or ref.shape[1] != fake.shape[1]:
        raise DataError(f"precision/recall need features (N, D) of one size, got {tuple(ref.shape)}, {fake.shape}")
    ref_radii, fake_radii = (manifold_radii(x, k, distances, batch_size) for x in (ref, fake))
    fake_in_ref = torch.zeros(len(fake), dtype=torch.bool, device=device)
    ref_in_fake = torch.zeros(len(ref), dtype=torch.bool, device=device)
    for r in range(0, len(ref), batch_size):
        for f in range(0, len(fake), batch_size):
            d = block_distances(ref[r : r + batch_size], fake[f : f + batch_size], distances)  # (refs, samples)
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
