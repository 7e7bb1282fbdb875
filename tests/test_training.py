"""The trainer: EMA, schedule, data order, run directory, and exact resume after Ctrl-C, kill -9 and damage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_fixtures import ONE_THREAD_ENV, assert_same_weights, tiny_train_config, tiny_train_data, write_latents

import sparseguidance.training.trainer as trainer_module
from sparseguidance.checkpoints import load_model
from sparseguidance.cli import main
from sparseguidance.errors import CheckpointError
from sparseguidance.training import OptimConfig, load_train_config, train, train_config_from_dict
from sparseguidance.training.distributed import GlobalBatchSampler, Position
from sparseguidance.training.trainer import ema_decay_at, lr_at, update_ema

CONFIGS = Path(__file__).parents[1] / "configs"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_latents(tmp_path_factory.mktemp("latents"))


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """An uninterrupted 6-step run."""
    run_dir = tmp_path_factory.mktemp("reference")
    trainer = train(tiny_train_config(data_dir), run_dir, progress=False)
    return run_dir, trainer.model.state_dict(), trainer.ema.state_dict()


def assert_matches_reference(run_dir: Path, reference) -> None:
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 6
    assert_same_weights(state["model"], reference[1])
    assert_same_weights(state["ema"], reference[2])
    assert [r["step"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())] == [1, 2, 3, 4, 5, 6]


def test_ema_update():
    model, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, model, decay=0.9)
    for average, old, current in zip(ema.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(average, 0.9 * old + 0.1 * current)


def test_ema_warmup():
    config = OptimConfig(ema_decay=0.999)
    assert [ema_decay_at(s, config) for s in (0, 10, 90)] == [0.1, 11 / 20, 0.91]
    assert ema_decay_at(100_000, config) == 0.999
    assert ema_decay_at(0, OptimConfig(ema_decay=0.999, ema_warmup=False)) == 0.999


def test_lr_schedule():
    config = OptimConfig(steps=10, lr=1.0, warmup_steps=4, lr_schedule="cosine", min_lr=0.1)
    assert [lr_at(s, config) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, config) == 1.0 and lr_at(10, config) == pytest.approx(0.1)
    assert lr_at(7, config) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(9, OptimConfig(steps=10, lr=0.5)) == 0.5


def test_data_order_does_not_depend_on_the_device_count():
    def stream(rank: int, world: int, start: Position | None = None, n: int = 10) -> list[list[int]]:
        batches = iter(GlobalBatchSampler(14, 6, rank, world, seed=3, start=start or Position()))
        return [next(batches) for _ in range(n)]

    single = stream(0, 1)
    assert [a + b for a, b in zip(stream(0, 2), stream(1, 2), strict=True)] == single
    assert all(len(set(b)) == 6 for b in single)  # no repeats inside a batch; 14 // 6 = 2 batches an epoch
    position = Position()
    for _ in range(3):
        position = position.advance(14, 6)
    assert position == Position(epoch=1, offset=6)
    assert stream(0, 1, start=position, n=7) == single[3:]


def test_run_directory(data_dir, reference):
    run_dir = reference[0]
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {"config.yaml", "log.jsonl", "loss.png", "model.safetensors", "model.json"} <= names
    assert {"checkpoints/latest.pt", "checkpoints/previous.pt"} <= names
    assert {"snapshots/step-0000003.safetensors", "snapshots/step-0000006.safetensors"} <= names
    record = json.loads((run_dir / "log.jsonl").read_text().splitlines()[-1])
    assert {"step", "loss", "lr", "grad_norm", "images_per_s", "step_time_s", "elapsed_s"} <= record.keys()
    assert load_train_config(run_dir / "config.yaml") == tiny_train_config(data_dir)
    final = load_model(run_dir / "model.safetensors")
    assert_same_weights(final.state_dict(), reference[2])  # the final weights are the EMA
    assert final.config.routes == ((1, 1),) and final.config.train_gamma == 0.5


def test_resume_after_ctrl_c_equals_uninterrupted(data_dir, reference, tmp_path, monkeypatch):
    real_update = trainer_module.update_ema
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # Ctrl-C during step 5, after the step-4 checkpoint
        real_update(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "update_ema", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_train_config(data_dir), tmp_path, progress=False)
    monkeypatch.setattr(trainer_module, "update_ema", real_update)
    train(tiny_train_config(data_dir), tmp_path, progress=False)
    assert_matches_reference(tmp_path, reference)


KILLED_WHILE_SAVING = """
import json, os, signal, sys
import torch
from sparseguidance.training import train, train_config_from_dict

real_save, calls = torch.save, []

def dying_save(obj, path):
    calls.append(path)
    real_save(obj, path)
    if len(calls) == 2:  # the step-4 checkpoint: cut the file in half, then die like kill -9 (no cleanup)
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

torch.save = dying_save
train(train_config_from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def test_resume_after_kill_during_checkpoint_write(data_dir, reference, tmp_path):
    config = json.dumps(tiny_train_data(data_dir))
    command = [sys.executable, "-c", KILLED_WHILE_SAVING, config, str(tmp_path)]
    result = subprocess.run(command, capture_output=True, env=ONE_THREAD_ENV)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    checkpoints = tmp_path / "checkpoints"
    assert list(checkpoints.glob(".*.tmp"))  # the half-written file; the step-2 checkpoint is still latest.pt
    assert torch.load(checkpoints / "latest.pt", weights_only=True)["step"] == 2
    with pytest.warns(RuntimeWarning, match=r"stale lock of run folder .* \(pid \d+ on .* since "):
        train(tiny_train_config(data_dir), tmp_path, progress=False)
    assert not list(checkpoints.glob(".*.tmp"))
    assert_matches_reference(tmp_path, reference)


def test_truncated_checkpoint_falls_back_to_the_previous(data_dir, reference, tmp_path):
    train(tiny_train_config(data_dir, steps=4), tmp_path, progress=False)
    latest = tmp_path / "checkpoints" / "latest.pt"
    os.truncate(latest, latest.stat().st_size // 2)
    with pytest.warns(RuntimeWarning, match=r"latest.pt is unreadable .* resuming from .*previous.pt \(step 2\)"):
        train(tiny_train_config(data_dir), tmp_path, progress=False)
    assert_matches_reference(tmp_path, reference)
    for name in ("latest.pt", "previous.pt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        train(tiny_train_config(data_dir), tmp_path, progress=False)


def test_resume_refuses_a_different_model(data_dir, tmp_path):
    train(tiny_train_config(data_dir, steps=2), tmp_path, progress=False)
    other = tiny_train_data(data_dir)
    other["model"]["depth"] = 3
    with pytest.raises(CheckpointError, match="different model"):
        train(train_config_from_dict(other), tmp_path, progress=False)


def test_bf16_autocast(data_dir, tmp_path):
    trainer = train(tiny_train_config(data_dir, steps=2, precision="bf16"), tmp_path, progress=False)
    with trainer.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert 0 < record["loss"] < 10 and all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_cli_train_with_overrides(data_dir, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_train_data(data_dir)))  # JSON is YAML
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--out",
                str(out),
                "--steps",
                "2",
                "--set",
                "train.lr=2e-4",
                "--set",
                "objective.label_dropout=0.2",
                "--no-progress",
            ]
        )
        == 0
    )
    resolved = load_train_config(out / "config.yaml")
    assert resolved.train.steps == 2 and resolved.train.lr == 2e-4 and resolved.objective.label_dropout == 0.2
    assert main(["train", "--config", str(config), "--out", str(out), "--set", "train.lrr=1"]) == 2
    assert "unknown key(s) lrr" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--set", "data.path=/nonexistent"]) == 2
    assert "latent folder /nonexistent does not exist" in capsys.readouterr().err


def test_shipped_configs_load():
    loaded = {p.stem: load_train_config(p) for p in sorted(CONFIGS.glob("*.yaml"))}
    assert {"mnist-dense", "mnist-routing", "mnist-masking"} <= loaded.keys()
    routing, masking = loaded["imagenet256-sit-xl2-routing"], loaded["imagenet256-sit-xl2-masking"]
    assert (routing.model.depth, routing.model.hidden_size, routing.model.num_tokens) == (28, 1152, 256)
    assert routing.model.routes == ((2, 24),) and routing.model.train_gamma == 0.5
    assert masking.model.decoder is not None and (masking.model.decoder.depth, masking.model.decoder.width) == (8, 512)
    assert routing.train.batch_size == 256 and routing.train.lr == 1e-4 and routing.objective.label_dropout == 0.1
    assert loaded["mnist-routing"].model.sparsity == "routing" and loaded["mnist-masking"].model.sparsity == "masking"


def test_init_from_starts_a_fine_tuning_run_from_given_weights(data_dir, reference, tmp_path):
    run_dir, model_state, _ = reference
    start = load_model(run_dir / "model.safetensors")
    config = tiny_train_config(data_dir, steps=1, init_from=str(run_dir / "model.safetensors"))
    trainer = trainer_module.Trainer(config, tmp_path / "fine", trainer_module.init_distributed("cpu"), False)
    assert_same_weights(trainer.model.state_dict(), start.state_dict())
    assert_same_weights(trainer.ema.state_dict(), start.state_dict())
    other = tiny_train_config(data_dir, steps=1, init_from=str(run_dir / "model.safetensors"))
    other = train_config_from_dict(
        {**trainer_module.to_dict(other), "model": {**trainer_module.to_dict(other.model), "depth": 3}}
    )
    with pytest.raises(CheckpointError, match="model.depth"):
        trainer_module.Trainer(other, tmp_path / "other", trainer_module.init_distributed("cpu"), False)
