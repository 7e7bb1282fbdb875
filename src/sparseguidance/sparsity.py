"""Token sparsity as small pure functions: how many tokens stay, which ones, and gather/scatter.

γ is the fraction of tokens *dropped* (masking) or *routed around* blocks (routing); a sample keeps
exactly T − floor(T·γ) of its T tokens, as TREAD's router does (PAPER.md §2). Kept indices are the
tokens' original positions, sorted ascending; they travel with the tokens (positional encodings such
as RoPE read them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sparseguidance.errors import ConfigError

Generators = torch.Generator | Sequence[torch.Generator] | None


def check_gamma(gamma: float, name: str = "gamma") -> float:
    """Return γ if it lies in [0, 1), else raise ConfigError naming it."""
    if not isinstance(gamma, int | float) or not 0.0 <= gamma < 1.0:
        raise ConfigError(f"{name} must lie in [0, 1) (the fraction of tokens dropped), got {gamma!r}")
    return float(gamma)


def kept_count(num_tokens: int, gamma: float) -> int:
    """Tokens a sample keeps at rate γ: T − floor(T·γ)."""
    # The small tolerance keeps e.g. 256·0.9 = 230.4 from landing on the wrong side through float error.
    return num_tokens - math.floor(num_tokens * check_gamma(gamma) + 1e-9)


def draw_keep(
    batch: int, num_tokens: int, gamma: float, generator: Generators = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Draw each sample's kept token indices (B, K), sorted, uniformly without replacement.

    `generator` is one torch.Generator for the whole batch or one per sample (so that sample k's
    subset does not depend on the batch it is in).
    """
    keep = kept_count(num_tokens, gamma)
    if isinstance(generator, Sequence):
        if len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for a batch of {batch}")
        scores = torch.stack([torch.rand(num_tokens, generator=g, device=g.device) for g in generator])
    else:
        gen_device = generator.device if generator is not None else device
        scores = torch.rand(batch, num_tokens, generator=generator, device=gen_device)
    return scores.argsort(dim=1)[:, :keep].sort(dim=1).values.to(device)


def check_keep(keep: torch.Tensor, batch: int, num_tokens: int) -> torch.Tensor:
    """Validate explicit kept indices: shape (B, K), integer, in range, no repeats within a row."""
    if keep.dim() != 2 or keep.shape[0] != batch or keep.dtype not in (torch.int32, torch.int64):
        raise ConfigError(f"keep must be an integer tensor of shape ({batch}, K), got {tuple(keep.shape)} {keep.dtype}")
    if keep.shape[1] == 0 or keep.shape[1] > num_tokens:
        raise ConfigError(f"keep must hold between 1 and {num_tokens} indices per sample, got {keep.shape[1]}")
    if keep.device.type != "meta":
        if keep.min() < 0 or keep.max() >= num_tokens:
            raise ConfigError(f"keep indices must lie in [0, {num_tokens})")
        if (keep.sort(dim=1).values.diff(dim=1) == 0).any():
            raise ConfigError("keep indices repeat within a sample")
    return keep.long()


def gather_tokens(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Select the kept tokens: (B, T, D), (B, K) -> (B, K, D)."""
    return x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(full: torch.Tensor, kept: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Put processed kept tokens back into place: (B, T, D), (B, K, D), (B, K) -> (B, T, D)."""
    return full.scatter(1, keep.unsqueeze(-1).expand(-1, -1, full.shape[-1]), kept)


def dropped_mask(keep: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Boolean (B, T) mask, True where a token was dropped (MaskDiT's M)."""
    mask = torch.ones(keep.shape[0], num_tokens, dtype=torch.bool, device=keep.device)
    return mask.scatter(1, keep, False)
