"""Analytic FLOPs of a forward, a guided sampling step and a sampled image: pure functions of the config.

Two conventions, both always reported:
- `paper`: one per multiply-add of the linear layers (patch embedding, timestep MLP, adaLN, qkv, proj, MLP,
  final layer, mask decoder), attention matmuls not counted — the convention that reproduces PAPER.md Table 2;
- `full`: two per multiply-add, attention score and attention-times-value matmuls included — what
  torch.utils.flop_counter counts.
Token counts per block follow the sparsity: routed blocks and a masking encoder see T − floor(T·γ) tokens.
A forward is its dense prefix (embeddings, blocks before the first route) plus the rest; guided steps count
a prefix once for branches of one model and condition (SG's two branches), as the sampler runs them,
unless `share=False` (the paper's count: every branch whole).
"""

from __future__ import annotations

from dataclasses import dataclass

from sparseguidance.errors import ConfigError
from sparseguidance.guidance import Guidance
from sparseguidance.models import ModelConfig, check_routes
from sparseguidance.models.dit import Route
from sparseguidance.sparsity import kept_count

FREQUENCY_SIZE = 256  # sinusoidal timestep features (models.dit.TimestepEmbedder)


@dataclass(frozen=True)
class Flops:
    """FLOPs in both conventions."""

    paper: float
    full: float

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.paper + other.paper, self.full + other.full)

    def __mul__(self, factor: float) -> Flops:
        return Flops(self.paper * factor, self.full * factor)

    def as_dict(self, prefix: str = "gflops") -> dict[str, float]:
        """{prefix_paper: …, prefix_full: …} in GFLOPs."""
        return {f"{prefix}_paper": self.paper / 1e9, f"{prefix}_full": self.full / 1e9}


ZERO = Flops(0.0, 0.0)


def block_macs(width: int, mlp_ratio: float, cond_size: int, tokens: int) -> tuple[int, int]:
    """(linear, attention) multiply-adds of one adaLN block on `tokens` tokens of one sample."""
    mlp_hidden = int(width * mlp_ratio)
    per_token = 3 * width * width + width * width + 2 * width * mlp_hidden  # qkv, proj, fc1 + fc2
    adaln = cond_size * 6 * width  # once per sample, not per token
    attention = 2 * tokens * tokens * width  # QKᵀ and attention·V
    return tokens * per_token + adaln, attention


def block_tokens(config: ModelConfig, gamma: float, routes: tuple[Route, ...] | None = None) -> list[int]:
    """Tokens each encoder block sees at rate γ (routing: inside a route; masking: every block)."""
    T = config.num_tokens
    kept = kept_count(T, gamma)
    if config.decoder is not None:
        return [kept] * config.depth
    routes = config.routes if routes is None else check_routes(routes, config.depth)
    if gamma > 0 and not routes:
        raise ConfigError(f"γ = {gamma} on a dense model: give it routes (--route) or a mask decoder (--decoder)")
    routed = {i for start, end in routes for i in range(start, end + 1)} if gamma > 0 else set()
    return [kept if i in routed else T for i in range(config.depth)]


def forward_flops(config: ModelConfig, gamma: float = 0.0, routes: tuple[Route, ...] | None = None) -> Flops:
    """FLOPs of one forward of one sample at token sparsity γ: its prefix and its rest."""
    return prefix_flops(config, routes) + rest_flops(config, gamma, routes)


def prefix_flops(config: ModelConfig, routes: tuple[Route, ...] | None = None) -> Flops:
    """FLOPs of the dense prefix (embeddings and the blocks before the first route) of one sample."""
    D, T, p = config.hidden_size, config.num_tokens, config.patch_size
    linear = T * config.in_channels * p * p * D  # patch embedding (a strided convolution)
    linear += FREQUENCY_SIZE * D + D * D  # timestep MLP
    lin, att = block_macs(D, config.mlp_ratio, D, T)
    depth = config.prefix_depth(routes)
    return Flops(paper=float(linear + depth * lin), full=2.0 * (linear + depth * (lin + att)))


def rest_flops(config: ModelConfig, gamma: float = 0.0, routes: tuple[Route, ...] | None = None) -> Flops:
    """FLOPs of one sample's forward from the prefix on, at token sparsity γ."""
    D, T, p = config.hidden_size, config.num_tokens, config.patch_size
    linear, attention = 0, 0
    for tokens in block_tokens(config, gamma, routes)[config.prefix_depth(routes) :]:
        lin, att = block_macs(D, config.mlp_ratio, D, tokens)
        linear, attention = linear + lin, attention + att
    width = D
    if config.decoder is not None:
        dec = config.decoder
        linear += kept_count(T, gamma) * D * dec.width  # decoder embedding of the encoder output
        for _ in range(dec.depth):
            lin, att = block_macs(dec.width, config.mlp_ratio, D, T)
            linear, attention = linear + lin, attention + att
        width = dec.width
    linear += D * 2 * width + T * width * p * p * config.out_channels  # final adaLN and linear
    return Flops(paper=float(linear), full=2.0 * (linear + attention))


def guided_flops(
    guidance: Guidance,
    main: ModelConfig,
    weak: ModelConfig | None,
    step: int,
    num_steps: int,
    t: float,
    share: bool = True,
) -> Flops:
    """FLOPs of one guided velocity evaluation of one sample: every branch that runs at (step, t).

    share: count a prefix once for branches of one model and condition, as the sampler runs them.
    """
    total, seen = ZERO, set()
    for branch in guidance.branches(t):
        config = main if branch.model == "main" else weak if weak is not None else main
        if not share or branch.prefix_key not in seen:
            total = total + prefix_flops(config)
        seen.add(branch.prefix_key)
        total = total + rest_flops(config, branch.gamma.at(step, num_steps))
    return total


def euler_step_flops(
    guidance: Guidance, main: ModelConfig, weak: ModelConfig | None, num_steps: int, share: bool = True
) -> Flops:
    """Mean FLOPs per step of a `num_steps` Euler sampler (t_i = i / num_steps), γ schedules included."""
    total = ZERO
    for i in range(num_steps):
        total = total + guided_flops(guidance, main, weak, i, num_steps, i / num_steps, share)
    return total * (1.0 / num_steps)
