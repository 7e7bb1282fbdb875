"""Training throughput of routing (2→8 at 0.5) and masking (0.5) against dense DiT-B/2 on 4×32×32 latents.

    python benchmarks/training.py [--batch 8] [--repeats 5]

One training step = the objective's forward (flow matching, label dropout, the model's sparsity),
backward, gradient clipping and the AdamW step (no EMA, no data loading). The three models step in
turn, repeat after repeat, so a slow spell of a shared machine hits each alike; medians are compared.
Writes benchmarks/results/training.json: per method, speedup = dense step time / sparse step time beside
flops_ratio = dense FLOPs / sparse FLOPs (a training step is ≈ 3 forwards for every layer alike, so the
forward ratio is the step's; `flops_ratio` is the paper convention, `flops_ratio_full` counts attention).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import interleaved_medians

from sparseguidance.flops import forward_flops
from sparseguidance.models import DiT, MaskDecoderConfig, create_model
from sparseguidance.provenance import provenance, write_json
from sparseguidance.training.objective import ObjectiveConfig, flow_matching_loss

RESULTS = Path(__file__).parent / "results" / "training.json"
# MaskDiT's XL decoder (8 × 512 after 28 blocks of 1152) scaled to B's 12 blocks of 768.
DECODER = MaskDecoderConfig(depth=4, width=384, heads=6)
METHODS = {
    "dense": {},
    "routing": {"routes": ((2, 8),), "train_gamma": 0.5},
    "masking": {"decoder": DECODER, "train_gamma": 0.5},
}


def training_step(model: DiT, batch: int) -> Callable[[], float]:
    """A closure that runs one full training step on a fixed random batch and returns its wall time."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 4, 32, 32), torch.randint(0, 1000, (batch,))
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        start = time.perf_counter()
        loss = flow_matching_loss(model, model.config, x, y, ObjectiveConfig(), generator)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    """Measure and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # a shared machine's other jobs show here, and in the figures
    torch.manual_seed(0)
    models = {name: create_model("DiT-B/2", learn_sigma=False, **kw).train() for name, kw in METHODS.items()}
    steps = {name: training_step(model, args.batch) for name, model in models.items()}
    medians = interleaved_medians(steps, args.repeats)  # the warm-up also creates AdamW's state

    dense = models["dense"].config
    dense_time = medians["dense"]
    rows = []
    for name in ("routing", "masking"):
        config, median = models[name].config, medians[name]
        sparse_flops = forward_flops(config, config.train_gamma)
        row = {
            "method": name,
            "images_per_s": args.batch / median,
            "dense_images_per_s": args.batch / dense_time,
            "speedup": dense_time / median,
            "flops_ratio": forward_flops(dense).paper / sparse_flops.paper,
            "flops_ratio_full": forward_flops(dense).full / sparse_flops.full,
        }
        row["meets_target"] = row["speedup"] >= 0.85 * row["flops_ratio"]
        rows.append(row)
        print(f"{name:8} {row['images_per_s']:6.2f} img/s (dense {row['dense_images_per_s']:.2f})", end="  ")
        print(f"speedup {row['speedup']:.3f}  flops ratio {row['flops_ratio']:.3f}", end="  ")
        print(f"(full {row['flops_ratio_full']:.3f})")
    routing = rows[0]
    print(f"target: routing speedup ≥ 0.85 × flops ratio: {'met' if routing['meets_target'] else 'MISSED'}")
    write_json(
        args.out,
        {
            **provenance(),
            "model": "DiT-B/2",
            "input": [4, 32, 32],
            "route": [2, 8],
            "decoder": {"depth": DECODER.depth, "width": DECODER.width, "heads": DECODER.heads},
            "gamma": 0.5,
            "batch": args.batch,
            "repeats": args.repeats,
            "step": "objective forward + backward + clip + AdamW (no EMA, no data loading), fp32",
            "load_average_before_after": [load_before, os.getloadavg()[0]],
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
