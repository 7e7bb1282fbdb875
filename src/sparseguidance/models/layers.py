"""Pieces every model family shares: patch embedding, timestep embedding, adaLN modulation, unpatchify."""

from __future__ import annotations

import math

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """(B, C, H, W) image -> (B, T, D) patch tokens through a strided convolution (row-major over the grid)."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int, bias: bool = True) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, T, D)


class TimestepEmbedder(nn.Module):
    """t·scale -> sinusoidal features (256) -> MLP -> (B, D).

    SiT embeds t ∈ [0, 1] as is (scale 1), so its highest frequency turns by only one radian over the whole
    path and nearby noise levels look alike to a small model; scale 1000 (DiT's integer steps) spreads them.
    """

    def __init__(self, hidden_size: int, frequency_size: int = 256, scale: float = 1.0, bias: bool = True) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.scale = scale
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size, bias=bias), nn.SiLU(), nn.Linear(hidden_size, hidden_size, bias=bias)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * self.scale)[:, None] * freqs[None]  # (B, half)
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 256)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, with per-sample (B, 1, D) shift and scale."""
    return x * (1 + scale) + shift


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """(B, T, p·p·C) patch tokens of a square grid -> (B, C, H, W) image, in DiT's layout."""
    p, h = patch_size, math.isqrt(x.shape[1])
    x = x.reshape(x.shape[0], h, h, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], channels, h * p, h * p)
