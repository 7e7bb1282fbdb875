"""The feature-extractor interface: uint8 images in, pool / spatial / logit features out, batch by batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sparseguidance.errors import DataError

OUTPUTS = ("pool", "spatial", "logits")


@dataclass(frozen=True, eq=False)
class Features:
    """Features of one image set: pool (N, D) for FID and P/R, spatial (N, S) for sFID, logits (N, K) for IS."""

    pool: np.ndarray
    spatial: np.ndarray | None = None
    logits: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.pool)


class FeatureExtractor(nn.Module):
    """Maps uint8 images (N, H, W) or (N, H, W, C) to a dict with some of `pool`, `spatial`, `logits`."""

    tag: str  # names the network and its weights; statistics made under different tags are never compared
    outputs: tuple[str, ...]  # which of OUTPUTS `forward` returns
    label_classes: int | None = None  # set when the logits are the data's own classes (a domain classifier)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of a batch of uint8 images."""
        raise NotImplementedError


def as_nhwc(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> (N, H, W, C), refusing any other dtype or rank."""
    if images.dtype != torch.uint8:
        raise DataError(f"images must be uint8 in [0, 255] (the on-disk convention), got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DataError(f"images must be (N, H, W) or (N, H, W, C) with C = 1 or 3, got {tuple(images.shape)}")
    return images


@torch.inference_mode()
def extract(
    extractor: FeatureExtractor,
    images: Sequence[np.ndarray] | np.ndarray,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "features",
) -> Features:
    """Run `extractor` over `images` (anything with len() and slicing that yields uint8 arrays) in batches."""
    if len(images) == 0:
        raise DataError("no images to extract features from")
    extractor = extractor.to(device).eval()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in extractor.outputs}
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        for name, value in extractor(batch).items():
            parts[name].append(value.float().cpu().numpy())
    return Features(**{name: np.concatenate(chunks) for name, chunks in parts.items()})
