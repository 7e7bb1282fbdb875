"""Where and how networks run: the device (CUDA when present), autocast precision, TF32, and torch.compile.

Nothing here runs at import: TF32 is switched on by `use_device`, the one call a command makes once it
knows the device, and only for CUDA.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from sparseguidance.errors import ConfigError
from sparseguidance.models import dit, trdit

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES: dict[str, bool | None] = {"auto": None, "dynamic": True, "static": False}  # torch.compile's dynamic=


def resolve_device(name: str | None = None) -> torch.device:
    """The device named (default: this process's CUDA GPU when there is one, else the CPU), checked to exist."""
    if name is None:
        return (
            torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but CUDA is not available here: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {name!r} asked for, but MPS is not available here: use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}: expected cpu, cuda, cuda:N or mps")
    return device


def use_device(name: str | None = None, tf32: bool = True) -> torch.device:
    """resolve_device, and on CUDA: TF32 for float32 matmuls and convolutions (Ampere and newer) unless tf32=False."""
    device = resolve_device(name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return device


def autocast(device: torch.device | str, precision: str) -> AbstractContextManager[Any]:
    """Autocast to bf16 or fp16 on the device; nothing at all for fp32 (so fp32 results are unchanged)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(torch.device(device).type, dtype=dtype)


def compile_model(model: nn.Module, mode: str = "auto", backend: str = "inductor") -> nn.Module:
    """torch.compile a model in place, keeping its methods and parameter names: per block for DiT and TR-DiT (its
    connector's blocks too), else whole.

    A DiT's token count differs between calls (SG's branches at two γ, the dense prefix): `static` compiles
    one graph per shape, `dynamic` one graph with symbolic sizes, `auto` is torch's default (static first,
    dynamic once a shape changes). Its blocks and final layer are compiled; gathers, scatters and random
    draws stay eager. backend: torch.compile's (e.g. `eager` to check the tracing without generating code).
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"unknown compile mode {mode!r}; known: {', '.join(COMPILE_MODES)}")
    blocks = (dit.DiTBlock, dit.FinalLayer, trdit.TRDiTBlock, trdit.ConnectorBlock, trdit.FinalLayer)
    targets = [m for m in model.modules() if isinstance(m, blocks)] or [model]
    for module in targets:
        module.compile(dynamic=COMPILE_MODES[mode], backend=backend)
    return model
