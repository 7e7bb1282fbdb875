"""Fig. 5's "dense fine-tune": a short run of a shipped recipe from one of its training points, every step dense.

The run is the shipped run's own `config.yaml` with `train.init_from` the starting weights, `objective.dense_fraction`
1 (γ 0 every step: MaskDiT's unmasked fine-tuning), a tenth of its learning rate (PAPER.md §3: 1e-4, fine-tuning
1e-5), no warm-up and no snapshots. It trains in a folder named by a hash of that config's non-default settings (the
starting weights by content), so a finished run is reused and an interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from sparseguidance.config import read_yaml, to_dict
from sparseguidance.training.config import TrainConfig, train_config_from_dict
from sparseguidance.training.trainer import flatten, train

logger = logging.getLogger("sparseguidance.study")

LR_FACTOR = 0.1  # fine-tuning learning rate ÷ the run's (PAPER.md §3: 1e-4 → 1e-5)
RESUME_POINTS = 4  # full training states saved along a fine-tuning run
TRAIN_FORWARDS = 3  # one training image costs about three forwards (the backward pass about two)


def finetune_config(recipe: Path, start: Path, steps: int, device: str) -> TrainConfig:
    """The run of `recipe` (a config.yaml) turned into `steps` dense fine-tuning steps from the weights `start`."""
    data = read_yaml(recipe)
    train_section = data["train"]
    data["train"] = train_section | {
        "steps": steps,
        "lr": train_section["lr"] * LR_FACTOR,
        "warmup_steps": 0,
        "snapshot_every": 0,
        "checkpoint_every": max(1, steps // RESUME_POINTS),
        "log_every": min(train_section["log_every"], steps),
        "init_from": str(start),
        "device": "cuda" if device.startswith("cuda") else "cpu",
    }
    data["objective"] = data["objective"] | {"dense_fraction": 1.0}
    return train_config_from_dict(data, where=f"dense fine-tuning of {recipe}")


def run_name(config: TrainConfig, start_id: str) -> str:
    """16 hex digits of the SHA-256 of the model and every setting off its default, the starting weights named by
    `start_id` (their content): a setting added to the configs later, at its default, keeps the name."""
    defaults = flatten(to_dict(TrainConfig(model=config.model)))
    settings = {k: v for k, v in flatten(to_dict(config)).items() if k.startswith("model.") or v != defaults.get(k)}
    settings["train.init_from"] = start_id
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def finetuned(config: TrainConfig, run: Path) -> Path:
    """The final EMA weights of `config` trained in `run`: read when finished there, else trained (or resumed) now."""
    weights = run / "model.safetensors"
    if weights.is_file():
        return weights
    logger.info("dense fine-tuning: %d steps from %s in %s", config.train.steps, config.train.init_from, run)
    train(config, run, progress=False)
    shutil.rmtree(run / "checkpoints")  # the resume state (weights, EMA, optimizer) is not needed once finished
    return weights


def training_forwards(recipe: Path, steps: int) -> int:
    """Image-forwards one fine-tuning run of `steps` steps costs (its batch × steps × TRAIN_FORWARDS)."""
    return int(read_yaml(recipe)["train"]["batch_size"]) * steps * TRAIN_FORWARDS
