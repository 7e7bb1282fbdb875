"""Token sparsity as small pure functions: how many tokens stay, which ones, gather/scatter, and the plan of a forward.

γ is the fraction of tokens *dropped* (masking) or *routed around* blocks (routing); a sample keeps
exactly T − floor(T·γ) of its T tokens, as TREAD's router does (PAPER.md §2). Kept indices are the
tokens' original positions, sorted ascending; they travel with the tokens (positional encodings such
as RoPE read them).

Every model family calls the same two functions: `plan_tokens` decides one call's kept tokens (none,
one masking subset, or one subset per route) and `run_blocks` runs a stack of blocks through the routes,
gathering before a route's first block and scattering back after its last.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from sparseguidance.errors import ConfigError

Generators = torch.Generator | Sequence[torch.Generator] | None
Route = tuple[int, int]  # blocks start..end, 0-based and inclusive
Keep = torch.Tensor | Sequence[torch.Tensor] | None  # explicit kept indices: one (B, K) for all routes or one per route


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


def check_routes(routes: Sequence[Sequence[int]], depth: int) -> tuple[Route, ...]:
    """Validate routes against the depth: 0 ≤ start ≤ end < depth, sorted, not overlapping."""
    checked: list[Route] = []
    for route in routes:
        if len(route) != 2 or not all(isinstance(b, int) for b in route):
            raise ConfigError(f"a route is a pair of block indices (start, end), got {route!r}")
        start, end = int(route[0]), int(route[1])
        if not 0 <= start <= end < depth:
            raise ConfigError(f"route {start}-{end} lies outside the model's depth {depth} (blocks 0..{depth - 1})")
        if checked and start <= checked[-1][1]:
            raise ConfigError(f"routes must be sorted and must not overlap: {checked[-1]} then {(start, end)}")
        checked.append((start, end))
    return tuple(checked)


@dataclass
class TokenPlan:
    """Which tokens go where in one forward: routed spans (start -> (end, keep)) or the masking subset."""

    routes: dict[int, tuple[int, torch.Tensor]] = field(default_factory=dict)
    mask_keep: torch.Tensor | None = None


def plan_tokens(
    batch: int,
    num_tokens: int,
    routes: tuple[Route, ...],
    gamma: float,
    generator: Generators,
    keep: Keep,
    device: torch.device,
    masking: bool = False,
) -> TokenPlan:
    """Decide the kept tokens of one call: none (dense), one subset (masking) or one per route.

    routes:  the checked routes of this call (a model's own, or those given per call; none when masking);
    keep:    explicit kept indices instead of a draw: one (B, K) tensor for every route, or one per route;
    masking: the model drops tokens at its input (one subset) instead of routing them.
    """
    check_gamma(gamma)
    if gamma == 0.0 and keep is None:
        return TokenPlan()  # γ = 0 is exactly the dense forward
    if masking:
        if routes:
            raise ConfigError("a masking model cannot be routed")
        if isinstance(keep, Sequence):
            raise ConfigError("a masking model takes one keep tensor, not one per route")
        if keep is None:
            return TokenPlan(mask_keep=draw_keep(batch, num_tokens, gamma, generator, device))
        return TokenPlan(mask_keep=check_keep(keep, batch, num_tokens))
    if not routes:
        raise ConfigError("this model is dense: give it routes (or train a masking model) to run it sparse")
    if keep is None:
        keeps = [draw_keep(batch, num_tokens, gamma, generator, device) for _ in routes]
    else:
        keeps = [keep] * len(routes) if torch.is_tensor(keep) else list(keep)
        if len(keeps) != len(routes):
            raise ConfigError(f"got {len(keeps)} keep tensors for {len(routes)} routes")
        keeps = [check_keep(k, batch, num_tokens) for k in keeps]
    return TokenPlan(routes={start: (end, k) for (start, end), k in zip(routes, keeps, strict=True)})


def run_blocks(
    tokens: torch.Tensor,
    plan: TokenPlan,
    blocks: range,
    run: Callable[[int, torch.Tensor, torch.Tensor | None], torch.Tensor],
) -> torch.Tensor:
    """Run blocks `blocks` (a range of indices) on (B, T, D) tokens through the plan's routes.

    `run(i, tokens, keep)` runs block i on tokens whose original positions are `keep` (B, K) inside a route
    and None (all T, in order) outside one. Before a route's first block its kept tokens are gathered; after
    its last they are scattered back into place, so routed tokens skip the span unchanged.
    """
    full, end, keep = None, -1, None
    for i in blocks:
        if i in plan.routes:
            end, keep = plan.routes[i]
            full, tokens = tokens, gather_tokens(tokens, keep)  # (B, K, D)
        tokens = run(i, tokens, keep)
        if i == end:
            tokens, full, end, keep = scatter_tokens(full, tokens, keep), None, -1, None  # (B, T, D)
    return tokens
