"""Model weights on disk: our safetensors + JSON pair, and the released DiT / SiT / TREAD `.pt` files.

Our format is `NAME.safetensors` (the weights) with `NAME.json` beside it (the ModelConfig), so a
checkpoint describes itself. Both are written to a temporary name and renamed, config first.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sparseguidance.config import from_dict, to_dict
from sparseguidance.errors import CheckpointError, ConfigError
from sparseguidance.files import atomic_write
from sparseguidance.models import SIZES, DiT, ModelConfig, create_model

# Wrappers the released training scripts put around the weights, most preferred first (EMA weights sample best).
STATE_DICT_KEYS = {
    "ema": ("ema", "ema_state_dict", "model", "model_state_dict", "state_dict"),
    "model": ("model", "model_state_dict", "state_dict"),
}
PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


def config_path(weights: str | Path) -> Path:
    """The JSON config that sits beside a `.safetensors` file."""
    return Path(weights).with_suffix(".json")


def save_model(model: DiT, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write `path` (.safetensors) and its JSON config (plus optional metadata such as the training step)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"model weights are saved as .safetensors, got {path}")
    document = {"model": to_dict(model.config), **(dict(metadata) if metadata else {})}
    atomic_write(config_path(path), lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def read_model_config(path: str | Path) -> ModelConfig:
    """The ModelConfig stored beside a `.safetensors` checkpoint."""
    json_path = config_path(path)
    if not json_path.is_file():
        raise CheckpointError(f"{json_path} is missing: a .safetensors checkpoint needs its JSON config beside it")
    try:
        document = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{json_path} is corrupt or truncated ({e})") from None
    if not isinstance(document, dict) or "model" not in document:
        raise CheckpointError(f"{json_path} has no 'model' section")
    try:
        return from_dict(ModelConfig, document["model"], where=f"{json_path.name}: model")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_model(
    path: str | Path, device: str | torch.device = "cpu", which: str = "ema", config: ModelConfig | None = None
) -> DiT:
    """Load a model from our `.safetensors` + JSON pair or from a released DiT / SiT / TREAD `.pt` file.

    A `.pt` file's architecture is read off its weights unless `config` is given (needed only for head
    counts other than the standard sizes' and for routes or a training γ to attach to the model).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        stored = read_model_config(path)
        if config is not None and config != stored:
            raise CheckpointError(f"{path} was saved with a different config than the one given: {stored}")
        config = stored
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None
    else:
        state = read_released_state_dict(path, which)
        config = config or infer_config(state, path)
    model = create_model(config)
    load_state_dict_checked(model, state, str(path))
    return model.to(device).eval()


def read_released_state_dict(path: str | Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """Weights from a `.pt` file: a plain state dict, `{"model", "ema"}` (DiT/SiT) or `{"ema_state_dict"…}` (TREAD)."""
    if which not in STATE_DICT_KEYS:
        raise ConfigError(f"which must be one of {', '.join(STATE_DICT_KEYS)}, got {which!r}")
    obj = torch_load(path, f"{path} is corrupt, truncated or not a PyTorch checkpoint")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    for key in STATE_DICT_KEYS[which]:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    state = {}
    for name, tensor in obj.items():
        if not torch.is_tensor(tensor):
            raise CheckpointError(f"{path}: entry {name!r} is not a tensor; keys at top level: {', '.join(obj)[:200]}")
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        state[name] = tensor
    return state


def torch_load(path: str | Path, problem: str) -> Any:
    """torch.load with weights_only=True (tensors and plain containers: no code runs); a refusal is CheckpointError
    `PROBLEM (the reason in one line)`."""
    with warnings.catch_warnings():  # torch's notes on pickle protocols and TorchScript: the error says enough
        warnings.simplefilter("ignore")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zips, foreign pickles, TorchScript archives: torch raises several types
            raise CheckpointError(f"{problem} ({load_failure(e)})") from None


def load_failure(e: Exception) -> str:
    """The gist of a torch.load error in one line: the weights-only unpickler's reason, else the first sentence."""
    text = str(e)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. Please|\n|$)", text)
    reason = found.group(1) if found else text.split(". ")[0].splitlines()[0]
    return f"{type(e).__name__}: {reason}"


def infer_config(state: Mapping[str, torch.Tensor], source: str | Path = "state dict") -> ModelConfig:
    """Read a DiT/SiT architecture off its state dict (heads from the standard sizes, width / 64 otherwise)."""
    try:
        proj = state["x_embedder.proj.weight"]  # (D, C, p, p)
        hidden, in_channels, patch = proj.shape[0], proj.shape[1], proj.shape[2]
        num_tokens = state["pos_embed"].shape[1]
        out = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        num_classes = state["y_embedder.embedding_table.weight"].shape[0] - 1
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{source} is not a DiT/SiT state dict: it has no {e.args[0]}") from None
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    heads = next((h for d, w, h in SIZES.values() if w == hidden), max(1, hidden // 64))
    grid = round(num_tokens**0.5)
    if "decoder.embed.weight" in state:
        raise CheckpointError(f"{source}: masking checkpoints carry their config; save them with save_model")
    return ModelConfig(
        input_size=grid * patch,
        in_channels=in_channels,
        patch_size=patch,
        hidden_size=hidden,
        depth=depth,
        num_heads=heads,
        mlp_ratio=mlp_hidden / hidden,
        num_classes=num_classes,
        learn_sigma=out == 2 * in_channels,
    )


def load_state_dict_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load weights, or raise CheckpointError listing missing keys, unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(items)}): {', '.join(items[:8])}{' …' if len(items) > 8 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if items
        ]
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    check_finite(state, source)
    model.load_state_dict(dict(state))


def check_finite(state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    """Raise CheckpointError naming the first floating-point tensor that holds NaN or infinite values."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: {name} holds NaN or infinite values (a diverged run or a damaged file)")
