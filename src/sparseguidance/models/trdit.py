"""TR-DiT: the text-to-image diffusion transformer of PAPER.md §5, routed with its tokens' positions.

Top to bottom: config, axial 2-D RoPE, attention and SwiGLU, the text connector, the block, the final layer,
the prefix, the model.

- Blocks are Llama-style: RMSNorm pre-norm, no bias in any linear layer, SwiGLU with expansion 8/3 (the hidden
  width rounded up to a multiple of 64), self-attention over the image tokens with axial 2-D RoPE, then
  cross-attention from the image tokens to the text tokens.
- Time enters as adaLN-single (as in PixArt-α): the timestep embedding goes through one shared
  Linear(D → 9D), and each block adds its own learned (9, D) offset to get shift, scale and gate for each of
  its three sub-layers. Offsets and the shared linear start at zero, so every gate is 0 and a new block is the
  identity (DiT's adaLN-Zero). Why not DiT's per-block Linear(D → 6D): at 34 blocks of width 2048 those alone
  are 0.86 B parameters, which the paper's 2.5 B total leaves no room for.
- Text: the frozen encoder's states (B, L, E) pass through a connector: Linear(E → D), one learned register
  token put in front of every prompt, `connector_depth` pre-norm blocks (self-attention under the text mask,
  SwiGLU), a final RMSNorm. The register is a real token for every prompt, so no row of any attention is
  empty: a prompt whose mask is all False (no tokens at all) would otherwise make softmax 0/0 = NaN, in the
  connector and in every cross-attention. Text tokens get no RoPE: the encoder's states already carry their
  order.
- Routing (TREAD, PAPER.md §1): as in models.dit, blocks start..end of a route see only the kept tokens and the
  others skip them unchanged; here the kept indices go in with the tokens and RoPE reads them, so a kept token
  rotates as at its own place in the image (PAPER.md §5: tokens and their positional indices are routed
  together). Masking is not built for this family.

`forward(x, t, y, gamma=…)` is `rest(prefix(x, t, y), gamma=…)` with the signature of models.dit.DiT; `y` is a
`TextCondition`. The prefix (embeddings, connector, blocks before the first route) is what SG's two branches
share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparseguidance.conditions import TextCondition
from sparseguidance.config import check_types
from sparseguidance.errors import ConfigError
from sparseguidance.models.dit import MaskDecoderConfig
from sparseguidance.models.layers import PatchEmbed, TimestepEmbedder, modulate, unpatchify
from sparseguidance.sparsity import Generators, Keep, Route, check_gamma, check_routes, plan_tokens, run_blocks

FAMILY = "tr-dit"  # the `family` a TR-DiT config carries in model.json (DiT configs carry none)
ROPE_THETA = 10000.0  # base of RoPE's frequencies, as in Llama
MODULATIONS = 9  # shift, scale, gate for each of self-attention, cross-attention and SwiGLU


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TRDiTConfig:
    """Architecture of one TR-DiT, plus the routing it was trained with (defaults: TR-DiT-2.5B, unrouted)."""

    input_size: int = 64  # spatial size of the latent image, square (512 px through an 8× VAE)
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 2048
    depth: int = 34
    num_heads: int = 16
    text_width: int = 1536  # E: width of the text encoder's states (InternVL3-2B's language model)
    connector_depth: int = 2  # transformer blocks over the text tokens before cross-attention
    routes: tuple[Route, ...] = ()  # blocks start..end (0-based, inclusive) see only the kept tokens
    train_gamma: float = 0.0  # routing rate used in training
    time_scale: float = 1.0  # t·time_scale enters the timestep embedding (1: SiT's convention)
    # Always None: masking is not built for TR-DiT. The field exists so that asking for it (YAML, --decoder,
    # dataclasses.replace) meets one clear error, and so code that reads `config.decoder` serves both families.
    decoder: MaskDecoderConfig | None = None
    family: str = FAMILY  # what a stored model.json is read back as

    def __post_init__(self) -> None:
        check_types(self, "model.")
        if self.family != FAMILY:
            raise ConfigError(f"a TR-DiT config has family {FAMILY!r}, got {self.family!r}")
        if self.decoder is not None:
            raise ConfigError("TR-DiT supports routing only: it has no mask decoder (give routes instead)")
        positive = ("input_size", "in_channels", "patch_size", "hidden_size", "depth", "num_heads", "text_width")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.connector_depth < 0:
            raise ConfigError(f"model.connector_depth must be ≥ 0, got {self.connector_depth}")
        if self.input_size % self.patch_size:
            raise ConfigError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise ConfigError(
                f"hidden_size {self.hidden_size} must split into {self.num_heads} heads of a width divisible by 4 "
                "(axial RoPE turns pairs of channels, half of them with the row and half with the column)"
            )
        object.__setattr__(self, "routes", check_routes(self.routes, self.depth))
        check_gamma(self.train_gamma, "train_gamma")
        if not self.time_scale > 0:
            raise ConfigError(f"model.time_scale must be positive, got {self.time_scale}")

    @property
    def grid_size(self) -> int:
        """Patches per side: input_size / patch_size."""
        return self.input_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Patch tokens per image, T = grid_size²."""
        return self.grid_size**2

    @property
    def out_channels(self) -> int:
        """Channels of the final layer (a velocity: as many as the input)."""
        return self.in_channels

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU's hidden width (see swiglu_hidden)."""
        return swiglu_hidden(self.hidden_size)

    @property
    def sparsity(self) -> str:
        """'routing' or 'dense'."""
        return "routing" if self.routes else "dense"

    def prefix_depth(self, routes: Sequence[Route] | None = None) -> int:
        """Blocks before the first route (all when dense): the prefix that every γ shares."""
        routes = self.routes if routes is None else check_routes(routes, self.depth)
        return routes[0][0] if routes else self.depth


def swiglu_hidden(width: int) -> int:
    """SwiGLU's hidden width: 8/3 of the width (its 3 matrices then cost what a 4× MLP's 2 do), rounded up to a
    multiple of 64 for matmul-friendly shapes (Llama rounds to 256; 64 wastes less at small widths): 2048 -> 5504."""
    return 64 * math.ceil(width * 8 / 3 / 64)


# ------------------------------------------------------------------------------------------ axial RoPE
def rope_rotation(positions: torch.Tensor, grid_size: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices (B, N) on a row-major grid -> (cos, sin) of the rotation angles, each (B, 1, N, head_dim / 2).

    A head's channels form head_dim / 2 pairs; the first half of the pairs turns with the row (index // grid),
    the second half with the column (index % grid), each at Llama's frequencies θ^(−i / n), i < n pairs.
    """
    pairs = head_dim // 4  # frequency pairs per axis
    freqs = ROPE_THETA ** (-torch.arange(pairs, dtype=torch.float32, device=positions.device) / pairs)  # (d/4,)
    rows, cols = (positions // grid_size).float(), (positions % grid_size).float()  # (B, N)
    angles = torch.cat([rows[..., None] * freqs, cols[..., None] * freqs], dim=-1)  # (B, N, d/2)
    return angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)


def apply_rope(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Turn each channel pair (x[2i], x[2i+1]) of (B, H, N, d) queries or keys by its angle (in float32)."""
    cos, sin = rotation  # (B, 1, N, d/2)
    pairs = x.float().unflatten(-1, (-1, 2))  # (B, H, N, d/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)  # (B, H, N, d)


# ------------------------------------------------------------------------------- attention and SwiGLU
Rotation = tuple[torch.Tensor, torch.Tensor]


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) bool, True at real tokens -> (B, 1, 1, L): which keys every query of every head may attend to."""
    return None if mask is None else mask[:, None, None, :]


class SelfAttention(nn.Module):
    """Multi-head self-attention without biases; RoPE on queries and keys when given positions' rotation."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(
        self, x: torch.Tensor, rotation: Rotation | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        if rotation is not None:
            q, k = apply_rope(q, rotation), apply_rope(k, rotation)  # (B, H, N, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask))  # (B, H, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class CrossAttention(nn.Module):
    """Image tokens (queries) attend to the text tokens (keys, values) that the mask marks real; no biases."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(width, 2 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        H, d = self.heads, D // self.heads
        q = self.q(x).reshape(B, N, H, d).transpose(1, 2)  # (B, H, N, d)
        k, v = self.kv(text).reshape(B, text.shape[1], 2, H, d).permute(2, 0, 3, 1, 4)  # (B, H, L, d)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask))  # (B, H, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) · up(x)), no biases (Shazeer 2020, as in Llama)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, N, D)


# ------------------------------------------------------------------------------------------- connector
class ConnectorBlock(nn.Module):
    """Pre-norm transformer block over the text tokens: masked self-attention, SwiGLU (no time, no RoPE)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=1e-6)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.RMSNorm(width, eps=1e-6)
        self.mlp = SwiGLU(width, swiglu_hidden(width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)  # (B, 1 + L, D)
        return x + self.mlp(self.norm2(x))  # (B, 1 + L, D)


class TextConnector(nn.Module):
    """Text-encoder states (B, L, E) and mask -> (B, 1 + L, D) text tokens for cross-attention, and their mask.

    Token 0 is a learned register that every prompt has (its mask is True), so no attention row is ever empty.
    """

    def __init__(self, text_width: int, width: int, heads: int, depth: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_width, width, bias=False)
        self.register = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(ConnectorBlock(width, heads) for _ in range(depth))
        self.norm = nn.RMSNorm(width, eps=1e-6)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = states.shape[0]
        x = self.proj(states.to(self.proj.weight.dtype))  # (B, L, D)
        x = torch.cat([self.register.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + L, D)
        mask = torch.cat([mask.new_ones(B, 1), mask], dim=1)  # (B, 1 + L)
        for block in self.blocks:
            x = block(x, mask)  # (B, 1 + L, D)
        return self.norm(x), mask


# ---------------------------------------------------------------------------------------------- block
class TRDiTBlock(nn.Module):
    """Self-attention with RoPE, cross-attention to the text, SwiGLU; each RMS-normed, modulated and gated by time."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)  # the modulation's scale is the gain
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)
        self.cross = CrossAttention(width, heads)
        self.norm3 = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)
        self.mlp = SwiGLU(width, swiglu_hidden(width))
        self.modulation = nn.Parameter(torch.zeros(MODULATIONS, width))  # this block's offset to the shared one

    def forward(
        self, x: torch.Tensor, mod: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, rotation: Rotation
    ) -> torch.Tensor:
        m = (mod + self.modulation).chunk(MODULATIONS, dim=1)  # 9 × (B, 1, D)
        x = x + m[2] * self.attn(modulate(self.norm1(x), m[0], m[1]), rotation)  # (B, N, D)
        x = x + m[5] * self.cross(modulate(self.norm2(x), m[3], m[4]), text, text_mask)  # (B, N, D)
        return x + m[8] * self.mlp(modulate(self.norm3(x), m[6], m[7]))  # (B, N, D)


class FinalLayer(nn.Module):
    """RMSNorm modulated by time, then a linear map from each token to its patch of output channels."""

    def __init__(self, width: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=1e-6, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width, bias=False))
        self.linear = nn.Linear(width, patch_size * patch_size * out_channels, bias=False)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).unsqueeze(1).chunk(2, dim=-1)  # 2 × (B, 1, D)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, p·p·C)


# ---------------------------------------------------------------------------------------------- model
@dataclass
class TRDiTPrefix:
    """What the prefix hands to the rest of a forward: image tokens, time, text tokens, the next block.

    Batches stack with `cat`: text tokens of different lengths are padded at the end with zeros and a False
    mask, so every row attends to exactly its own tokens (equal to its unpadded result up to float rounding).
    """

    tokens: torch.Tensor  # (B, T, D) image tokens, in grid order (positions are the indices)
    c: torch.Tensor  # (B, D) timestep embedding
    mod: torch.Tensor  # (B, 9, D) shared modulation (each block adds its own offset)
    text: torch.Tensor  # (B, 1 + L, D) connector output, register first
    text_mask: torch.Tensor  # (B, 1 + L) bool, True at the register and real prompt tokens
    start: int  # the first block the rest runs

    @staticmethod
    def cat(prefixes: Sequence[TRDiTPrefix]) -> TRDiTPrefix:
        """Several batches' prefixes as one batch (the same object when there is only one)."""
        if len(prefixes) == 1:
            return prefixes[0]
        if len({p.start for p in prefixes}) != 1:
            raise ValueError("cannot stack prefixes that stop at different blocks")
        L = max(p.text.shape[1] for p in prefixes)
        text = torch.cat([F.pad(p.text, (0, 0, 0, L - p.text.shape[1])) for p in prefixes])  # (ΣB, L, D)
        mask = torch.cat([F.pad(p.text_mask, (0, L - p.text_mask.shape[1])) for p in prefixes])  # (ΣB, L)
        tokens, c, mod = (torch.cat([getattr(p, name) for p in prefixes]) for name in ("tokens", "c", "mod"))
        return TRDiTPrefix(tokens, c, mod, text, mask, prefixes[0].start)

    def chunk(self, n: int) -> list[TRDiTPrefix]:
        """Split into n equal batches (views; each keeps the common text length)."""
        parts = (x.chunk(n) for x in (self.tokens, self.c, self.mod, self.text, self.text_mask))
        return [TRDiTPrefix(*fields, self.start) for fields in zip(*parts, strict=True)]


class TRDiT(nn.Module):
    """Text-conditioned TR-DiT; `forward(x, t, y, gamma=…)` runs it at any routing rate γ.

    `forward` is `rest(prefix(x, t, y), gamma=…)`: callers that need several γ on one input run the prefix once.
    """

    def __init__(self, config: TRDiTConfig) -> None:
        super().__init__()
        self.config = config
        D, heads = config.hidden_size, config.num_heads
        self.x_embedder = PatchEmbed(config.in_channels, D, config.patch_size, bias=False)
        self.t_embedder = TimestepEmbedder(D, scale=config.time_scale, bias=False)
        self.t_modulation = nn.Sequential(nn.SiLU(), nn.Linear(D, MODULATIONS * D, bias=False))  # adaLN-single
        self.connector = TextConnector(config.text_width, D, heads, config.connector_depth)
        self.blocks = nn.ModuleList(TRDiTBlock(D, heads) for _ in range(config.depth))
        self.final_layer = FinalLayer(D, config.patch_size, config.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears and patch embedding, N(0, 0.02) time MLP and register, zero modulation and output layer."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        nn.init.normal_(self.connector.register, std=0.02)
        nn.init.zeros_(self.t_modulation[-1].weight)  # with the zero block offsets: every gate 0, every block identity
        for block in self.blocks:
            nn.init.zeros_(block.modulation)
        nn.init.zeros_(self.final_layer.modulation[-1].weight)
        nn.init.zeros_(self.final_layer.linear.weight)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        y: TextCondition,
        gamma: float = 0.0,
        generator: Generators = None,
        keep: Keep = None,
        routes: Sequence[Route] | None = None,
    ) -> torch.Tensor:
        """Predict the velocity (B, C, H, W) for latents x at times t with prompts y, at routing rate γ.

        gamma:     fraction of tokens routed around the route's blocks.
        generator: source of the token subsets: one torch.Generator, or one per sample.
        keep:      explicit kept indices (B, K) instead of a random draw (one tensor per route, or one for all).
        routes:    routes to use instead of the configured ones.
        """
        return self.rest(self.prefix(x, t, y, routes), gamma, generator, keep, routes)

    def prefix(
        self, x: torch.Tensor, t: torch.Tensor | float, y: TextCondition, routes: Sequence[Route] | None = None
    ) -> TRDiTPrefix:
        """The part of a forward that no γ changes: embeddings, the connector, the blocks before the first route."""
        B = self._check_input(x, y)
        t = torch.as_tensor(t, device=x.device).expand(B) if not torch.is_tensor(t) or t.dim() == 0 else t
        tokens = self.x_embedder(x)  # (B, T, D): no absolute positions, RoPE reads the token indices
        c = self.t_embedder(t)  # (B, D)
        mod = self.t_modulation(c).unflatten(1, (MODULATIONS, -1))  # (B, 9, D)
        text, text_mask = self.connector(y.states, y.mask)  # (B, 1 + L, D), (B, 1 + L)
        start = self.config.prefix_depth(routes)
        rotation = self.rotation(None, x.device)
        for block in self.blocks[:start]:
            tokens = block(tokens, mod, text, text_mask, rotation)  # (B, T, D)
        return TRDiTPrefix(tokens, c, mod, text, text_mask, start)

    def rest(
        self,
        prefix: TRDiTPrefix,
        gamma: float = 0.0,
        generator: Generators = None,
        keep: Keep = None,
        routes: Sequence[Route] | None = None,
    ) -> torch.Tensor:
        """The forward from the prefix on at routing rate γ (arguments as in `forward`): velocity (B, C, H, W)."""
        cfg, tokens = self.config, prefix.tokens
        routes = cfg.routes if routes is None else check_routes(routes, cfg.depth)
        plan = plan_tokens(tokens.shape[0], cfg.num_tokens, routes, gamma, generator, keep, tokens.device)
        if plan.routes and min(plan.routes) < prefix.start:
            raise ConfigError(f"the prefix ran blocks 0..{prefix.start - 1}, but a route starts at {min(plan.routes)}")
        # RoPE reads the positions that travel with the tokens: all T outside a route, the route's kept indices
        # inside it. Keyed by the kept tensor itself (the plan holds it), so each route's is computed once.
        rotations: dict[int, Rotation] = {}

        def run(i: int, x: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
            if id(kept) not in rotations:
                rotations[id(kept)] = self.rotation(kept, x.device)
            return self.blocks[i](x, prefix.mod, prefix.text, prefix.text_mask, rotations[id(kept)])

        tokens = run_blocks(tokens, plan, range(prefix.start, cfg.depth), run)  # (B, T, D)
        return unpatchify(self.final_layer(tokens, prefix.c), cfg.patch_size, cfg.out_channels)  # (B, C, H, W)

    def rotation(self, positions: torch.Tensor | None, device: torch.device) -> Rotation:
        """RoPE's rotation for tokens at `positions` (B, K), or for all T tokens in grid order when None."""
        if positions is None:
            positions = torch.arange(self.config.num_tokens, device=device).unsqueeze(0)  # (1, T)
        return rope_rotation(positions, self.config.grid_size, self.config.hidden_size // self.config.num_heads)

    def _check_input(self, x: torch.Tensor, y: TextCondition) -> int:
        cfg = self.config
        expected = (cfg.in_channels, cfg.input_size, cfg.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ConfigError(f"model expects input (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        if not isinstance(y, TextCondition):
            raise ConfigError(f"TR-DiT is conditioned on text: y must be a TextCondition, got {type(y).__name__}")
        if len(y) != x.shape[0]:
            raise ConfigError(f"got {len(y)} prompts for {x.shape[0]} images")
        if y.width != cfg.text_width:
            raise ConfigError(f"the text states have width {y.width}, but the model's text_width is {cfg.text_width}")
        return x.shape[0]
