"""Text-to-image training: captioned data, the caption table, prompt dropout, and a TR-DiT that trains and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from sparseguidance.checkpoints import load_model, read_document
from sparseguidance.errors import ConfigError
from sparseguidance.guidance import make_guidance
from sparseguidance.sampling.sampler import generate
from sparseguidance.text import TextConfig, load_text_encoder
from sparseguidance.training.config import train_config_from_dict
from sparseguidance.training.trainer import train


def text_run(bert: Path, **model: Any) -> dict[str, Any]:
    """A 2-block TR-DiT (route 1→1 at 0.5) on captioned MNIST with the tiny BERT: 3 steps of 4 images."""
    return {
        "model": {
            "name": "TR-DiT-XS",
            "input_size": 32,
            "in_channels": 1,
            "patch_size": 8,
            "hidden_size": 32,
            "depth": 2,
            "num_heads": 2,
            "text_width": 16,
            "connector_depth": 1,
            "routes": [[1, 1]],
            **model,
        },
        "data": {"source": "mnist5k-captions"},
        "text": {"encoder": str(bert), "max_length": 32},
        "train": {"steps": 3, "batch_size": 4, "log_every": 1, "checkpoint_every": 2, "device": "cpu"},
    }


def test_a_tr_dit_trains_on_captions_and_samples_from_prompts(bert: Path, tmp_path: Path):
    trainer = train(train_config_from_dict(text_run(bert)), tmp_path / "run", progress=False)
    assert trainer.step == 3 and len(trainer.captions) == len(trainer.dataset.captions)
    stored = read_document(tmp_path / "run" / "model.safetensors")
    assert stored["text"] == {"encoder": str(bert), "layer": -1, "max_length": 32}
    model = load_model(tmp_path / "run" / "model.safetensors")
    prompts = load_text_encoder(TextConfig(**stored["text"])).encode(["the digit three", "a thick seven"])
    samples = generate(make_guidance("cfg+sg", 2.0, 0.0, 0.5), {"main": model}, prompts, steps=2)
    assert samples.images.shape == (2, 1, 32, 32) and torch.isfinite(samples.images).all()


def test_caption_ids_become_the_captions_states(bert: Path, tmp_path: Path):
    config = train_config_from_dict(text_run(bert, routes=[], train_gamma=0.0))
    trainer = train(config, tmp_path / "run", progress=False)
    ids = torch.tensor([5, 0])
    expected = load_text_encoder(config.text).encode([trainer.dataset.captions[5], trainer.dataset.captions[0]])
    got = trainer.captions[ids]
    length = expected.states.shape[1]
    torch.testing.assert_close(got.states[:, :length], expected.states)
    assert not got.mask[:, length:].any()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"source": "mnist5k"}}, "a TR-DiT learns from captions"),
        ({"model": {"input_size": 8, "in_channels": 1, "patch_size": 2, "hidden_size": 32, "depth": 2,
                    "num_heads": 2, "num_classes": 3}}, "gives captions: it trains a text model"),
    ],
)  # fmt: skip
def test_models_and_data_must_agree_on_text(bert: Path, change: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        train_config_from_dict({**text_run(bert), **change})


def test_a_text_width_that_is_not_the_encoders_is_named(bert: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="width 16, but model.text_width is 24: set model.text_width: 16"):
        train(train_config_from_dict(text_run(bert, text_width=24)), tmp_path / "run", progress=False)
