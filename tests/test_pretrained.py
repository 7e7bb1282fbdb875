"""The shipped default models: present, the advertised architectures, small, and shipped faithfully."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_inputs, tiny_model

from sparseguidance.checkpoints import load_model, save_model
from sparseguidance.errors import CheckpointError
from sparseguidance.pretrained import (
    SHIPPED_DIR,
    SHIPPED_MODELS,
    load_shipped,
    resolve_checkpoint,
    ship_run,
    shipped_snapshots,
)


def load_shipped_step(name: str) -> int:
    """The training step recorded beside a shipped model's final weights."""
    return json.loads((SHIPPED_DIR / name / "model.json").read_text())["step"]


def test_shipped_models_are_the_same_size_with_the_advertised_sparsity():
    models = {name: load_shipped(name) for name in SHIPPED_MODELS}
    assert models["mnist-routing"].config.sparsity == "routing"
    assert models["mnist-masking"].config.sparsity == "masking"
    assert models["mnist-dense"].config.sparsity == "dense"
    assert len({(m.config.hidden_size, m.config.depth, m.config.patch_size) for m in models.values()}) == 1
    assert all(p.dtype == torch.float32 for m in models.values() for p in m.parameters())


def test_shipped_files_stay_well_under_100_mb():
    size = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert size < 80 * 2**20


def test_routing_run_keeps_early_snapshots_for_autoguidance():
    snapshots = shipped_snapshots("mnist-routing")
    assert snapshots
    final_step = load_shipped_step("mnist-routing")
    assert all(step < final_step for step in snapshots)
    first = min(snapshots)
    assert load_shipped("mnist-routing", first).config == load_shipped("mnist-routing").config


def test_unknown_name_and_missing_snapshot_are_clear_errors():
    with pytest.raises(CheckpointError, match="unknown shipped model 'mnist-unet'"):
        load_shipped("mnist-unet")
    with pytest.raises(CheckpointError, match="no snapshot of step 7; kept: "):
        load_shipped("mnist-routing", 7)


def fake_run(folder: Path, steps: tuple[int, ...]) -> torch.nn.Module:
    """A run directory as `train` leaves it, holding a tiny randomised routing model."""
    model = tiny_model(routes=((1, 2),), train_gamma=0.5)
    save_model(model, folder / "model.safetensors", {"step": 9})
    for step in steps:
        save_model(
            tiny_model(seed=step, routes=((1, 2),), train_gamma=0.5),
            folder / "snapshots" / f"step-{step:07d}.safetensors",
        )
    for name in ("config.yaml", "log.jsonl", "loss.png"):
        (folder / name).write_text(name)
    return model


def test_ship_run_stores_half_precision_that_loads_back_close(tmp_path):
    model = fake_run(tmp_path / "run", (3,))
    size = ship_run(tmp_path / "run", tmp_path / "shipped", [3])
    shipped = load_model(tmp_path / "shipped" / "model.safetensors")
    x, t, y = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(shipped(x, t, y), model(x, t, y), atol=2e-2, rtol=2e-2)
    assert (tmp_path / "shipped" / "snapshots" / "step-0000003.safetensors").is_file()
    assert (tmp_path / "shipped" / "log.jsonl").read_text() == "log.jsonl"
    assert size < sum(p.stat().st_size for p in (tmp_path / "run").rglob("*") if p.is_file())


def test_ship_run_refuses_an_unfinished_run(tmp_path):
    fake_run(tmp_path / "run", ())
    (tmp_path / "run" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not a finished training run: no model.safetensors"):
        ship_run(tmp_path / "run", tmp_path / "shipped")


def test_shipped_names_resolve_to_files_and_other_specs_stay_paths():
    assert resolve_checkpoint("mnist-routing") == SHIPPED_DIR / "mnist-routing" / "model.safetensors"
    first = min(shipped_snapshots("mnist-routing"))
    assert resolve_checkpoint(f"mnist-routing@{first}") == shipped_snapshots("mnist-routing")[first]
    assert resolve_checkpoint("runs/x/model.safetensors") == Path("runs/x/model.safetensors")
    with pytest.raises(CheckpointError, match="the part after @ is a training step"):
        resolve_checkpoint("mnist-routing@last")


def test_a_mistyped_shipped_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    message = r"'mnist-routng@1000' is neither a file nor a shipped model; did you mean mnist-routing\? shipped: mnist-"
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint("mnist-routng@1000")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel").write_bytes(b"")  # an existing file without a suffix stays a path
    assert resolve_checkpoint("mymodel") == Path("mymodel")
