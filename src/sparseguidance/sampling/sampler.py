"""Sampling with a guidance method: per-sample seeds, the batch loop with a progress bar, and what it cost.

`generate(make_guidance("sg", 1.5, 0.5, 0.9), {"main": model}, labels, seed=0, steps=40)` returns Samples:
images (N, C, H, W) float (pixels in [−1, 1], not clipped, or decoded latents), their labels, and the cost
per image (NFE, network forwards, FLOPs in both conventions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sparseguidance.conditions import Condition, TextCondition
from sparseguidance.devices import autocast
from sparseguidance.errors import ConfigError
from sparseguidance.flops import ZERO, Flops, prefix_flops, rest_flops
from sparseguidance.guidance.evaluate import Models, Tally, check_models, guided_velocity
from sparseguidance.guidance.methods import Guidance
from sparseguidance.sampling.integrators import Integrator, euler, euler_maruyama, heun
from sparseguidance.sampling.seeds import LABELS, gaussian, sample_generators

INTEGRATORS: dict[str, Integrator] = {"euler": euler, "heun": heun, "sde": euler_maruyama}
CLASS_CHOICES = ("all", "random")  # besides an explicit list of classes
MAX_IMAGES = 10_000_000  # 200 × the 50,000 of an FID run: a larger count is a typo (and would not fit in memory)
MAX_STEPS = 100_000  # 100 × DDPM's 1,000 steps: a larger count is a typo


@dataclass(frozen=True)
class Cost:
    """Per-image cost of a run: velocity evaluations (NFE), network forwards, FLOPs (both conventions)."""

    nfe: float
    forwards: float
    flops: Flops

    def as_dict(self) -> dict[str, float]:
        """Plain data for a JSON summary (GFLOPs)."""
        return {"nfe": self.nfe, "forwards": self.forwards, **self.flops.as_dict("gflops_per_image")}


def cost_of(tally: Tally, models: Models, count: int, text_tokens: int = 0) -> Cost:
    """Per-image cost of the prefixes and forwards a tally counted over `count` samples (FLOPs module's counts);
    text_tokens: a text model's padded prompt length."""
    total = ZERO
    for role, rows in tally.prefixes.items():
        total = total + prefix_flops(models[role].config, text_tokens=text_tokens) * rows
    for (role, gamma), rows in tally.forwards.items():
        total = total + rest_flops(models[role].config, gamma, text_tokens=text_tokens) * rows
    return Cost(tally.evaluations / count, sum(tally.forwards.values()) / count, total * (1 / count))


@dataclass
class Samples:
    """What `generate` made: images (N, C, H, W) float on the CPU, their labels and indices, cost and time."""

    images: torch.Tensor
    labels: Condition
    indices: torch.Tensor
    cost: Cost
    seconds: float

    def summary(self) -> dict[str, Any]:
        """count, NFE, forwards and GFLOPs per image, wall time and images/s."""
        count = len(self.labels)
        rate = count / self.seconds if self.seconds > 0 else float("inf")
        return {"count": count, **self.cost.as_dict(), "wall_s": self.seconds, "images_per_s": rate}


def class_labels(classes: Sequence[int] | str, indices: Iterable[int], num_classes: int, seed: int = 0) -> torch.Tensor:
    """Labels by sample index: a list cycles, 'all' cycles 0..C−1, 'random' draws per sample from (seed, index)."""
    indices = list(indices)
    if classes == "random":
        generators = sample_generators(seed, indices, LABELS)  # its own stream: the noise stays the same
        return torch.stack([torch.randint(num_classes, (), generator=g) for g in generators]).long()
    pool = list(range(num_classes)) if classes == "all" else [] if isinstance(classes, str) else list(classes)
    if not pool or not all(0 <= c < num_classes for c in pool):
        raise ConfigError(
            f"classes must be 'all', 'random' or a list of classes in 0..{num_classes - 1}, got {classes}"
        )
    return torch.tensor([pool[i % len(pool)] for i in indices], dtype=torch.long)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's parameters (CPU for a model without any)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def sample_batch(
    guidance: Guidance,
    models: Models,
    labels: Condition,
    indices: Sequence[int],
    *,
    seed: int = 0,
    steps: int = 40,
    sampler: str = "euler",
    tally: Tally | None = None,
    share: bool = True,
    precision: str = "fp32",
) -> torch.Tensor:
    """One batch in the model's space (latents or pixels): each sample's noise, then the integrator from t = 0 to 1.

    share: run a prefix once for branches of one model and condition; precision: fp32, or bf16/fp16 autocast.
    """
    config = models["main"].config
    device = model_device(models["main"])
    generators = sample_generators(seed, indices)  # noise first, then every forward's draws, in step order
    x = gaussian((len(indices), config.in_channels, config.input_size, config.input_size), generators, device)
    velocity = partial(
        guided_velocity,
        guidance=guidance,
        models=models,
        labels=labels.to(device),
        num_steps=steps,
        generators=generators,
        tally=tally,
        share=share,
    )
    with torch.inference_mode(), autocast(device, precision):
        return INTEGRATORS[sampler](velocity, x, steps, generators)


def check_settings(guidance: Guidance, models: Models, labels: Condition, steps: int, sampler: str) -> None:
    """Raise ConfigError for settings that would fail (or mislead) only after the first batch."""
    check_models(guidance, models)
    if sampler not in INTEGRATORS:
        raise ConfigError(f"unknown sampler {sampler!r}; known: {', '.join(INTEGRATORS)}")
    if not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"steps must be from 1 to {MAX_STEPS:,}, got {steps}")
    if isinstance(labels, TextCondition):
        return
    num_classes = models["main"].config.num_classes
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ConfigError(f"labels must lie in 0..{num_classes - 1} (the null class is for guidance only)")


def generate(
    guidance: Guidance,
    models: Models,
    labels: Condition,
    *,
    seed: int = 0,
    steps: int = 40,
    sampler: str = "euler",
    batch_size: int = 32,
    indices: Sequence[int] | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool | tqdm = False,
    share: bool = True,
    precision: str = "fp32",
) -> Samples:
    """Sample len(labels) images in batches; image k depends only on (seed, indices[k], labels[k], settings).

    guidance:   a method from guidance.make_guidance;   models:   {"main": model} (+ "weak" for ag, ag+sg);
    labels:     classes (N,) from class_labels, or prompts (TextCondition, N rows);  seed: the run's seed;
    steps:      sampling steps;                          sampler:  "euler" | "heun" | "sde";
    batch_size: samples per batch (does not change the images);  indices: sample indices (default 0..N−1);
    decode:     latents -> images, applied per batch (e.g. sampling.vae.load_vae);
    progress:   show a progress bar (True) or advance the tqdm bar given;
    share:      run a prefix once for branches of one model and condition (False: every branch whole; the
                images are the same either way);    precision:  "fp32" | "bf16" | "fp16" (autocast).
    """
    indices = list(range(len(labels))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(labels) or batch_size < 1:
        raise ConfigError(
            f"need one index per label and batch_size ≥ 1, got {len(indices)}, {len(labels)}, {batch_size}"
        )
    check_settings(guidance, models, labels, steps, sampler)
    tally, images = Tally(), []
    bar = progress if isinstance(progress, tqdm) else tqdm(total=len(labels), unit="img", disable=not progress)
    start = time.perf_counter()
    try:
        for lo in range(0, len(labels), batch_size):
            batch = slice(lo, lo + batch_size)
            x = sample_batch(
                guidance,
                models,
                labels[batch],
                indices[batch],
                seed=seed,
                steps=steps,
                sampler=sampler,
                tally=tally,
                share=share,
                precision=precision,
            )
            images.append((decode(x) if decode is not None else x).float().cpu())
            bar.update(len(images[-1]))
    finally:
        if bar is not progress:
            bar.close()
    seconds = time.perf_counter() - start
    text_tokens = labels.states.shape[1] if isinstance(labels, TextCondition) else 0
    cost = cost_of(tally, models, max(len(labels), 1), text_tokens)
    stacked = torch.cat(images) if images else torch.empty(0)
    return Samples(stacked, labels.cpu(), torch.tensor(indices, dtype=torch.long), cost, seconds)
