"""TrainConfig: the model, data, optimisation and objective of one run, as frozen dataclasses loaded from YAML.

The model section is either a full ModelConfig or a registry name plus overrides
(`name: SiT-XL/2`, `routes: [[2, 23]]`, …); the run directory keeps the resolved form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparseguidance.config import MAX_SEED, apply_overrides, check_types, from_dict, read_yaml, to_dict
from sparseguidance.data import CAPTION_SOURCES, DataConfig
from sparseguidance.errors import ConfigError
from sparseguidance.models import AnyModelConfig, TRDiTConfig, config_class, model_config
from sparseguidance.text import TextConfig
from sparseguidance.training.objective import ObjectiveConfig

LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on GPU, fp32 on CPU
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class OptimConfig:
    """The `train` section: AdamW, schedule, EMA, precision, how often to log, checkpoint and snapshot, and how to
    spread a large model (FSDP2, activation checkpointing)."""

    steps: int = 1000
    batch_size: int = 64  # global: split evenly over the devices
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0 to lr
    lr_schedule: str = "constant"  # constant | cosine (from lr after warm-up down to min_lr at `steps`)
    min_lr: float = 0.0
    grad_clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + s) / (10 + s)) at step s: short runs forget the init
    precision: str = "auto"
    device: str = "auto"  # auto: CUDA when available (torchrun: one GPU per process)
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500  # latest.pt (full state, for resuming)
    snapshot_every: int = 0  # EMA weights kept as snapshots/step-NNNNNNN.safetensors (weak models for AG); 0: none
    init_from: str = ""  # weights a new run starts from (a .safetensors path or a shipped name): fine-tuning stages
    fsdp: bool = False  # shard weights, gradients and AdamW state over the processes (FSDP2) instead of DDP
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass

    def __post_init__(self) -> None:
        check_types(self, "train.")
        positive = ("steps", "batch_size", "log_every", "checkpoint_every")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "snapshot_every", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be an integer ≥ 0, got {getattr(self, name)!r}")
        if self.seed > MAX_SEED:
            raise ConfigError(f"train.seed must be at most 2**64 − 1, got {self.seed}")
        if self.lr <= 0 or not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"train.lr must be > 0 and train.min_lr in [0, lr], got {self.lr}, {self.min_lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.grad_clip < 0 or not 0 <= self.ema_decay < 1:
            raise ConfigError("train.weight_decay and train.grad_clip must be ≥ 0, train.ema_decay in [0, 1)")
        if not isinstance(self.init_from, str):
            raise ConfigError(f"train.init_from must be a path or a shipped model name, got {self.init_from!r}")
        for name, choices in (("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS), ("device", DEVICES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"train.{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; `to_dict` of it is what the run directory keeps."""

    model: AnyModelConfig  # a DiT/SiT ModelConfig or a TRDiTConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    text: TextConfig = field(default_factory=TextConfig)  # text-to-image models: the frozen caption encoder

    def __post_init__(self) -> None:
        text_model, captions = isinstance(self.model, TRDiTConfig), self.data.source in CAPTION_SOURCES
        if text_model and not captions:
            raise ConfigError(
                f"a TR-DiT learns from captions: data.source must be one of {', '.join(CAPTION_SOURCES)}, "
                f"got {self.data.source}"
            )
        if captions and not text_model:
            raise ConfigError(f"data.source {self.data.source} gives captions: it trains a text model (TR-DiT-…)")
        if self.objective.sparse_gammas and self.model.sparsity == "dense":
            raise ConfigError("objective.sparse_gammas needs a routing or masking model; this model is dense")
        if self.objective.mask_weight != ObjectiveConfig.mask_weight and text_model:
            raise ConfigError("objective.mask_weight applies to masking models; TR-DiT supports routing only")


def resolve_model_section(section: Any) -> Any:
    """`{name: REGISTRY-NAME, **overrides}` -> the full model section; other sections pass through."""
    if not isinstance(section, Mapping) or "name" not in section:
        return section
    overrides = {k: v for k, v in section.items() if k != "name"}
    return {**to_dict(model_config(section["name"])), **overrides}


def train_config_from_dict(data: Mapping[str, Any], where: str = "") -> TrainConfig:
    """A TrainConfig from plain data (unknown keys raise ConfigError)."""
    if not isinstance(data, Mapping) or "model" not in data:
        raise ConfigError(f"{where or 'config'}: a training config needs a model section")
    section = resolve_model_section(data["model"])
    if isinstance(section, Mapping):  # the family decides the class: a union is not converted by from_dict
        section = from_dict(config_class(section), section, where=f"{where}.model" if where else "model")
    return from_dict(TrainConfig, {**data, "model": section}, where=where)


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Load a training config from YAML with `section.key=value` overrides."""
    return train_config_from_dict(apply_overrides(read_yaml(path), overrides), where=Path(path).name)
