"""Runs that cannot be lost or mixed: locks on run folders and shard sets, signals, resumes with changed settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model
from training_fixtures import ONE_THREAD_ENV, assert_same_weights, tiny_train_config, tiny_train_data, write_latents

import sparseguidance.training.trainer as trainer_module
from sparseguidance.checkpoints import save_model
from sparseguidance.cli import main
from sparseguidance.errors import CheckpointError, ConfigError
from sparseguidance.locks import LOCK_NAME, LockedError, hold
from sparseguidance.sampling.outputs import read_npz
from sparseguidance.training import load_train_config, train

# Runs the CLI in a subprocess whose MODULE.ATTRIBUTE, at its first call, says "ready" and waits for a line on stdin.
BLOCKED_ONCE = """
import importlib, sys
from sparseguidance.cli import main

module, name = importlib.import_module(sys.argv[1]), sys.argv[2]
real = getattr(module, name)

def blocked(*args, **kwargs):
    setattr(module, name, real)
    print("ready", flush=True)
    sys.stdin.readline()
    return real(*args, **kwargs)

setattr(module, name, blocked)
sys.exit(main(sys.argv[3:]))
"""

# Trains through the CLI and sends itself a signal during step 3.
SIGNALLED = """
import os, signal, sys
import sparseguidance.training.trainer as trainer_module
from sparseguidance.cli import main

real, calls = trainer_module.update_ema, []

def update(*args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    real(*args, **kwargs)

trainer_module.update_ema = update
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_latents(tmp_path_factory.mktemp("latents"))


@pytest.fixture(scope="module")
def config_file(data_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(json.dumps(tiny_train_data(data_dir)))  # JSON is YAML
    return path


def start_blocked(module: str, name: str, *args: str) -> subprocess.Popen:
    """A CLI subprocess stopped inside its first call of module.name (holding whatever it holds by then)."""
    command = [sys.executable, "-c", BLOCKED_ONCE, module, name, *args]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ONE_THREAD_ENV
    )
    assert process.stdout.readline() == "ready\n", process.communicate()[1][-2000:]
    return process


def release(process: subprocess.Popen) -> int:
    """Let a blocked subprocess go on; its exit code."""
    process.communicate("\n")
    return process.returncode


def log_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())]


# ---------------------------------------------------------------------------------------------- locks
def test_a_held_lock_names_its_holder(tmp_path):
    with hold(tmp_path / "run", "run folder x") as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and {"host", "started", "command"} <= holder.keys()
        with pytest.raises(LockedError, match=rf"run folder x is in use by another job \(pid {os.getpid()} on "):
            with hold(tmp_path / "run", "run folder x"):
                pass
    assert not path.exists()
    with hold(tmp_path / "run"):  # free again
        pass


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": "here", "started": "yesterday"}))
    with pytest.warns(RuntimeWarning, match=rf"taking over the stale lock of .*run \(pid {dead.pid} on here since"):
        with hold(folder) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_lock_leaves_no_empty_folders_behind(tmp_path):
    with hold(tmp_path / "a" / "b"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_made_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"cannot lock run folder x: Not a directory \(.*file"):
        with hold(tmp_path / "file" / "run", "run folder x"):
            pass


# ------------------------------------------------------------------------------------- concurrent jobs
def test_second_train_on_a_run_folder_refuses_then_takes_over_after_kill_9(config_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(config_file), "--out", str(out), "--no-progress"]
    first = start_blocked("sparseguidance.training.trainer", "update_ema", *args)
    try:
        assert main(args) == 2
        assert f"run folder {out} is in use by another job (pid {first.pid} on " in capsys.readouterr().err
    finally:
        first.kill()  # kill -9 in step 1: nothing saved, the lock file names a dead process
        first.communicate()
    assert main(args) == 0
    warning = f"sparseguidance train: warning: taking over the stale lock of run folder {out} (pid {first.pid} on "
    assert warning in capsys.readouterr().err  # the CLI shows warnings as one line each
    assert log_steps(out) == [1, 2, 3, 4, 5, 6]  # one run's records only
    assert not (out / LOCK_NAME).exists()


def test_second_sampler_on_one_npz_refuses(tmp_path, capsys):
    checkpoint = tmp_path / "model.safetensors"
    save_model(tiny_model(), checkpoint)
    out = tmp_path / "s.npz"
    args = ["sample", str(checkpoint), "--out", str(out), "--num-images", "4", "--shard-size", "2", "--steps", "2"]
    first = start_blocked("sparseguidance.cli.sample", "write_shard", *args, "--no-progress")
    try:
        assert main([*args, "--no-progress"]) == 2
        assert f"shard set {tmp_path / 's_shards'} is in use by another job (pid {first.pid} on " in (
            capsys.readouterr().err
        )
    finally:
        assert release(first) == 0
    assert len(read_npz(out)["arr_0"]) == 4
    assert main([*args, "--no-progress", "--json"]) == 0  # free again: every shard is done, nothing to sample
    assert json.loads(capsys.readouterr().out)["count"] == 0


# --------------------------------------------------------------------------------------------- signals
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_step_then_resume_equals_uninterrupted(name, data_dir, config_file, tmp_path, capsys):
    reference = train(tiny_train_config(data_dir), tmp_path / "reference", progress=False)
    out = tmp_path / "run"
    args = ["train", "--config", str(config_file), "--out", str(out), "--no-progress"]
    result = subprocess.run(
        [sys.executable, "-c", SIGNALLED, name, *args], capture_output=True, text=True, env=ONE_THREAD_ENV
    )
    assert result.returncode == 130, result.stderr[-2000:]
    assert f"stopped by {name}; saved step 3 of 6" in result.stderr
    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["step"] == 3  # not a checkpoint step
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming from step 3 of 6" in capsys.readouterr().err
    state = torch.load(out / "checkpoints" / "latest.pt", weights_only=True)
    assert_same_weights(state["model"], reference.model.state_dict())
    assert_same_weights(state["ema"], reference.ema.state_dict())
    assert log_steps(out) == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------------------- checkpoint rotation
def test_the_new_checkpoint_is_written_before_the_old_one_is_rotated(tmp_path, monkeypatch):
    trainer_module.save_checkpoint(tmp_path, {"step": 1})
    real_save, seen = torch.save, []

    def save(state, path):
        seen.append(torch.load(tmp_path / "latest.pt", weights_only=True)["step"])  # still there while writing
        real_save(state, path)

    monkeypatch.setattr(torch, "save", save)
    trainer_module.save_checkpoint(tmp_path, {"step": 2})
    monkeypatch.undo()
    trainer_module.save_checkpoint(tmp_path, {"step": 3})
    steps = {name: torch.load(tmp_path / name, weights_only=True)["step"] for name in ("latest.pt", "previous.pt")}
    assert seen == [1] and steps == {"latest.pt": 3, "previous.pt": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"]


# ----------------------------------------------------------------------------- resuming with new settings
def test_resume_with_changed_settings_refuses_unless_allowed_and_records_them(data_dir, tmp_path, capsys):
    train(tiny_train_config(data_dir, steps=2), tmp_path, progress=False)
    changed = tiny_train_config(data_dir, steps=4, lr=2e-3, log_every=2)  # steps and log_every change freely
    with pytest.raises(CheckpointError, match=r"other settings \(train.lr: 0.001 -> 0.002\).*--allow-changes"):
        train(changed, tmp_path, progress=False)
    train(changed, tmp_path, progress=False, allow_changes=True)
    assert "settings changed at step 2: train.lr: 0.001 -> 0.002" in capsys.readouterr().err
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 2, 4]
    assert records[2] == {"step": 2, "event": "settings changed", "changes": {"train.lr": [0.001, 0.002]}}
    (history,) = map(json.loads, (tmp_path / "config-history.jsonl").read_text().splitlines())
    assert history["step"] == 2 and history["earlier_config"]["train"]["lr"] == 0.001
    assert load_train_config(tmp_path / "config.yaml") == changed


def test_cli_allow_changes(config_file, tmp_path, capsys):
    args = ["train", "--config", str(config_file), "--out", str(tmp_path), "--no-progress"]
    assert main([*args, "--steps", "2"]) == 0
    assert main([*args, "--steps", "4", "--set", "objective.label_dropout=0.2"]) == 2
    assert "objective.label_dropout: 0.1 -> 0.2" in capsys.readouterr().err
    assert main([*args, "--steps", "4", "--set", "objective.label_dropout=0.2", "--allow-changes"]) == 0
