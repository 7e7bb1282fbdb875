"""What every benchmark shares: random weights and interleaved timing on a possibly shared machine."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import torch
from torch import nn

K = TypeVar("K", bound=Hashable)


def random_weights(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Fill every parameter with N(0, std²): DiT's initialisation zeroes the adaLN gates and output layer."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model


def interleaved_medians(runs: Mapping[K, Callable[[], float]], repeats: int) -> dict[K, float]:
    """Median seconds of each run: one warm-up each, then `repeats` rounds over all of them in turn,
    so that a slow spell of a shared machine hits every run alike."""
    for run in runs.values():
        run()
    times: dict[K, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            times[key].append(run())
    return {key: statistics.median(values) for key, values in times.items()}
