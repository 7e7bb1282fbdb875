"""The DiT / SiT backbone (adaLN-Zero transformer over patches) with token sparsity as a per-call setting.

Top to bottom: config, label embedder, block, mask decoder, final layer, the model, positional encodings (the
patch and timestep embedders, modulation and unpatchify live in models.layers, shared with TR-DiT).
Parameter names follow the released DiT / SiT checkpoints (`x_embedder.proj`, `t_embedder.mlp`,
`y_embedder.embedding_table`, `pos_embed`, `blocks.N.attn.qkv`, `blocks.N.adaLN_modulation`,
`final_layer`), so their state dicts load as they are.

Sparsity (PAPER.md §1), chosen per call through `gamma` (or explicit kept indices `keep`):
- routing (TREAD): for each route (start, end), blocks start..end inclusive see only the kept tokens;
  the others skip them unchanged and are put back in place after block `end`;
- masking (MaskDiT): dropped tokens never enter the encoder; the decoder receives the encoder output
  with a learnable mask token in every dropped position.
Dropped tokens cost nothing: kept tokens are gathered, run and scattered back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparseguidance.config import check_types
from sparseguidance.errors import ConfigError
from sparseguidance.models.layers import PatchEmbed, TimestepEmbedder, modulate, unpatchify
from sparseguidance.sparsity import (
    Generators,
    Keep,
    Route,
    TokenPlan,
    check_gamma,
    check_routes,
    gather_tokens,
    plan_tokens,
    run_blocks,
    scatter_tokens,
)


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class MaskDecoderConfig:
    """MaskDiT's decoder: its own depth, width and heads (8 × 512 × 16 in the paper's XL setting)."""

    depth: int = 8
    width: int = 512
    heads: int = 16

    def __post_init__(self) -> None:
        check_types(self, "model.decoder.")
        if self.depth < 1 or self.width < 1 or self.heads < 1 or self.width % self.heads:
            raise ConfigError(f"mask decoder needs depth, width, heads ≥ 1 and width divisible by heads: {self}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one DiT/SiT model, plus the sparsity it was trained with."""

    input_size: int = 32  # spatial size of the (latent) image, square
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # the embedding table has one more row: the null class for label dropout
    learn_sigma: bool = False  # extra output channels as in released DiT/SiT weights (dropped by forward)
    routes: tuple[Route, ...] = ()  # routing: blocks start..end (0-based, inclusive) see only kept tokens
    decoder: MaskDecoderConfig | None = None  # masking: a decoder after the encoder
    train_gamma: float = 0.0  # selection ratio used in training (the routing or masking rate)
    time_scale: float = 1.0  # t·time_scale enters the timestep embedding: 1 as SiT (its released weights), see below

    def __post_init__(self) -> None:
        check_types(self, "model.")
        positive = ("input_size", "in_channels", "patch_size", "hidden_size", "depth", "num_heads", "num_classes")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"model.mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.input_size % self.patch_size:
            raise ConfigError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.routes and self.decoder is not None:
            raise ConfigError("a model is either routed (routes) or masked (decoder), not both")
        object.__setattr__(self, "routes", check_routes(self.routes, self.depth))
        check_gamma(self.train_gamma, "train_gamma")
        if not self.time_scale > 0:
            raise ConfigError(f"model.time_scale must be positive, got {self.time_scale}")

    @property
    def num_tokens(self) -> int:
        """Patch tokens per image, T = (input_size / patch_size)²."""
        return (self.input_size // self.patch_size) ** 2

    @property
    def out_channels(self) -> int:
        """Channels of the final layer: doubled when learn_sigma."""
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    @property
    def sparsity(self) -> str:
        """'routing', 'masking' or 'dense': how the model was built to drop tokens."""
        return "routing" if self.routes else "masking" if self.decoder is not None else "dense"

    def prefix_depth(self, routes: Sequence[Route] | None = None) -> int:
        """Blocks before the first route (0 when masking, all when dense): the prefix that every γ shares."""
        if self.decoder is not None:
            return 0
        routes = self.routes if routes is None else check_routes(routes, self.depth)
        return routes[0][0] if routes else self.depth


# ------------------------------------------------------------------------------------------ embedders
class LabelEmbedder(nn.Module):
    """Class label -> (B, D); row `num_classes` is the null class ∅ that label dropout trains."""

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


# ---------------------------------------------------------------------------------------------- block
class Attention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, H, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class Mlp(nn.Module):
    """Two linear layers with a tanh-approximated GELU between them (as in DiT)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on c (of width `cond_size`)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_size: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_size, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN_modulation(c).unsqueeze(1).chunk(6, dim=-1)  # 6 × (B, 1, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_msa * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))  # (B, N, D)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, N, D)


class MaskDecoder(nn.Module):
    """MaskDiT's decoder: encoder output in the kept places, a learnable mask token elsewhere, plus positions."""

    def __init__(self, config: MaskDecoderConfig, hidden_size: int, mlp_ratio: float, grid_size: int) -> None:
        super().__init__()
        self.embed = nn.Linear(hidden_size, config.width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.register_buffer("pos_embed", sincos_2d(config.width, grid_size).unsqueeze(0))
        self.blocks = nn.ModuleList(
            DiTBlock(config.width, config.heads, mlp_ratio, hidden_size) for _ in range(config.depth)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(x)  # (B, K, Dd)
        if keep is not None:
            full = self.mask_token.expand(x.shape[0], self.pos_embed.shape[1], -1).to(x.dtype)  # (B, T, Dd)
            x = scatter_tokens(full, x, keep)  # (B, T, Dd)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x, c)
        return x


class FinalLayer(nn.Module):
    """adaLN, then a linear map from each token to its patch of output channels."""

    def __init__(self, width: int, cond_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_size, 2 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).unsqueeze(1).chunk(2, dim=-1)  # 2 × (B, 1, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, T, p·p·C)


# ---------------------------------------------------------------------------------------------- model
@dataclass
class Prefix:
    """What the dense prefix hands to the rest of a forward: tokens with positions, conditioning, next block."""

    tokens: torch.Tensor  # (B, T, D)
    c: torch.Tensor  # (B, D): timestep + label embedding
    start: int  # the first block the rest runs

    @staticmethod
    def cat(prefixes: Sequence[Prefix]) -> Prefix:
        """Several batches' prefixes as one batch (the same object when there is only one)."""
        if len(prefixes) == 1:
            return prefixes[0]
        if len({p.start for p in prefixes}) != 1:
            raise ValueError("cannot stack prefixes that stop at different blocks")
        tokens, c = torch.cat([p.tokens for p in prefixes]), torch.cat([p.c for p in prefixes])
        return Prefix(tokens, c, prefixes[0].start)

    def chunk(self, n: int) -> list[Prefix]:
        """Split into n equal batches (views)."""
        return [Prefix(tk, c, self.start) for tk, c in zip(self.tokens.chunk(n), self.c.chunk(n), strict=True)]


class DiT(nn.Module):
    """Class-conditional DiT/SiT; `forward(x, t, y, gamma=…)` runs it at any token sparsity γ.

    `forward` is `rest(prefix(x, t, y), gamma=…)`: callers that need several γ on one input run the prefix once.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        D, grid = config.hidden_size, config.input_size // config.patch_size
        self.x_embedder = PatchEmbed(config.in_channels, D, config.patch_size)
        self.t_embedder = TimestepEmbedder(D, scale=config.time_scale)
        self.y_embedder = LabelEmbedder(config.num_classes, D)
        self.register_buffer("pos_embed", sincos_2d(D, grid).unsqueeze(0))  # (1, T, D), fixed
        self.blocks = nn.ModuleList(DiTBlock(D, config.num_heads, config.mlp_ratio, D) for _ in range(config.depth))
        self.decoder = MaskDecoder(config.decoder, D, config.mlp_ratio, grid) if config.decoder is not None else None
        width = config.decoder.width if config.decoder is not None else D
        self.final_layer = FinalLayer(width, D, config.patch_size, config.out_channels)
        self.initialize_weights()

    @property
    def null_class(self) -> int:
        """Label of the null class ∅ (the unconditional branch of CFG)."""
        return self.config.num_classes

    def initialize_weights(self) -> None:
        """DiT's initialisation: Xavier linears, N(0, 0.02) embeddings, zero adaLN gates and output layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in [*self.blocks, *(self.decoder.blocks if self.decoder is not None else []), self.final_layer]:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self.decoder is not None:
            nn.init.normal_(self.decoder.mask_token, std=0.02)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        y: torch.Tensor,
        gamma: float = 0.0,
        generator: Generators = None,
        keep: Keep = None,
        routes: Sequence[Route] | None = None,
    ) -> torch.Tensor:
        """Predict the velocity (B, C, H, W) for images x at times t with labels y, at token sparsity γ.

        gamma:     fraction of tokens dropped (masking) or routed around the route's blocks (routing).
        generator: source of the token subsets: one torch.Generator, or one per sample.
        keep:      explicit kept indices (B, K) instead of a random draw (one tensor per route, or one for all).
        routes:    routes to use instead of the configured ones (routing or dense models only).
        """
        return self.rest(self.prefix(x, t, y, routes), gamma, generator, keep, routes)

    def prefix(
        self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor, routes: Sequence[Route] | None = None
    ) -> Prefix:
        """The part of a forward that no γ changes: embeddings, then the blocks before the first route.

        Branches on the same x, t and y share it (Sparse Guidance's two conditional branches); a masking
        model drops tokens from its first block on, so there it is the embeddings alone.
        """
        B = self._check_input(x, y)
        t = torch.as_tensor(t, device=x.device).expand(B) if not torch.is_tensor(t) or t.dim() == 0 else t
        tokens = self.x_embedder(x) + self.pos_embed  # (B, T, D): positions travel with the tokens
        c = self.t_embedder(t) + self.y_embedder(y)  # (B, D)
        start = self.config.prefix_depth(routes)
        for block in self.blocks[:start]:
            tokens = block(tokens, c)  # (B, T, D)
        return Prefix(tokens, c, start)

    def rest(
        self,
        prefix: Prefix,
        gamma: float = 0.0,
        generator: Generators = None,
        keep: Keep = None,
        routes: Sequence[Route] | None = None,
    ) -> torch.Tensor:
        """The forward from the prefix on at token sparsity γ (arguments as in `forward`): velocity (B, C, H, W)."""
        tokens, c = prefix.tokens, prefix.c
        plan = self._plan(tokens.shape[0], gamma, generator, keep, routes, tokens.device)
        if plan.routes and min(plan.routes) < prefix.start:
            raise ConfigError(f"the prefix ran blocks 0..{prefix.start - 1}, but a route starts at {min(plan.routes)}")
        if plan.mask_keep is not None:
            tokens = gather_tokens(tokens, plan.mask_keep)  # (B, K, D): dropped tokens never enter
        blocks = range(prefix.start, self.config.depth)
        tokens = run_blocks(tokens, plan, blocks, lambda i, x, _: self.blocks[i](x, c))  # (B, T or K, D)
        if self.decoder is not None:
            tokens = self.decoder(tokens, c, plan.mask_keep)  # (B, T, Dd)
        out = self.unpatchify(self.final_layer(tokens, c))  # (B, C_out, H, W)
        return out[:, : self.config.in_channels]  # learn_sigma's σ channels are not used by flow matching

    def _check_input(self, x: torch.Tensor, y: torch.Tensor) -> int:
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ConfigError(f"model expects input (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if y.shape != (x.shape[0],):
            raise ConfigError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        return x.shape[0]

    def _plan(
        self,
        batch: int,
        gamma: float,
        generator: Generators,
        keep: Keep,
        routes: Sequence[Route] | None,
        device: torch.device,
    ) -> TokenPlan:
        """Decide the kept tokens of this call: none (dense), one subset (masking) or one per route."""
        if self.decoder is not None:
            given = tuple(routes) if routes is not None else ()
            return plan_tokens(batch, self.config.num_tokens, given, gamma, generator, keep, device, masking=True)
        routes = self.config.routes if routes is None else check_routes(routes, self.config.depth)
        return plan_tokens(batch, self.config.num_tokens, routes, gamma, generator, keep, device)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, p·p·C) patch tokens -> (B, C, H, W) image, in DiT's layout."""
        return unpatchify(x, self.config.patch_size, self.config.out_channels)


# -------------------------------------------------------------------------------- positional encodings
def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed 1-D sin-cos encoding (N,) -> (N, dim): sin of the first half of frequencies, cos of the second."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]  # (N, dim/2)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos encoding (grid², dim), row-major over the grid, as in MAE/DiT."""
    if dim % 4:
        raise ConfigError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    # DiT's grid puts the column coordinate in the first half of the channels and the row in the second.
    return torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1).float()
