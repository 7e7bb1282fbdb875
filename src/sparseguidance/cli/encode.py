"""Encode an image folder (one sub-folder per class) into SD-VAE latent shards for training."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sparseguidance.data import ImageFolder, encode_images
from sparseguidance.devices import use_device
from sparseguidance.errors import CheckpointError, ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """IMAGES OUT --vae PATH [--image-size] [--batch-size] [--shard-size] [--device]."""
    parser.add_argument("images", type=Path, help="image folder: IMAGES/CLASS/*.png|jpg")
    parser.add_argument("out", type=Path, help="folder for the latent shards")
    parser.add_argument(
        "--vae", required=True, type=Path, help="local diffusers AutoencoderKL folder (e.g. sd-vae-ft-ema)"
    )
    parser.add_argument("--image-size", type=int, default=256, help="center-crop and resize to this (default 256)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=10_000, help="samples per shard")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: CUDA when available, else cpu)")


def load_vae(path: Path, device: str) -> Any:
    """A diffusers AutoencoderKL from a local folder (no downloads), in eval mode."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ConfigError("encode needs diffusers: pip install 'sparseguidance[vae]'") from None
    if not path.is_dir():
        raise CheckpointError(f"VAE folder {path} does not exist")
    try:
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a diffusers AutoencoderKL folder ({e})") from None
    return vae.to(device).eval()


def run(args: argparse.Namespace) -> int:
    """Encode the folder and report where the shards went."""
    vae = load_vae(args.vae, str(use_device(args.device)))
    dataset = ImageFolder(args.images, args.image_size, channels=3)
    count = encode_images(dataset, vae, args.out, args.batch_size, args.shard_size)
    print(f"{count} latents of {dataset.num_classes} classes in {args.out}")
    return 0
