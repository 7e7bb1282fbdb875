"""The default models shipped inside the package: dense, routing and masking DiTs trained on MNIST-5k.

Each lives in `assets/models/NAME/` as our own `train` command left it (config.yaml, log.jsonl, loss.png)
with its EMA weights (`model.safetensors` + `model.json`); the routing run also keeps early EMA snapshots
(`snapshots/step-NNNNNNN.safetensors`), the weak models of AutoGuidance. `ship_run` (through
`scripts/ship_models.py`) copies them there from finished run directories, the weights in float16.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sparseguidance.checkpoints import config_path, load_model
from sparseguidance.errors import CheckpointError
from sparseguidance.files import atomic_write
from sparseguidance.models import DiT

SHIPPED_DIR = Path(__file__).resolve().parent / "assets" / "models"
SHIPPED_MODELS = ("mnist-routing", "mnist-masking", "mnist-masking-ft", "mnist-dense")
SNAPSHOT = re.compile(r"step-(\d+)\.safetensors")
RUN_FILES = ("config.yaml", "log.jsonl", "loss.png")  # what a run directory says about how the weights came to be


def shipped_dir(name: str) -> Path:
    """The folder of one shipped model; a clear error when the name is unknown or the files are missing."""
    if name not in SHIPPED_MODELS:
        raise CheckpointError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    folder = SHIPPED_DIR / name
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"shipped model {name!r} is missing from {folder} (a partial install or clone?)")
    return folder


def shipped_path(name: str) -> Path:
    """Path of a shipped model's final EMA weights."""
    return shipped_dir(name) / "model.safetensors"


def shipped_snapshots(name: str = "mnist-routing") -> dict[int, Path]:
    """Early EMA snapshots of a shipped run, by training step (empty when the run kept none)."""
    folder = shipped_dir(name) / "snapshots"
    found = (SNAPSHOT.fullmatch(p.name) for p in folder.glob("step-*.safetensors")) if folder.is_dir() else ()
    return {int(m.group(1)): folder / m.group(0) for m in found if m}


def shipped_file(name: str, step: int | None = None) -> Path:
    """A shipped model's final weights, or those of its snapshot of training step `step`."""
    if step is None:
        return shipped_path(name)
    snapshots = shipped_snapshots(name)
    if step not in snapshots:
        kept = ", ".join(map(str, sorted(snapshots))) or "none"
        raise CheckpointError(f"shipped model {name!r} has no snapshot of step {step}; kept: {kept}")
    return snapshots[step]


def load_shipped(name: str, step: int | None = None) -> DiT:
    """A shipped model in eval mode: the final weights, or the snapshot of training step `step`."""
    return load_model(shipped_file(name, step)).eval()


def resolve_checkpoint(spec: str) -> Path:
    """`mnist-routing` or `mnist-routing@1000` (a snapshot) -> the shipped file; anything else is a path."""
    name, _, step = spec.partition("@")
    if name not in SHIPPED_MODELS:
        check_not_a_misspelt_name(spec)
        return Path(spec)
    if step and not step.isdigit():
        raise CheckpointError(f"{spec!r}: the part after @ is a training step, e.g. {name}@1000")
    return shipped_file(name, int(step) if step else None)


def check_not_a_misspelt_name(spec: str) -> None:
    """Refuse a bare name (no folder, no suffix) that is no file: a mistyped shipped model, which we name."""
    path = Path(spec.partition("@")[0])
    if path.exists() or path.suffix or len(path.parts) != 1:
        return
    close = difflib.get_close_matches(path.name, SHIPPED_MODELS, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise CheckpointError(f"{spec!r} is neither a file nor a shipped model; {hint}shipped: {', '.join(SHIPPED_MODELS)}")


def ship_weights(source: Path, target: Path) -> None:
    """Write `source` (.safetensors + JSON) to `target` in float16, noting the precision in the JSON."""
    if not source.is_file():
        raise CheckpointError(f"{source} does not exist")
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(source)).items()}
    document = json.loads(config_path(source).read_text()) | {"stored_dtype": str(torch.float16)}
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(config_path(target), lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    atomic_write(target, lambda tmp: save_file(tensors, tmp))


def ship_run(run: Path, target: Path, snapshots: Sequence[int] = ()) -> int:
    """Replace `target` by a finished run's final weights, chosen snapshots, config, log and loss plot; bytes."""
    missing = [name for name in (*RUN_FILES, "model.safetensors") if not (run / name).is_file()]
    if missing:
        raise CheckpointError(f"{run} is not a finished training run: no {', '.join(missing)}")
    if target.exists():
        shutil.rmtree(target)
    ship_weights(run / "model.safetensors", target / "model.safetensors")
    for step in snapshots:
        name = f"step-{step:07d}.safetensors"
        ship_weights(run / "snapshots" / name, target / "snapshots" / name)
    for name in RUN_FILES:
        shutil.copy2(run / name, target / name)
    return sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
