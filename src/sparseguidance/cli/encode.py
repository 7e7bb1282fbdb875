"""Encode an image folder (one sub-folder per class) into SD-VAE latent shards for training."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparseguidance.cli.arguments import whole
from sparseguidance.data import ImageFolder, encode_images
from sparseguidance.devices import use_device
from sparseguidance.files import check_output_folder
from sparseguidance.sampling.vae import load_autoencoder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """IMAGES OUT --vae PATH [--image-size] [--batch-size] [--shard-size] [--device]."""
    parser.add_argument("images", type=Path, help="image folder: IMAGES/CLASS/*.png|jpg")
    parser.add_argument("out", type=Path, help="folder for the latent shards")
    parser.add_argument(
        "--vae",
        required=True,
        metavar="DIR|OWNER/NAME",
        help="diffusers AutoencoderKL folder, or a Hub id where online (e.g. stabilityai/sd-vae-ft-ema)",
    )
    parser.add_argument("--image-size", type=whole(8), default=256, help="center-crop and resize to this (default 256)")
    parser.add_argument("--batch-size", type=whole(1), default=32)
    parser.add_argument("--shard-size", type=whole(1), default=10_000, help="samples per shard")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: CUDA when available, else cpu)")


def run(args: argparse.Namespace) -> int:
    """Encode the folder and report where the shards went."""
    check_output_folder(args.out, "OUT")
    vae = load_autoencoder(args.vae, str(use_device(args.device)))
    dataset = ImageFolder(args.images, args.image_size, channels=3)
    count = encode_images(dataset, vae, args.out, args.batch_size, args.shard_size)
    print(f"{count} latents of {dataset.num_classes} classes in {args.out}")
    return 0
