"""Tiny training runs for the trainer tests: a 2-block model on 1×8×8 latent shards written to a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparseguidance.training import TrainConfig, train_config_from_dict

# Subprocesses run on one thread too, like the tests themselves (conftest's one_thread).
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def write_latents(folder: Path, count: int = 20, classes: int = 3, seed: int = 0) -> Path:
    """One npz shard of `count` random 1×8×8 latents with labels in [0, classes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    latents = rng.standard_normal((count, 1, 8, 8)).astype(np.float32)
    np.savez(folder / "shard.npz", latents=latents, labels=np.arange(count) % classes)
    return folder


def tiny_train_data(data_dir: Path, **train: Any) -> dict[str, Any]:
    """Plain-data TrainConfig: routing model (route 1→1 of 2 blocks at 0.5), 20 samples, batch 8, 6 steps."""
    return {
        "model": {
            "input_size": 8,
            "in_channels": 1,
            "patch_size": 2,
            "hidden_size": 32,
            "depth": 2,
            "num_heads": 2,
            "num_classes": 3,
            "routes": [[1, 1]],
            "train_gamma": 0.5,
        },
        "data": {"source": "latents", "path": str(data_dir)},
        "train": {
            "steps": 6,
            "batch_size": 8,
            "lr": 1e-3,
            "warmup_steps": 2,
            "lr_schedule": "cosine",
            "ema_decay": 0.9,
            "log_every": 1,
            "checkpoint_every": 2,
            "snapshot_every": 3,
            **train,
        },
    }


def tiny_train_config(data_dir: Path, **train: Any) -> TrainConfig:
    """The TrainConfig of `tiny_train_data`."""
    return train_config_from_dict(tiny_train_data(data_dir, **train))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit-for-bit equal state dicts."""
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
