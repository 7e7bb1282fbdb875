"""Print the README's result tables from the committed results files (no measuring here).

    python benchmarks/tables.py

Each table names the command that made its JSON file and the machine it ran on.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def load(path: Path) -> dict:
    """One results file."""
    return json.loads(path.read_text())


def source(data: dict) -> str:
    """The line under a table: command, machine, torch, commit."""
    where = f"{data['machine']}, torch {data['torch']}, {data['threads']} thread(s), commit {data['commit']}"
    return f"`{data['command']}` — {where}"


def forward() -> None:
    """DiT-B/2 forward at several γ."""
    data = load(RESULTS / "forward.json")
    print(f"| γ | ms per forward (batch {data['batch']}) | speedup vs dense | FLOPs ratio |")
    print("|---|---|---|---|")
    for r in data["rows"]:
        print(f"| {r['gamma']} | {r['ms_per_forward']:.0f} | {r['speedup']:.2f} | {r['flops_ratio']:.2f} |")
    print(f"\n{source(data)}\n")


def sampling() -> None:
    """Guided sampling throughput against CFG."""
    data = load(RESULTS / "sampling.json")
    print(
        f"| method ({data['steps']} Euler steps, batch {data['batch']}) | images/s | GFLOPs per image "
        "(40 steps) | speedup vs CFG | FLOPs ratio vs CFG |"
    )
    print("|---|---|---|---|---|")
    for r in data["rows"]:
        per_40 = r["gflops_per_image"] * 40 / data["steps"]
        print(
            f"| {r['method']} | {r['images_per_s']:.3f} | {per_40:.0f} | {r['speedup_vs_cfg']:.2f} | "
            f"{r['flops_ratio_vs_cfg']:.2f} |"
        )
    print(f"\n{source(data)}\n")


def training() -> None:
    """Training throughput against the dense model."""
    data = load(RESULTS / "training.json")
    print("| method (DiT-B/2, γ 0.5) | images/s | dense images/s | speedup | FLOPs ratio |")
    print("|---|---|---|---|---|")
    for r in data["rows"]:
        print(
            f"| {r['method']} | {r['images_per_s']:.2f} | {r['dense_images_per_s']:.2f} | {r['speedup']:.2f} | "
            f"{r['flops_ratio']:.2f} |"
        )
    print(f"\n{source(data)}\n")


def metric_scale() -> None:
    """What a difference of one FID point means on MNIST-5k."""
    data = load(ROOT / "docs" / "results" / "metric-scale.json")
    fid = {(r["features"], r["comparison"]): r["fid"] for r in data["rows"]}
    n = {r["comparison"]: r["n"] for r in data["rows"]}
    print("| compared with the held-out split (1,000 digits) | images | FID, domain features | FID, Inception |")
    print("|---|---|---|---|")
    for comparison in ("train-vs-heldout", "second-draw", "blurred", "noise"):
        print(
            f"| {comparison} | {n[comparison]} | {fid[('mnist', comparison)]:.2f} | "
            f"{fid[('inception', comparison)]:.2f} |"
        )
    seconds = data["inception_seconds_per_1000_images"]
    print(f"\nInception features: {seconds:.0f} s per 1,000 images. {source(data)}\n")


if __name__ == "__main__":
    for table in (forward, sampling, training, metric_scale):
        print(f"### {table.__doc__}\n")
        table()
