"""What every benchmark shares: random weights, interleaved timing on a possibly shared machine, the guided methods."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from sparseguidance.flops import euler_step_flops
from sparseguidance.guidance import Guidance, make_guidance
from sparseguidance.models import ModelConfig

K = TypeVar("K", bound=Hashable)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}  # --clock process: this process's CPU time
SCALE = 1.5  # ω of every guided method
SG = make_guidance("sg", SCALE, 0.5, 0.9)  # SG_FLOPS
GUIDED: dict[str, tuple[Guidance, bool]] = {  # name -> (guidance, shared prefix)
    "none": (make_guidance("none"), True),
    "cfg": (make_guidance("cfg", SCALE), True),
    "sg": (SG, True),
    "sg_unshared": (SG, False),  # every branch whole, the paper's way
    "cfg+sg": (make_guidance("cfg+sg", SCALE, 0.5, 0.9), True),
}


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


def guided_gflops(config: ModelConfig, steps: int) -> dict[str, float]:
    """GFLOPs per sampling step (paper convention) of each guided method, as the sampler counts them."""
    return {name: euler_step_flops(g, config, None, steps, share).paper / 1e9 for name, (g, share) in GUIDED.items()}


def against_cfg(name: str, seconds: Mapping[str, float], gflops: Mapping[str, float], batch: int) -> dict[str, Any]:
    """A method's row: images/s, speedup and FLOPs ratio against the `cfg` entry of the same run."""
    rate = batch / seconds[name]
    return {
        "method": name,
        "images_per_s": rate,
        "speedup_vs_cfg": seconds["cfg"] / seconds[name],
        "flops_ratio_vs_cfg": gflops["cfg"] / gflops[name],
    }


def timed(clock: Callable[[], float], run: Callable[[], object]) -> float:
    """Seconds of one run by `clock`."""
    start = clock()
    run()
    return clock() - start


def add_timing_arguments(parser: argparse.ArgumentParser, batch: int, steps: int, repeats: int, out: Path) -> None:
    """--batch, --steps, --repeats, --threads, --clock and --out, with this benchmark's defaults."""
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall", help="wall time or this process's CPU time")
    parser.add_argument("--out", type=Path, default=out)


def set_threads(threads: int | None) -> None:
    """torch's CPU threads where given: on a shared machine one thread avoids waiting on a descheduled second."""
    if threads:
        torch.set_num_threads(threads)
