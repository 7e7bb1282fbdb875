"""Text-to-image training: captioned data, the caption table, prompt dropout, and a TR-DiT that trains and samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sparseguidance.checkpoints import load_model, read_document
from sparseguidance.cli import main
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


@pytest.fixture(scope="module")
def trained(bert: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A trained tiny text run: its trainer and its model file."""
    run = tmp_path_factory.mktemp("text-run") / "run"
    return train(train_config_from_dict(text_run(bert)), run, progress=False), run / "model.safetensors"


def test_a_tr_dit_trains_on_captions_and_samples_from_prompts(bert: Path, trained: tuple[Any, Path]):
    trainer, weights = trained
    assert trainer.step == 3 and len(trainer.captions) == len(trainer.dataset.captions)
    stored = read_document(weights)
    assert stored["text"] == {"encoder": str(bert), "layer": -1, "max_length": 32}
    model = load_model(weights)
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


def test_sample_cli_cycles_prompts_and_names_them(trained: tuple[Any, Path], tmp_path: Path):
    _, weights = trained
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a thick seven\n\n  the digit three  \n")
    out = tmp_path / "pngs"
    args = ["sample", str(weights), "--prompt", "a seven", "--prompt-file", str(prompts), "--out", str(out)]
    assert main([*args, "--guidance", "sg", "--gamma-strong", "0", "--gamma-weak", "0.5", "--scale", "2",
                 "--num-images", "4", "--steps", "2", "--no-progress"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.glob("*.png")) == ["000000_0.png", "000001_1.png", "000002_2.png", "000003_0.png"]
    assert (out / "prompts.txt").read_text().splitlines() == ["a seven", "a thick seven", "the digit three"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "is a text-to-image model: give --prompt TEXT or --prompt-file FILE"),
        (["--prompt", " "], "an empty prompt"),
        (["--prompt-file", "missing.txt"], "prompt file missing.txt does not exist"),
    ],
)
def test_sample_cli_prompt_errors(trained: tuple[Any, Path], tmp_path: Path, capsys, extra: list[str], message: str):
    _, weights = trained
    assert main(["sample", str(weights), "--out", str(tmp_path / "g.png"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_class_model_refuses_prompts(tmp_path: Path, capsys):
    assert main(["sample", "mnist-dense", "--out", str(tmp_path / "g.png"), "--prompt", "a seven"]) == 2
    assert "for text-to-image models; use --classes" in capsys.readouterr().err


def test_inspect_cli_reads_a_text_model_on_captioned_digits(trained: tuple[Any, Path], tmp_path: Path, capsys):
    _, weights = trained
    out = tmp_path / "inspect.json"
    assert main(["inspect", str(weights), "--num-images", "8", "--gap-times", "0.5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SG∅ 0/0.5" in text and "relative update" in text
    gaps = json.loads(out.read_text())["branch_gaps"][0]
    assert set(gaps) == {"t", "sg", "cfg", "ag", "sg_empty_prompt"} and gaps["cfg"] > 0
    assert main(["inspect", str(weights), "--data", "mnist5k", "--num-images", "8"]) == 2
    assert "this model needs captions" in capsys.readouterr().err
