"""Model registry: the community's names (`DiT-XL/2`, `SiT-B/4`, …) and the constructor they share."""

from __future__ import annotations

import dataclasses
from typing import Any

from sparseguidance.errors import ConfigError
from sparseguidance.models.dit import DiT, MaskDecoderConfig, ModelConfig, Prefix, check_routes

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


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """Config of a named model (ImageNet-256 latents, 1000 classes, learn_sigma as released), with overrides."""
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
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
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **overrides)


def create_model(config: ModelConfig | str, **overrides: Any) -> DiT:
    """Build a model from a config or a registry name (plus overrides)."""
    if isinstance(config, str):
        config = model_config(config, **overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    return DiT(config)


__all__ = [
    "DiT",
    "MaskDecoderConfig",
    "ModelConfig",
    "Prefix",
    "MODEL_NAMES",
    "SIZES",
    "check_routes",
    "create_model",
    "model_config",
]
