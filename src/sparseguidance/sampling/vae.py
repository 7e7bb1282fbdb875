"""Decoding latents with an SD-VAE (diffusers AutoencoderKL) from a local folder; needs the `vae` extra."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from sparseguidance.errors import CheckpointError, ConfigError


def load_vae(path: str | Path, device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """A decoder latents -> images in [−1, 1] from an AutoencoderKL folder (config.json + weights), offline."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ConfigError("decoding latents needs diffusers: pip install 'sparseguidance[vae]'") from None
    if not (Path(path) / "config.json").is_file():
        raise CheckpointError(f"{path} is not an AutoencoderKL folder (no config.json), e.g. stabilityai/sd-vae-ft-ema")
    try:
        vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load the VAE ({e})") from None
    return partial(decode_latents, vae.to(device).eval())


def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] from latents scaled as in training (SD-VAE: z · 0.18215, the config's scaling_factor)."""
    with torch.inference_mode():
        images = vae.decode(latents / vae.config.scaling_factor).sample
    return images.clamp(-1, 1)
