"""Training token-sparse models: the flow-matching objective, its config, and the trainer (PAPER.md §3)."""

from sparseguidance.training.config import OptimConfig, TrainConfig, load_train_config, train_config_from_dict
from sparseguidance.training.objective import ObjectiveConfig, flow_matching_loss
from sparseguidance.training.trainer import Trainer, train

__all__ = [
    "ObjectiveConfig",
    "OptimConfig",
    "TrainConfig",
    "Trainer",
    "flow_matching_loss",
    "load_train_config",
    "train",
    "train_config_from_dict",
]
