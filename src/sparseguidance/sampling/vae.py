"""The SD-VAE (diffusers AutoencoderKL) from a local folder or, where the machine is online, a Hub id; `vae` extra."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparseguidance.errors import CheckpointError, ConfigError

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name, e.g. stabilityai/sd-vae-ft-ema


def load_autoencoder(spec: str | Path, device: str | torch.device = "cpu") -> Any:
    """An AutoencoderKL in eval mode from a folder (config.json + weights) or a Hugging Face Hub id (downloaded)."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ConfigError("the SD-VAE needs diffusers: pip install 'sparseguidance[vae]'") from None
    spec = str(spec)
    local = Path(spec).exists()
    if local and not (Path(spec) / "config.json").is_file():
        raise CheckpointError(f"{spec} is not an AutoencoderKL folder (it has no config.json)")
    if not local and not HUB_ID.fullmatch(spec):
        raise CheckpointError(f"{spec}: no such folder; give an AutoencoderKL folder or a Hub id (owner/name)")
    # low_cpu_mem_usage needs accelerate; asked for by default, diffusers would print a notice that it is missing
    options = {"local_files_only": local, "low_cpu_mem_usage": find_spec("accelerate") is not None}
    try:
        with nullcontext() if local else quiet_hub():
            vae = AutoencoderKL.from_pretrained(spec, **options)
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if local:
            raise CheckpointError(f"{spec}: cannot load the VAE ({reason})") from None
        raise CheckpointError(
            f"{spec} is no local folder and could not be fetched from the Hugging Face Hub (offline, or no such "
            f"repository: {reason}); where you are online, run `huggingface-cli download {spec} --local-dir DIR` "
            "and give --vae DIR"
        ) from None
    return vae.to(device).eval()


@contextmanager
def quiet_hub() -> Iterator[None]:
    """diffusers' and huggingface_hub's log lines and warnings held back while fetching from the Hub: offline, the
    client logs each of its retries (and a deprecation warning), and the error is then our one line."""
    loggers = [logging.getLogger(name) for name in ("diffusers", "huggingface_hub")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def load_vae(spec: str | Path, device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """A decoder latents -> images in [−1, 1] from an AutoencoderKL folder or Hub id (see load_autoencoder)."""
    return partial(decode_latents, load_autoencoder(spec, device))


def decode_latents(vae: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Images in [−1, 1] from latents scaled as in training (SD-VAE: z · 0.18215, the config's scaling_factor)."""
    with torch.inference_mode():
        images = vae.decode(latents / vae.config.scaling_factor).sample
    return images.clamp(-1, 1)
