"""Shared test helpers: tiny models with non-trivial (random) weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from sparseguidance.models import DiT, MaskDecoderConfig, ModelConfig, create_model


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests run tiny tensors on one thread: on a busy 2-core machine, OpenMP threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ModelConfig(input_size=8, in_channels=3, patch_size=2, hidden_size=32, depth=4, num_heads=2, num_classes=5)


def tiny_config(**overrides: object) -> ModelConfig:
    """A 4-block, width-32 model on 3×8×8 inputs (16 tokens), with overrides."""
    return dataclasses.replace(TINY, **overrides)


def randomize(model: DiT, seed: int = 0, std: float = 0.1) -> DiT:
    """Fill every parameter with N(0, std²) so that no zero-initialised gate hides a bug."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def tiny_model(seed: int = 0, **overrides: object) -> DiT:
    """A randomised tiny model."""
    return randomize(create_model(tiny_config(**overrides)), seed)


def tiny_inputs(batch: int = 3, seed: int = 1, config: ModelConfig = TINY) -> tuple[torch.Tensor, ...]:
    """(x, t, y) for a tiny model; the last label is the null class."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.input_size, config.input_size, generator=gen)
    t = torch.rand(batch, generator=gen)
    y = torch.randint(0, config.num_classes, (batch,), generator=gen)
    y[-1] = config.num_classes
    return x, t, y


def save_tiny_vae(folder: Path) -> None:
    """Save a randomly initialised two-level diffusers AutoencoderKL (4 latent channels, 2× down) in `folder`."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )
    vae.save_pretrained(folder)


@pytest.fixture
def routed() -> DiT:
    """Tiny model with route 1→2."""
    return tiny_model(routes=((1, 2),), train_gamma=0.5)


@pytest.fixture
def masked() -> DiT:
    """Tiny model with a 2-block decoder of width 16."""
    return tiny_model(decoder=MaskDecoderConfig(depth=2, width=16, heads=2), train_gamma=0.5)


WORDS = ["a", "an", "the", "thick", "thin", "seven", "three", "digit", "small", "large", "slanted"]


@pytest.fixture(scope="session")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, width-16 BERT with a word-level vocabulary, saved as a Hugging Face folder."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    transformers.BertModel(config).save_pretrained(folder)
    return folder
