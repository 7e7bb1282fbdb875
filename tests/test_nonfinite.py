"""Nothing non-finite passes silently: diverged training stops and keeps its last good checkpoint; NaN weights,
NaN statistics, NaN latents, NaN or infinite settings and YAML strings standing in for booleans are refused."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image
from training_fixtures import tiny_train_data, write_latents

import sparseguidance.training.trainer as trainer_module
from sparseguidance.checkpoints import load_model, save_model
from sparseguidance.cli import main
from sparseguidance.data import ImageFolder, LatentShards, encode_images
from sparseguidance.errors import CheckpointError, ConfigError, DataError
from sparseguidance.guidance import make_guidance
from sparseguidance.metrics.frechet import Gaussian
from sparseguidance.metrics.reference import ReferenceStats, load_reference, save_reference
from sparseguidance.models import ModelConfig
from sparseguidance.training import load_train_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_latents(tmp_path_factory.mktemp("latents"))


@pytest.mark.parametrize(
    ("log_every", "problem"),
    [(1, "the loss is nan"), (5, "the weights hold NaN or infinite values")],  # caught at the log, or at the save
)
def test_a_diverged_run_stops_and_keeps_its_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch, capsys, log_every, problem
):
    real, losses = trainer_module.flow_matching_loss, []

    def diverging_from_step_4(*args, **kwargs):
        terms = real(*args, **kwargs)
        losses.append(terms["loss"])
        if len(losses) >= 4:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(trainer_module, "flow_matching_loss", diverging_from_step_4)
    config, run = tmp_path / "tiny.yaml", tmp_path / "run"
    config.write_text(json.dumps(tiny_train_data(data_dir, log_every=log_every, checkpoint_every=2, snapshot_every=0)))
    assert main(["train", "--config", str(config), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"training diverged by step 4: {problem}" in err and "last good checkpoint: step 2" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run / "model.safetensors").exists()


def test_a_model_with_nan_weights_is_refused(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.blocks[1].attn.qkv.weight[0, 0] = float("nan")
    save_model(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn\.qkv\.weight holds NaN"):
        load_model(tmp_path / "nan.safetensors")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_reference_statistics_with_nan_or_inf_are_refused(tmp_path, bad):
    mu, sigma = np.zeros(3), np.eye(3)
    sigma[1, 2] = bad
    with pytest.raises(DataError, match="NaN or infinite"):
        Gaussian(mu, sigma)
    features = np.zeros((4, 3), dtype=np.float32)
    save_reference(tmp_path / "ref.npz", ReferenceStats("mnist-x", Gaussian(mu, np.eye(3)), None, features))
    with np.load(tmp_path / "ref.npz") as archive:
        arrays = dict(archive)
    arrays["features"][2, 1] = bad
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="features hold NaN or infinite"):
        load_reference(tmp_path / "bad.npz")


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf])
def test_non_finite_guidance_scales_are_refused(scale):
    with pytest.raises(ConfigError, match="guidance scale must be a finite number"):
        make_guidance("cfg", scale)


@pytest.mark.parametrize("text", ["'false'", '"no"', "0", "1", "'true'"])
def test_yaml_booleans_must_be_booleans(data_dir, tmp_path, text):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_train_data(data_dir)))
    with pytest.raises(ConfigError, match="ema_warmup must be true or false"):
        load_train_config(config, [f"train.ema_warmup={text}"])
    assert load_train_config(config, ["train.ema_warmup=false"]).train.ema_warmup is False


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mlp_ratio", math.nan, "mlp_ratio must be a finite number"),
        ("mlp_ratio", 0.0, "mlp_ratio must be > 0"),
        ("time_scale", math.inf, "time_scale must be a finite number"),
        ("depth", 2.0, "depth must be a whole number"),
        ("depth", True, "depth must be a whole number"),
        ("learn_sigma", "false", "learn_sigma must be true or false"),
        ("routes", ((1, "2"),), "routes must be a list of [a whole number, a whole number]"),
    ],
)
def test_model_fields_have_their_types_in_python_too(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ModelConfig(**{field: value})


class ConstantVAE(torch.nn.Module):
    """Stands in for an AutoencoderKL: every image encodes to the same 4×2×2 latent."""

    config = SimpleNamespace(scaling_factor=0.5)

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=self.value.expand(len(x), 4, 2, 2)))


def test_encode_reports_what_it_wrote_and_never_writes_nan_latents(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "images" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8)).save(tmp_path / "images" / c / f"{i}.png")
    images = ImageFolder(tmp_path / "images", 8, 3)
    assert encode_images(images, ConstantVAE(1.0), tmp_path / "ok", batch_size=3, shard_size=3) == 4
    assert len(LatentShards(tmp_path / "ok")) == 4
    with pytest.raises(DataError, match="NaN or infinite latents for images 0..2"):
        encode_images(images, ConstantVAE(math.nan), tmp_path / "nan", shard_size=3)
    assert not list((tmp_path / "nan").glob("*.latents.npy"))
    for sizes in ((0, 3), (3, 0), (-1, 3)):
        with pytest.raises(ConfigError, match="batch_size and shard_size must be at least 1"):
            encode_images(images, ConstantVAE(1.0), tmp_path / "none", *sizes)
