"""The training objective (PAPER.md §3): flow matching on the straight path, with label dropout and token sparsity.

    x_t = (1 − t)·z + t·x,   z ~ N(0, I),   v* = x − z           (t = 0 noise, t = 1 data)
    dense / routing:  L = mean ‖v_θ(x_t, t, y) − v*‖²             (routing at the model's ratio; no extra loss)
    masking:          L = mean_visible ‖v_θ − v*‖²  +  λ · mean_dropped (1 − t)²‖v_θ − v*‖²     (App. C)

Normalisation: each term is a mean over the elements (sample × channel × pixel) it covers, so the
visible term is on the scale of the dense loss whatever γ is, and λ alone sets the balance (MaskDiT
uses 0.1). A pixel is dropped when the patch token it belongs to is. Labels are replaced by the null
class ∅ with probability p (10 % as in DiT) so that the same model also serves as the unconditional
branch of CFG. Every random draw comes from the one generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparseguidance.conditions import Condition, TextCondition
from sparseguidance.config import check_types
from sparseguidance.errors import ConfigError
from sparseguidance.models import ModelConfig
from sparseguidance.sparsity import check_gamma, draw_keep, dropped_mask

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class ObjectiveConfig:
    """How t is drawn, how often labels drop to ∅, and λ of the masking reconstruction term."""

    time_sampling: str = "uniform"  # uniform on [0, 1] (SiT) | logit_normal: t = sigmoid(N(mean, std²)) (SD3)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    label_dropout: float = 0.1  # probability of replacing a label by the null class ∅
    mask_weight: float = 0.1  # λ: weight of the reconstruction term on dropped tokens (masking models only)
    dense_fraction: float = 0.0  # probability that a step trains dense (γ 0); 1: MaskDiT's unmasked fine-tuning
    sparse_gammas: tuple[float, ...] = ()  # γ of a sparse step, drawn uniformly per step; empty: model.train_gamma

    def __post_init__(self) -> None:
        check_types(self, "objective.")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ConfigError(f"objective.time_sampling must be one of {', '.join(TIME_SAMPLINGS)}")
        if self.logit_std <= 0:
            raise ConfigError(f"objective.logit_std must be > 0, got {self.logit_std}")
        if not 0.0 <= self.label_dropout <= 1.0:
            raise ConfigError(f"objective.label_dropout must lie in [0, 1], got {self.label_dropout}")
        if self.mask_weight < 0:
            raise ConfigError(f"objective.mask_weight must be ≥ 0, got {self.mask_weight}")
        if not 0.0 <= self.dense_fraction <= 1.0:
            raise ConfigError(f"objective.dense_fraction must lie in [0, 1], got {self.dense_fraction}")
        for gamma in self.sparse_gammas:
            check_gamma(gamma, "objective.sparse_gammas")


def sample_time(batch: int, config: ObjectiveConfig, generator: torch.Generator) -> torch.Tensor:
    """Training times t ∈ (0, 1), (B,), on the generator's device."""
    if config.time_sampling == "logit_normal":
        normal = torch.randn(batch, generator=generator, device=generator.device)
        return torch.sigmoid(normal * config.logit_std + config.logit_mean)
    return torch.rand(batch, generator=generator, device=generator.device)


def drop_labels(y: Condition, p: float, null_class: int | None, generator: torch.Generator) -> Condition:
    """Replace each sample's condition by ∅ with probability p: the null class, or the empty prompt."""
    drop = torch.rand(len(y), generator=generator, device=generator.device) < p
    if isinstance(y, TextCondition):
        return y.where(drop.to(y.states.device))
    return torch.where(drop.to(y.device), torch.full_like(y, null_class), y)


def step_gamma(config: ModelConfig, objective: ObjectiveConfig, generator: torch.Generator) -> float:
    """γ of one training step: 0 (dense) with probability `objective.dense_fraction`, else the model's ratio or
    one of `objective.sparse_gammas` drawn uniformly. Runs with neither option draw nothing (same random stream)."""
    if objective.dense_fraction > 0.0:
        if torch.rand((), generator=generator, device=generator.device).item() < objective.dense_fraction:
            return 0.0
    if not objective.sparse_gammas:
        return config.train_gamma
    pick = torch.randint(len(objective.sparse_gammas), (), generator=generator, device=generator.device).item()
    return objective.sparse_gammas[pick]


def pixel_mask(dropped: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Token mask (B, T) -> pixel mask (B, 1, H, W): tokens are the row-major grid of p×p patches."""
    p, grid = config.patch_size, config.input_size // config.patch_size
    return dropped.view(-1, 1, grid, grid).repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)


def masked_loss_terms(error: torch.Tensor, dropped: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MaskDiT's two terms from the squared error (B, C, H, W) and the pixel mask (B, 1, H, W), True = dropped.

    visible: mean of ‖v_θ − v*‖² over visible elements; dropped: mean of (1 − t)²‖v_θ − v*‖² over dropped ones
    (zero when nothing is dropped).
    """
    weighted = error * (1 - t).view(-1, 1, 1, 1) ** 2
    mask = dropped.expand_as(error)
    visible = error[~mask].mean()
    hidden = weighted[mask].mean() if mask.any() else error.new_zeros(())
    return visible, hidden


def flow_matching_loss(
    model: torch.nn.Module,
    config: ModelConfig,
    x: torch.Tensor,
    y: Condition,
    objective: ObjectiveConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The training loss on one batch: {"loss"} plus, for masking models, its "visible" and "masked" terms.

    `model` may be wrapped (DDP); `config` is the bare model's config (its sparsity and training ratio).
    """
    B = x.shape[0]
    gamma = step_gamma(config, objective, generator)
    y = drop_labels(y, objective.label_dropout, getattr(config, "num_classes", None), generator)  # ∅: label C or ""
    t = sample_time(B, objective, generator).to(x.device)
    z = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
    x_t = (1 - t.view(-1, 1, 1, 1)) * z + t.view(-1, 1, 1, 1) * x
    target = x - z
    if config.sparsity != "masking":
        v = model(x_t, t, y, gamma=gamma, generator=generator)  # γ = 0 for dense models
        return {"loss": (v.float() - target).pow(2).mean()}
    keep = draw_keep(B, config.num_tokens, gamma, generator, x.device)  # γ 0: every token kept, no masked term
    v = model(x_t, t, y, keep=keep)
    dropped = pixel_mask(dropped_mask(keep, config.num_tokens), config)
    visible, masked = masked_loss_terms((v.float() - target).pow(2), dropped, t)
    return {"loss": visible + objective.mask_weight * masked, "visible": visible, "masked": masked}
