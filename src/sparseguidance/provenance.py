"""Where a result came from: machine, torch version, commit and command, recorded beside every figure."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from sparseguidance.files import atomic_write


def machine() -> str:
    """A one-line description of this machine: CPU model and cores, or the GPU."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} GPU)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def commit() -> str:
    """The git commit of the working tree (with `+dirty` when it has uncommitted changes), or `unknown`."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance(command: str | None = None) -> dict[str, Any]:
    """machine, torch version, commit and command line, for a results file."""
    return {
        "machine": machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "commit": commit(),
        "command": command if command is not None else command_line(),
    }


def command_line() -> str:
    """The command that is running, as a user would type it (`python benchmarks/x.py …`, `sparseguidance …`)."""
    program = sys.argv[0]
    program = f"python {program}" if program.endswith(".py") else Path(program).name
    return " ".join([program, *sys.argv[1:]])


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a results file atomically, with a trailing newline."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2) + "\n"))
