"""Model registry: the community's names (`DiT-XL/2`, `SiT-B/4`, …), TR-DiT's (`TR-DiT-2.5B`, …) and one constructor.

A config's type says its family: `ModelConfig` builds a class-conditional DiT/SiT, `TRDiTConfig` a text-conditioned
TR-DiT. Stored configs (model.json) say it through `family` (TR-DiT's); a section without one is a DiT/SiT, so
every file written before TR-DiT existed loads as it did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sparseguidance.errors import ConfigError
from sparseguidance.models.dit import DiT, MaskDecoderConfig, ModelConfig, Prefix
from sparseguidance.models.trdit import FAMILY as TRDIT_FAMILY
from sparseguidance.models.trdit import TRDiT, TRDiTConfig, TRDiTPrefix
from sparseguidance.sparsity import check_routes

AnyModelConfig = ModelConfig | TRDiTConfig

# size -> (depth, hidden size, heads), as in the DiT paper's Table 1.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCH_SIZES = (2, 4, 8)
# DiT (ε-prediction DDPM) and SiT (flow matching) share one architecture; both names are accepted.
FAMILIES = ("DiT", "SiT")
MODEL_NAMES: tuple[str, ...] = tuple(f"{f}-{s}/{p}" for f in FAMILIES for s in SIZES for p in PATCH_SIZES)

# TR-DiT sizes. 2.5B is PAPER.md §5's (512×512 through an 8× VAE, InternVL3-2B text states, route 2→30 at 0.5);
# S and XS are CPU sizes (64 tokens on 32×32 inputs) for tests and laptop runs. Every setting can be overridden.
TRDIT_SIZES: dict[str, TRDiTConfig] = {
    "TR-DiT-2.5B": TRDiTConfig(
        input_size=64,
        in_channels=4,
        patch_size=2,
        hidden_size=2048,
        depth=34,
        num_heads=16,
        text_width=1536,
        routes=((2, 30),),
        train_gamma=0.5,
    ),  # fmt: skip
    "TR-DiT-S": TRDiTConfig(
        input_size=32,
        in_channels=4,
        patch_size=4,
        hidden_size=192,
        depth=8,
        num_heads=3,
        text_width=384,  # all-MiniLM-L6-v2, the default encoder
        routes=((1, 6),),
        train_gamma=0.5,
    ),  # fmt: skip
    "TR-DiT-XS": TRDiTConfig(
        input_size=32,
        in_channels=4,
        patch_size=4,
        hidden_size=64,
        depth=4,
        num_heads=2,
        text_width=384,  # all-MiniLM-L6-v2, the default encoder
        connector_depth=1,
        routes=((1, 2),),
        train_gamma=0.5,
    ),  # fmt: skip
}
TRDIT_NAMES: tuple[str, ...] = tuple(TRDIT_SIZES)
ALL_MODEL_NAMES: tuple[str, ...] = MODEL_NAMES + TRDIT_NAMES


def model_config(name: str, **overrides: Any) -> AnyModelConfig:
    """Config of a named model, with overrides: DiT/SiT (ImageNet-256 latents, 1000 classes, learn_sigma as
    released) or TR-DiT (its size's defaults)."""
    if name in TRDIT_SIZES:
        base: AnyModelConfig = TRDIT_SIZES[name]
    elif name in MODEL_NAMES:
        size, patch = name.split("-", 1)[1].split("/")
        depth, hidden, heads = SIZES[size]
        base = ModelConfig(
            input_size=32,
            in_channels=4,
            patch_size=int(patch),
            hidden_size=hidden,
            depth=depth,
            num_heads=heads,
            num_classes=1000,
            learn_sigma=True,
        )
    else:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(ALL_MODEL_NAMES)}")
    known = {f.name for f in dataclasses.fields(base) if f.name != "family"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **overrides)


def config_class(section: Mapping[str, Any]) -> type[ModelConfig] | type[TRDiTConfig]:
    """The config class a stored model section describes: TRDiTConfig with `family: tr-dit`, else ModelConfig."""
    family = section.get("family") if isinstance(section, Mapping) else None
    if family is None:
        return ModelConfig
    if family != TRDIT_FAMILY:
        raise ConfigError(f"unknown model family {family!r}; known: {TRDIT_FAMILY} (DiT/SiT sections carry none)")
    return TRDiTConfig


def create_model(config: AnyModelConfig | str, **overrides: Any) -> DiT | TRDiT:
    """Build a model from a config or a registry name (plus overrides): a DiT or a TR-DiT, by the config's type."""
    if isinstance(config, str):
        config = model_config(config, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return TRDiT(config) if isinstance(config, TRDiTConfig) else DiT(config)


__all__ = [
    "ALL_MODEL_NAMES",
    "AnyModelConfig",
    "DiT",
    "MaskDecoderConfig",
    "ModelConfig",
    "Prefix",
    "MODEL_NAMES",
    "SIZES",
    "TRDIT_NAMES",
    "TRDIT_SIZES",
    "TRDiT",
    "TRDiTConfig",
    "TRDiTPrefix",
    "check_routes",
    "config_class",
    "create_model",
    "model_config",
]
