"""Images/s of guided sampling on DiT-B/2 (4×32×32, route 2→8, random weights), beside the FLOPs ratios.

    python benchmarks/sampling.py [--batch 4] [--steps 40] [--repeats 1] [--threads N]

Methods, all at ω = 1.5 with 40 Euler steps: no guidance, CFG (batched: one forward of 2B), SG (0.5/0.9),
CFG+SG (0.5/0.9) through `sampling.generate`, and `cfg_two_forward`: the plain loop a user would write
(two forwards per step). Repeats are interleaved over the methods and the median is kept. Writes
benchmarks/results/sampling.json with images/s, GFLOPs per image (paper convention), speedup and FLOPs
ratio against CFG. Targets: SG speedup ≥ 0.9 × its FLOPs ratio; batched CFG at least as fast as two forwards.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from common import interleaved_medians, random_weights

from sparseguidance.flops import euler_step_flops
from sparseguidance.guidance import make_guidance
from sparseguidance.models import DiT, create_model
from sparseguidance.provenance import provenance, write_json
from sparseguidance.sampling import generate

RESULTS = Path(__file__).parent / "results" / "sampling.json"
SCALE = 1.5
METHODS = {
    "none": make_guidance("none"),
    "cfg": make_guidance("cfg", SCALE),
    "sg": make_guidance("sg", SCALE, 0.5, 0.9),
    "cfg+sg": make_guidance("cfg+sg", SCALE, 0.5, 0.9),
}


def two_forward_cfg(model: DiT, labels: torch.Tensor, steps: int) -> torch.Tensor:
    """The reference: Euler with CFG as two separate forwards per step, ω·D(c) + (1 − ω)·D(∅)."""
    x = torch.randn(len(labels), 4, 32, 32, generator=torch.Generator().manual_seed(0))
    null = torch.full_like(labels, model.null_class)
    with torch.inference_mode():
        for i in range(steps):
            cond, uncond = model(x, i / steps, labels), model(x, i / steps, null)
            x = x + (uncond + SCALE * (cond - uncond)) / steps
    return x


def time_ours(model: DiT, labels: torch.Tensor, name: str, steps: int) -> float:
    """Seconds for `steps` Euler steps of a method through `generate`."""
    return generate(METHODS[name], {"main": model}, labels, steps=steps, batch_size=len(labels)).seconds


def time_two_forward(model: DiT, labels: torch.Tensor, steps: int) -> float:
    """The same for the two-forward CFG loop."""
    start = time.perf_counter()
    two_forward_cfg(model, labels, steps)
    return time.perf_counter() - start


def main() -> None:
    """Measure and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:  # on a shared machine one thread avoids waiting on a descheduled second one
        torch.set_num_threads(args.threads)

    model = random_weights(create_model("DiT-B/2", routes=((2, 8),), learn_sigma=False)).eval()
    labels = torch.arange(args.batch) % 1000
    runs: dict[str, Callable[[], float]] = {
        **{name: partial(time_ours, model, labels, name, args.steps) for name in METHODS},
        "cfg_two_forward": partial(time_two_forward, model, labels, args.steps),
    }
    gflops = {
        name: args.steps * euler_step_flops(g, model.config, None, args.steps).paper / 1e9
        for name, g in METHODS.items()
    }
    gflops["cfg_two_forward"] = gflops["cfg"]
    load_before = os.getloadavg()
    medians = interleaved_medians(runs, args.repeats)

    cfg_ips = args.batch / medians["cfg"]
    rows = []
    for name in runs:
        ips = args.batch / medians[name]
        rows.append(
            {
                "method": name,
                "images_per_s": ips,
                "gflops_per_image": gflops[name],
                "speedup_vs_cfg": ips / cfg_ips,
                "flops_ratio_vs_cfg": gflops["cfg"] / gflops[name],
            }
        )
        r = rows[-1]
        print(
            f"{name:16} {ips:7.4f} img/s  speedup {r['speedup_vs_cfg']:.3f}  flops ratio {r['flops_ratio_vs_cfg']:.3f}"
        )
    by_name = {r["method"]: r for r in rows}
    sg_met = by_name["sg"]["speedup_vs_cfg"] >= 0.9 * by_name["sg"]["flops_ratio_vs_cfg"]
    batched_met = by_name["cfg_two_forward"]["speedup_vs_cfg"] <= 1.0
    print(f"SG speedup ≥ 0.9 × FLOPs ratio: {'met' if sg_met else 'MISSED'}")
    print(f"batched CFG at least as fast as two forwards: {'met' if batched_met else 'MISSED'}")
    write_json(
        args.out,
        {
            **provenance(),
            "model": "DiT-B/2",
            "route": [2, 8],
            "input": [4, 32, 32],
            "scale": SCALE,
            "sampler": "euler",
            "steps": args.steps,
            "batch": args.batch,
            "repeats": args.repeats,
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "rows": rows,
            "targets": {"sg_speedup_ge_0.9_flops_ratio": sg_met, "batched_cfg_ge_two_forward": batched_met},
        },
    )


if __name__ == "__main__":
    main()
