"""The run's log: one JSON record per logging step in log.jsonl, and the loss curve drawn from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from sparseguidance.files import atomic_write

CURVES = ("loss", "visible", "masked")  # masking runs log their two terms beside the total


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a log.jsonl; a line cut short by a kill is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(path: Path, step: int) -> None:
    """Drop the records after `step` (logged after the checkpoint a run resumes from, so they will be redone)."""
    kept = [r for r in read_log(path) if r.get("step", 0) <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in kept)))


def append_log(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a JSON line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def plot_loss(log: Path, out: Path, title: str = "") -> None:
    """Draw the logged loss (and masking's terms) against the step, log-scaled, as a PNG."""
    records = read_log(log)
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    for name in CURVES:
        points = [(r["step"], r[name]) for r in records if name in r]
        if points:
            ax.plot(*zip(*points, strict=True), label=name, linewidth=1)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title=title)
    if records:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
