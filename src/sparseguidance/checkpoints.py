"""Model weights on disk: our safetensors + JSON pair, and the released DiT / SiT / TREAD `.pt` files.

Our format is `NAME.safetensors` (the weights) with `NAME.json` beside it (the model config, and the
prediction when it is not a velocity), so a checkpoint describes itself. A TR-DiT config says so through its
`family` field; a model section without one is a DiT/SiT (models.config_class). Both are written to a temporary
name and renamed, config first.

What a `.pt` network predicts (models.prediction) is read off the file where it can be: TREAD's `train.py`
saves `EDMPrecond(model=DiT)`, so every key carries the prefix `model.` (an EDM denoiser); this library's
`latest.pt` stores its config (a velocity model, routes included); the released files are known by name
(`DiT-XL-2-256x256.pt`: DDPM ε, `SiT-XL-2-256x256.pt`: velocity). Anything else must be told.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from sparseguidance.config import from_dict, to_dict
from sparseguidance.errors import CheckpointError, ConfigError
from sparseguidance.files import atomic_write
from sparseguidance.models import SIZES, AnyModelConfig, ModelConfig, config_class, create_model
from sparseguidance.models.prediction import EDM, PREDICTIONS, Velocity, as_velocity, make_prediction, unwrap
from sparseguidance.sparsity import Route

# Wrappers the released training scripts put around the weights, most preferred first (EMA weights sample best).
STATE_DICT_KEYS = {
    "ema": ("ema", "ema_state_dict", "model", "model_state_dict", "state_dict"),
    "model": ("model", "model_state_dict", "state_dict"),
}
PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
EDM_PREFIX = "model."  # TREAD's train.py saves EDMPrecond(model=DiT): the whole network under `model.`
# Released file names (DiT-XL-2-256x256.pt, SiT-XL-2-256x256.pt, …): DiT's are DDPM ε, SiT's flow velocity.
RELEASED_NAMES = {"DiT-": "eps", "SiT-": "velocity"}


def config_path(weights: str | Path) -> Path:
    """The JSON config that sits beside a `.safetensors` file."""
    return Path(weights).with_suffix(".json")


def save_model(model: nn.Module, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
    """Write `path` (.safetensors) and its JSON config (plus a non-velocity prediction and optional metadata)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"model weights are saved as .safetensors, got {path}")
    network, prediction = unwrap(model)
    stated = {} if type(prediction) is Velocity else {"prediction": {"name": prediction.name, **to_dict(prediction)}}
    document = {"model": to_dict(network.config), **stated, **(dict(metadata) if metadata else {})}
    atomic_write(config_path(path), lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    tensors = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def read_document(path: str | Path) -> dict[str, Any]:
    """The JSON document stored beside a `.safetensors` checkpoint (its `model` section checked to exist)."""
    json_path = config_path(path)
    if not json_path.is_file():
        raise CheckpointError(f"{json_path} is missing: a .safetensors checkpoint needs its JSON config beside it")
    try:
        document = json.loads(json_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{json_path} is corrupt or truncated ({e})") from None
    if not isinstance(document, dict) or "model" not in document:
        raise CheckpointError(f"{json_path} has no 'model' section")
    return document


def parse_stored(cls: type, data: Any, where: str) -> Any:
    """A dataclass from a stored section, its errors as CheckpointError naming where it was read."""
    try:
        return from_dict(cls, data if isinstance(data, Mapping) else {}, where=where)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def parse_model_section(data: Any, where: str) -> AnyModelConfig:
    """A stored model section as the config of its family (DiT/SiT, or TR-DiT by its `family` field)."""
    try:
        cls = config_class(data) if isinstance(data, Mapping) else ModelConfig
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from None
    return parse_stored(cls, data, where)


def stored_prediction(document: Mapping[str, Any], where: str) -> Velocity:
    """The prediction a JSON document records (`{"name": "edm", "sigma_data": 0.5, …}`); velocity when absent."""
    entry = dict(document.get("prediction") or {"name": "velocity"})
    name = entry.pop("name", None)
    if name not in PREDICTIONS:
        raise CheckpointError(f"{where}: unknown prediction {name!r}; known: {', '.join(PREDICTIONS)}")
    return parse_stored(PREDICTIONS[name], entry, f"{where}: prediction")


@dataclass(frozen=True)
class Stored:
    """A checkpoint file's network weights and what the file says about them."""

    state: dict[str, torch.Tensor]
    config: AnyModelConfig | None  # stored beside or with the weights; None: to be read off the weights
    prediction: Velocity | None  # None: the file cannot tell
    source: str  # how the prediction was decided: stored, TREAD's `model.` prefix, the released file's name


def read_checkpoint(
    path: str | Path,
    which: str = "ema",
    config: AnyModelConfig | None = None,
    routes: Sequence[Route] | None = None,
    train_gamma: float | None = None,
) -> Stored:
    """Weights, architecture (always set) and prediction of our `.safetensors` pair or of a `.pt`.

    config:      a `.pt`'s architecture (default: its stored config, else read off its weights);
    routes, train_gamma: the routing of a `.pt` that does not store it (TREAD keeps it in its Hydra config).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        if routes or train_gamma is not None:
            raise ConfigError(f"--route applies to a .pt checkpoint (so does --train-gamma); {path} carries its own")
        stored = read_safetensors(path)
        if config is not None and config != stored.config:
            raise CheckpointError(f"{path} was saved with a different config than the one given: {stored.config}")
        return stored
    stored = read_released(path, which)
    config = config or stored.config or infer_config(stored.state, path)
    routing = {"routes": tuple(routes or ()), "train_gamma": train_gamma}
    return dataclasses.replace(stored, config=dataclasses.replace(config, **{k: v for k, v in routing.items() if v}))


def read_safetensors(path: Path) -> Stored:
    """Our pair: weights from `NAME.safetensors`, config and prediction (velocity if absent) from `NAME.json`."""
    document = read_document(path)
    config = parse_model_section(document["model"], f"{config_path(path).name}: model")
    prediction = stored_prediction(document, config_path(path).name)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None
    return Stored(state, config, prediction, "stored in its JSON")


def read_released(path: Path, which: str = "ema") -> Stored:
    """A `.pt`: a state dict, `{"model", "ema"}` (DiT/SiT; ours adds its config) or `{"ema_state_dict"…}` (TREAD)."""
    if which not in STATE_DICT_KEYS:
        raise ConfigError(f"which must be one of {', '.join(STATE_DICT_KEYS)}, got {which!r}")
    obj = torch_load(path, f"{path} is corrupt, truncated or not a PyTorch checkpoint")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    ours = obj.get("config")  # this library's latest.pt: {"model", "ema", …, "config": {"model": …}}
    config = parse_model_section(ours["model"], f"{path.name}: config.model") if isinstance(ours, dict) else None
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
    if state and all(name.startswith(EDM_PREFIX) for name in state):
        state = {name.removeprefix(EDM_PREFIX): tensor for name, tensor in state.items()}
        return Stored(state, config, EDM(), "weights under `model.`: TREAD's EDMPrecond(model=DiT)")
    if config is not None:
        return Stored(state, config, Velocity(), "this library's training checkpoint")
    for start, name in RELEASED_NAMES.items():
        if path.name.startswith(start):
            return Stored(state, None, make_prediction(name), f"guessed from the name {start}*")
    return Stored(state, None, None, "")


@dataclass(frozen=True)
class Loaded:
    """A model read from disk as a velocity model, what its network predicts, and how that was decided."""

    model: nn.Module  # the network itself when it predicts velocity, else a VelocityModel around it
    prediction: Velocity
    source: str

    def describe(self) -> str:
        """One line: the prediction, its constants and where it came from."""
        return f"{self.prediction.describe()}; {self.source}"


def open_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    which: str = "ema",
    config: AnyModelConfig | None = None,
    prediction: str | Velocity | None = None,
    routes: Sequence[Route] | None = None,
    train_gamma: float | None = None,
) -> Loaded:
    """Load our `.safetensors` + JSON pair or a `.pt` (released DiT / SiT, TREAD, our trainer's) as a velocity model.

    prediction:  `velocity`, `eps`, `edm` or an instance: overrides the file, and is needed where the file cannot
    tell; config, routes, train_gamma: as in `read_checkpoint`.
    """
    stored = read_checkpoint(path, which, config, routes, train_gamma)
    found, source = stored.prediction, stored.source
    if prediction is not None:
        found, source = (make_prediction(prediction) if isinstance(prediction, str) else prediction), "as given"
    if found is None:
        raise CheckpointError(
            f"cannot tell what {Path(path).name} predicts (released DiT and SiT files share one layout): give "
            "--prediction velocity (SiT, flow matching), eps (DiT, DDPM) or edm (EDM-preconditioned, as TREAD trains)"
        )
    model = create_model(stored.config)
    load_state_dict_checked(model, stored.state, str(path))
    return Loaded(as_velocity(model.to(device).eval(), found), found, source)


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    which: str = "ema",
    config: AnyModelConfig | None = None,
    prediction: str | Velocity | None = None,
) -> nn.Module:
    """The model of `open_checkpoint` alone: a velocity model whatever the network predicts."""
    return open_checkpoint(path, device, which, config, prediction).model


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
