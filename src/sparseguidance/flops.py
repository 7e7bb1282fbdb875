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

TR-DiT (a TRDiTConfig) adds, per forward, the text connector (in the prefix, on 1 + L tokens: the register
and L prompt tokens) and, per block, cross-attention to those tokens (queries and output on the image tokens,
keys and values on the text, whatever the routing). L is `text_tokens`, the padded prompt length; every branch
is counted at it (CFG's ∅ is shorter, so that count is slightly high). The frozen text encoder is not
counted: it runs once per prompt, not once per forward or sampling step.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparseguidance.errors import ConfigError
from sparseguidance.guidance import Guidance
from sparseguidance.models import AnyModelConfig, TRDiTConfig, check_routes
from sparseguidance.models.trdit import MODULATIONS, swiglu_hidden
from sparseguidance.sparsity import Route, kept_count

FREQUENCY_SIZE = 256  # sinusoidal timestep features (models.layers.TimestepEmbedder)
TEXT_TOKENS = 128  # TR-DiT: prompt tokens per sample (the padded length) when not told


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


def block_tokens(config: AnyModelConfig, gamma: float, routes: tuple[Route, ...] | None = None) -> list[int]:
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


def forward_flops(
    config: AnyModelConfig,
    gamma: float = 0.0,
    routes: tuple[Route, ...] | None = None,
    text_tokens: int = TEXT_TOKENS,
) -> Flops:
    """FLOPs of one forward of one sample at token sparsity γ: its prefix and its rest (text_tokens: TR-DiT's L)."""
    return prefix_flops(config, routes, text_tokens) + rest_flops(config, gamma, routes, text_tokens)


def prefix_flops(
    config: AnyModelConfig, routes: tuple[Route, ...] | None = None, text_tokens: int = TEXT_TOKENS
) -> Flops:
    """FLOPs of the dense prefix (embeddings and the blocks before the first route) of one sample."""
    if isinstance(config, TRDiTConfig):
        return trdit_prefix_flops(config, routes, text_tokens)
    D, T, p = config.hidden_size, config.num_tokens, config.patch_size
    linear = T * config.in_channels * p * p * D  # patch embedding (a strided convolution)
    linear += FREQUENCY_SIZE * D + D * D  # timestep MLP
    lin, att = block_macs(D, config.mlp_ratio, D, T)
    depth = config.prefix_depth(routes)
    return Flops(paper=float(linear + depth * lin), full=2.0 * (linear + depth * (lin + att)))


def rest_flops(
    config: AnyModelConfig,
    gamma: float = 0.0,
    routes: tuple[Route, ...] | None = None,
    text_tokens: int = TEXT_TOKENS,
) -> Flops:
    """FLOPs of one sample's forward from the prefix on, at token sparsity γ."""
    if isinstance(config, TRDiTConfig):
        return trdit_rest_flops(config, gamma, routes, text_tokens)
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
    main: AnyModelConfig,
    weak: AnyModelConfig | None,
    step: int,
    num_steps: int,
    t: float,
    share: bool = True,
    text_tokens: int = TEXT_TOKENS,
) -> Flops:
    """FLOPs of one guided velocity evaluation of one sample: every branch that runs at (step, t).

    share: count a prefix once for branches of one model and condition, as the sampler runs them;
    text_tokens: TR-DiT's prompt length L (ignored by DiT/SiT).
    """
    total, seen = ZERO, set()
    for branch in guidance.branches(t):
        config = main if branch.model == "main" else weak if weak is not None else main
        if not share or branch.prefix_key not in seen:
            total = total + prefix_flops(config, text_tokens=text_tokens)
        seen.add(branch.prefix_key)
        total = total + rest_flops(config, branch.gamma.at(step, num_steps), text_tokens=text_tokens)
    return total


def euler_step_flops(
    guidance: Guidance,
    main: AnyModelConfig,
    weak: AnyModelConfig | None,
    num_steps: int,
    share: bool = True,
    text_tokens: int = TEXT_TOKENS,
) -> Flops:
    """Mean FLOPs per step of a `num_steps` Euler sampler (t_i = i / num_steps), γ schedules included."""
    total = ZERO
    for i in range(num_steps):
        total = total + guided_flops(guidance, main, weak, i, num_steps, i / num_steps, share, text_tokens)
    return total * (1.0 / num_steps)


# ------------------------------------------------------------------------------------------------ TR-DiT
def trdit_block_macs(width: int, tokens: int, text: int) -> tuple[int, int]:
    """(linear, attention) multiply-adds of one TR-DiT block: `tokens` image tokens, `text` text tokens (1 + L).

    Per image token: self-attention qkv + proj (4D²), cross-attention q + proj (2D²), SwiGLU (3·D·H); per text
    token: cross-attention keys and values (2D²). The block's modulation is an addition (no multiply-adds).
    """
    hidden = swiglu_hidden(width)
    linear = tokens * (6 * width * width + 3 * width * hidden) + text * 2 * width * width
    attention = 2 * tokens * tokens * width + 2 * tokens * text * width  # self: QKᵀ, AV; cross: QKᵀ, AV
    return linear, attention


def connector_macs(config: TRDiTConfig, text_tokens: int) -> tuple[int, int]:
    """(linear, attention) multiply-adds of the text connector on L prompt tokens (plus its register)."""
    D, n = config.hidden_size, 1 + text_tokens
    linear = text_tokens * config.text_width * D  # Linear(E → D) on the prompt tokens
    per_block = n * (4 * D * D + 3 * D * swiglu_hidden(D))  # qkv + proj, SwiGLU
    return linear + config.connector_depth * per_block, config.connector_depth * 2 * n * n * D


def trdit_prefix_flops(config: TRDiTConfig, routes: tuple[Route, ...] | None, text_tokens: int) -> Flops:
    """TR-DiT's prefix of one sample: patch and time embeddings, shared modulation, connector, dense blocks."""
    if text_tokens < 0:
        raise ConfigError(f"text_tokens must be ≥ 0, got {text_tokens}")
    D, T, p = config.hidden_size, config.num_tokens, config.patch_size
    depth = config.prefix_depth(routes)
    linear = T * config.in_channels * p * p * D  # patch embedding
    linear += FREQUENCY_SIZE * D + D * D + D * MODULATIONS * D  # timestep MLP, shared modulation (adaLN-single)
    text_linear, attention = connector_macs(config, text_tokens)
    lin, att = trdit_block_macs(D, T, 1 + text_tokens)
    linear, attention = linear + text_linear + depth * lin, attention + depth * att
    return Flops(paper=float(linear), full=2.0 * (linear + attention))


def trdit_rest_flops(config: TRDiTConfig, gamma: float, routes: tuple[Route, ...] | None, text_tokens: int) -> Flops:
    """TR-DiT's forward of one sample from the prefix on: the blocks at their token counts, the final layer."""
    D, T, p = config.hidden_size, config.num_tokens, config.patch_size
    linear, attention = 0, 0
    for tokens in block_tokens(config, gamma, routes)[config.prefix_depth(routes) :]:
        lin, att = trdit_block_macs(D, tokens, 1 + text_tokens)
        linear, attention = linear + lin, attention + att
    linear += D * 2 * D + T * D * p * p * config.out_channels  # final modulation and linear
    return Flops(paper=float(linear), full=2.0 * (linear + attention))
