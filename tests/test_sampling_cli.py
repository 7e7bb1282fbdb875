"""The `sample` command and its outputs: ADM npz, PNG grid, per-image PNGs, shards that resume after a kill."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import save_tiny_vae, tiny_model
from PIL import Image

import sparseguidance.cli.sample as sample_cli
from sparseguidance.checkpoints import save_model
from sparseguidance.cli import main
from sparseguidance.errors import CheckpointError
from sparseguidance.sampling import class_labels
from sparseguidance.sampling.outputs import rank_shards, read_npz

SG = ["--guidance", "sg", "--scale", "1.5", "--gamma-strong", "0.25", "--gamma-weak", "0.5", "--steps", "3"]


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(tiny_model(routes=((1, 2),), train_gamma=0.5), path)
    return path


def sample(checkpoint, out, *args):
    """Run `sparseguidance sample` and return its exit code."""
    return main(["sample", str(checkpoint), "--out", str(out), "--no-progress", *args])


def test_npz_has_adm_layout_and_the_labels(checkpoint, tmp_path, capsys):
    assert sample(checkpoint, tmp_path / "s.npz", *SG, "--num-images", "5", "--shard-size", "2", "--json") == 0
    data = read_npz(tmp_path / "s.npz")
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (5, 8, 8, 3)
    assert data["arr_1"].tolist() == class_labels("random", range(5), 5, seed=0).tolist()
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == 5 and summary["nfe"] == 3 and summary["forwards"] == 6
    assert 0 < summary["gflops_per_image_paper"] < summary["gflops_per_image_full"]


def test_killed_sharded_run_resumes_to_the_same_npz(checkpoint, tmp_path, monkeypatch, capsys):
    args = [*SG, "--num-images", "7", "--shard-size", "3", "--batch-size", "2"]
    assert sample(checkpoint, tmp_path / "full.npz", *args) == 0
    written = []

    def write_then_die(folder, shard, *rest):
        if written:
            raise KeyboardInterrupt  # killed while the second shard was being sampled
        written.append(shard)
        real_write(folder, shard, *rest)

    real_write = sample_cli.write_shard
    monkeypatch.setattr(sample_cli, "write_shard", write_then_die)
    assert sample(checkpoint, tmp_path / "run.npz", *args) == 130
    assert [p.name for p in (tmp_path / "run_shards").glob("shard-*.npz")] == ["shard-00000.npz"]
    monkeypatch.undo()
    capsys.readouterr()
    assert sample(checkpoint, tmp_path / "run.npz", *args[:-2], "--batch-size", "3", "--json") == 0
    assert json.loads(capsys.readouterr().out)["count"] == 4  # shard 0 was skipped
    full, resumed = read_npz(tmp_path / "full.npz"), read_npz(tmp_path / "run.npz")
    assert np.array_equal(full["arr_0"], resumed["arr_0"]) and np.array_equal(full["arr_1"], resumed["arr_1"])


def test_shards_of_another_run_are_refused(checkpoint, tmp_path, capsys):
    assert sample(checkpoint, tmp_path / "s.npz", *SG, "--num-images", "2") == 0
    assert sample(checkpoint, tmp_path / "s.npz", *SG, "--num-images", "2", "--seed", "1") == 2
    assert "different run" in capsys.readouterr().err


def test_an_out_with_another_suffix_is_refused_before_anything_is_made(checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sample(checkpoint, tmp_path / "x.jpg", *SG)
    assert exit_info.value.code == 2 and "write NAME.png (a grid)" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists()


def test_ranks_share_the_shards_exactly_once():
    shards = sorted(s for rank in range(3) for s in rank_shards(10_000, 1000, rank, 3))
    assert shards == list(range(10))


def test_png_grid_and_per_image_pngs_match_the_npz(checkpoint, tmp_path):
    common = [*SG, "--num-images", "5", "--classes", "1,3"]
    assert sample(checkpoint, tmp_path / "s.npz", *common) == 0
    assert sample(checkpoint, tmp_path / "grid.png", *common) == 0
    assert sample(checkpoint, tmp_path / "pngs", *common) == 0
    images = read_npz(tmp_path / "s.npz")["arr_0"]
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (16, 24, 3) and np.array_equal(grid[8:16, 0:8], images[3])  # 3 columns, 2 rows
    files = sorted(p.name for p in (tmp_path / "pngs").iterdir())
    assert files == ["000000_1.png", "000001_3.png", "000002_1.png", "000003_3.png", "000004_1.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pngs" / files[4])), images[4])


def test_autoguidance_from_a_second_checkpoint(checkpoint, tmp_path):
    weak = tmp_path / "weak.safetensors"
    save_model(tiny_model(seed=3), weak)
    args = ["--guidance", "ag", "--scale", "2", "--steps", "2", "--num-images", "2"]
    assert sample(checkpoint, tmp_path / "ag.npz", *args, "--weak-checkpoint", str(weak)) == 0
    assert read_npz(tmp_path / "ag.npz")["arr_0"].shape == (2, 8, 8, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--guidance", "ag"], "needs --weak-checkpoint"),
        (["--guidance", "sg", "--weak-checkpoint", "x.safetensors"], "does not use --weak-checkpoint"),
        (["--guidance", "sg", "--gamma-strong", "0.9", "--gamma-weak", "0.5"], "γ_strong ≤ γ_weak"),
        (["--route", "1-2"], "--route applies"),
        (["--classes", "7"], "classes must be"),
    ],
)
def test_user_errors_are_one_line(checkpoint, tmp_path, capsys, args, message):
    assert sample(checkpoint, tmp_path / "s.npz", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_latent_model_needs_a_vae(tmp_path, capsys):
    path = tmp_path / "latent.safetensors"
    save_model(tiny_model(in_channels=4), path)
    assert sample(path, tmp_path / "s.png", "--num-images", "1", "--steps", "1") == 2
    assert "--vae" in capsys.readouterr().err


def test_vae_decodes_latents_to_images(tmp_path):
    save_tiny_vae(tmp_path / "vae")
    from sparseguidance.sampling.vae import load_vae

    images = load_vae(tmp_path / "vae")(torch.randn(2, 4, 8, 8))
    assert images.shape == (2, 3, 16, 16) and images.abs().max() <= 1
    save_model(tiny_model(in_channels=4), tmp_path / "latent.safetensors")
    args = ["--vae", str(tmp_path / "vae"), "--num-images", "2", "--steps", "1"]
    assert sample(tmp_path / "latent.safetensors", tmp_path / "s.npz", *args) == 0
    assert read_npz(tmp_path / "s.npz")["arr_0"].shape == (2, 16, 16, 3)
    with pytest.raises(CheckpointError, match="config.json"):
        load_vae(tmp_path)


def test_no_share_and_precision(checkpoint, tmp_path):
    """--no-share runs each branch whole: the same images; bf16 autocast: close to fp32, not equal."""
    for name, extra in (("shared", []), ("whole", ["--no-share"]), ("bf16", ["--precision", "bf16"])):
        assert sample(checkpoint, tmp_path / f"{name}.npz", *SG, "--num-images", "3", "--device", "cpu", *extra) == 0
    shared, whole, bf16 = (read_npz(tmp_path / f"{n}.npz")["arr_0"].astype(int) for n in ("shared", "whole", "bf16"))
    assert np.array_equal(shared, whole)
    assert not np.array_equal(shared, bf16) and np.abs(shared - bf16).mean() < 8
