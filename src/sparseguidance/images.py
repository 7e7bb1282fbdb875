"""Image conventions: float in [−1, 1] NCHW inside the library, uint8 NHWC on disk (ADM npz, PNG)."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [−1, 1], (N, C, H, W) -> uint8 (N, H, W, C), rounded and clipped."""
    scaled = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W, C) or (N, H, W) -> float in [−1, 1], (N, C, H, W)."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    return torch.from_numpy(array.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
