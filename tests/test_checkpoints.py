"""Checkpoints: our safetensors + JSON pair, the released DiT / SiT / TREAD layouts, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config, tiny_inputs, tiny_model

from sparseguidance.checkpoints import infer_config, load_model, save_model
from sparseguidance.errors import CheckpointError
from sparseguidance.models import MaskDecoderConfig

DIT_KEYS = (
    "x_embedder.proj.weight",
    "x_embedder.proj.bias",
    "t_embedder.mlp.0.weight",
    "t_embedder.mlp.2.weight",
    "y_embedder.embedding_table.weight",
    "pos_embed",
    "blocks.0.attn.qkv.weight",
    "blocks.0.attn.proj.weight",
    "blocks.0.mlp.fc1.weight",
    "blocks.0.mlp.fc2.weight",
    "blocks.0.adaLN_modulation.1.weight",
    "final_layer.linear.weight",
    "final_layer.adaLN_modulation.1.weight",
)


def outputs_equal(a, b, gamma=0.5):
    x, t, y = tiny_inputs()
    with torch.no_grad():
        out_a = a(x, t, y, gamma=gamma, generator=torch.Generator().manual_seed(0))
        out_b = b(x, t, y, gamma=gamma, generator=torch.Generator().manual_seed(0))
    return torch.equal(out_a, out_b)


@pytest.mark.parametrize(
    "overrides", [{"routes": ((1, 2),), "train_gamma": 0.5}, {"decoder": MaskDecoderConfig(2, 16, 2)}]
)
def test_safetensors_round_trip(tmp_path, overrides):
    model = tiny_model(**overrides)
    save_model(model, tmp_path / "m.safetensors", {"step": 12})
    document = json.loads((tmp_path / "m.json").read_text())
    assert document["step"] == 12
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    assert outputs_equal(model, loaded)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


def test_state_dict_uses_the_released_dit_names():
    assert set(DIT_KEYS) <= set(tiny_model(learn_sigma=True).state_dict())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,  # DiT's released files: a plain state dict
        lambda sd: {"model": {k: v * 0 for k, v in sd.items()}, "ema": sd, "opt": {}},  # DiT/SiT train.py
        lambda sd: {"model_state_dict": {}, "ema_state_dict": sd, "step": 3},  # TREAD's layout, unwrapped
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # saved from DDP
    ],
)
def test_released_layouts_load_and_give_the_same_output(tmp_path, wrap):
    model = tiny_model(learn_sigma=True, hidden_size=64, num_heads=1)  # head width 64: inferable heads
    torch.save(wrap(model.state_dict()), tmp_path / "release.pt")
    loaded = load_model(tmp_path / "release.pt", prediction="velocity")  # the name does not tell
    assert loaded.config == model.config  # the architecture is read off the weights
    assert outputs_equal(model, loaded, gamma=0.0)


def test_which_selects_the_raw_weights(tmp_path):
    model = tiny_model()
    other = tiny_model(seed=5)
    torch.save({"model": other.state_dict(), "ema": model.state_dict()}, tmp_path / "both.pt")
    loaded = load_model(tmp_path / "both.pt", which="model", config=model.config, prediction="velocity")
    assert outputs_equal(loaded, other, gamma=0.0)
    save_model(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="different config"):
        load_model(tmp_path / "m.safetensors", config=tiny_config(depth=2))


def test_infer_config_reads_the_architecture():
    config = infer_config(tiny_model(learn_sigma=True).state_dict())
    assert (config.depth, config.hidden_size, config.patch_size, config.num_classes) == (4, 32, 2, 5)
    assert config.learn_sigma and config.input_size == 8 and config.in_channels == 3


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_safetensors_is_detected(tmp_path):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "m.safetensors")


def test_truncated_or_foreign_pt_is_detected(tmp_path):
    torch.save(tiny_model().state_dict(), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_model(tmp_path / "m.pt")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_model(tmp_path / "odd.pt")
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a DiT/SiT state dict"):
        load_model(tmp_path / "other.pt")


def test_missing_or_corrupt_json_is_detected(tmp_path):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text('{"model": {"depth": 4,')
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text('{"model": {"depth": 4, "colour": "red"}}')
    with pytest.raises(CheckpointError, match="unknown key.*colour"):
        load_model(tmp_path / "m.safetensors")
    (tmp_path / "m.json").unlink()
    with pytest.raises(CheckpointError, match="JSON config"):
        load_model(tmp_path / "m.safetensors")


def test_shape_mismatch_lists_the_keys(tmp_path):
    save_model(tiny_model(), tmp_path / "m.safetensors")
    config = json.loads((tmp_path / "m.json").read_text())
    config["model"]["num_classes"] = 7
    config["model"]["depth"] = 3
    (tmp_path / "m.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "m.safetensors")
    message = str(info.value)
    assert "unexpected (" in message and "blocks.3." in message
    assert "shape mismatch" in message
    assert "y_embedder.embedding_table.weight: checkpoint (6, 32) vs model (8, 32)" in message
