"""Per-sample randomness: sample k of a run draws everything from its own generator, seeded from (seed, k).

A sample's noise, the token subsets of its every forward, its ICG labels and its SDE noise all come from
that one generator in a fixed order, so image k is the same whatever the batch size or number of processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from sparseguidance.errors import ConfigError
from sparseguidance.sparsity import Generators

SAMPLING, LABELS = 0, 1  # streams: the trajectory, and the random class of `--classes random`


def sample_seed(seed: int, index: int, stream: int = SAMPLING) -> int:
    """A 64-bit seed for sample `index` of run `seed`, mixed by numpy's SeedSequence (no collisions)."""
    if seed < 0 or index < 0:
        raise ConfigError(f"seeds and sample indices must be ≥ 0, got seed {seed}, index {index}")
    # SeedSequence hashes the whole tuple; seed·K + index would give (0, K) and (1, 0) the same stream.
    return int(np.random.SeedSequence([seed, index, stream]).generate_state(1, np.uint64)[0])


def sample_generators(seed: int, indices: Iterable[int], stream: int = SAMPLING) -> list[torch.Generator]:
    """One CPU generator per sample (CPU, so that results do not depend on the device either)."""
    return [torch.Generator().manual_seed(sample_seed(seed, int(i), stream)) for i in indices]


def gaussian(shape: Sequence[int], generators: Generators, device: torch.device | str) -> torch.Tensor:
    """N(0, I) of `shape` (batch first); with one generator per sample, row k comes from generators[k]."""
    if isinstance(generators, Sequence):
        if len(generators) != shape[0]:
            raise ValueError(f"got {len(generators)} generators for a batch of {shape[0]}")
        rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device) for g in generators]
        return torch.stack(rows).to(device)
    gen_device = generators.device if generators is not None else device
    return torch.randn(tuple(shape), generator=generators, device=gen_device).to(device)
