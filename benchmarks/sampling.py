"""Images/s of guided sampling on DiT-B/2 (4×32×32, route 2→8, random weights), beside the FLOPs ratios.

    python benchmarks/sampling.py [--batch 4] [--steps 40] [--repeats 1] [--threads N] [--clock wall|process]

Methods, all at ω = 1.5 with Euler: no guidance, CFG (batched: one forward of 2B), SG (0.5/0.9) with its
dense prefix shared (`sg`, the default) and without (`sg_unshared`, every branch whole, the paper's way),
CFG+SG (0.5/0.9) through `sampling.generate`, and the plain loops a user would write, two forwards per step:
`cfg_two_forward` and `sg_two_forward` (the way TREAD's own sampler runs SG). Repeats are interleaved over
the methods and the median is kept; `--clock process` times the CPU this process used instead of the wall
clock (with one thread, a shared machine's other jobs then hardly move the figures). Writes
benchmarks/results/sampling.json with images/s, GFLOPs per image (paper convention), speedup and FLOPs
ratio against CFG. Targets: SG speedup ≥ 0.9 × its FLOPs ratio; SG shared ÷ unshared ≥ 0.95 × its FLOPs
ratio; batched CFG at least as fast as two forwards.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from common import (
    CLOCKS,
    GUIDED,
    SCALE,
    add_timing_arguments,
    against_cfg,
    guided_gflops,
    interleaved_medians,
    random_weights,
    set_threads,
    timed,
)

from sparseguidance.models import DiT, create_model
from sparseguidance.provenance import provenance, write_json
from sparseguidance.sampling import generate

RESULTS = Path(__file__).parent / "results" / "sampling.json"
PLAIN = {  # name -> (the weak branch's condition, γ strong, γ weak)
    "cfg_two_forward": ("null", 0.0, 0.0),
    "sg_two_forward": ("class", 0.5, 0.9),
}


def two_forward(model: DiT, labels: torch.Tensor, steps: int, name: str) -> torch.Tensor:
    """The plain Euler loop with two separate forwards per step, ω·D_strong + (1 − ω)·D_weak."""
    condition, gamma_strong, gamma_weak = PLAIN[name]
    x = torch.randn(len(labels), 4, 32, 32, generator=torch.Generator().manual_seed(0))
    weak_labels = torch.full_like(labels, model.null_class) if condition == "null" else labels
    generator = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for i in range(steps):
            strong = model(x, i / steps, labels, gamma=gamma_strong, generator=generator)
            weak = model(x, i / steps, weak_labels, gamma=gamma_weak, generator=generator)
            x = x + (weak + SCALE * (strong - weak)) / steps
    return x


def run_ours(model: DiT, labels: torch.Tensor, steps: int, name: str) -> None:
    """`steps` Euler steps of a method through `generate`."""
    guidance, share = GUIDED[name]
    generate(guidance, {"main": model}, labels, steps=steps, batch_size=len(labels), share=share)


def main() -> None:
    """Measure and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_arguments(parser, batch=4, steps=40, repeats=1, out=RESULTS)
    args = parser.parse_args()
    set_threads(args.threads)

    model = random_weights(create_model("DiT-B/2", routes=((2, 8),), learn_sigma=False)).eval()
    labels = torch.arange(args.batch) % 1000
    clock = CLOCKS[args.clock]
    runs: dict[str, Callable[[], float]] = {
        **{name: partial(timed, clock, partial(run_ours, model, labels, args.steps, name)) for name in GUIDED},
        **{name: partial(timed, clock, partial(two_forward, model, labels, args.steps, name)) for name in PLAIN},
    }
    gflops = {name: args.steps * per_step for name, per_step in guided_gflops(model.config, args.steps).items()}
    gflops |= {"cfg_two_forward": gflops["cfg"], "sg_two_forward": gflops["sg_unshared"]}
    load_before = os.getloadavg()
    medians = interleaved_medians(runs, args.repeats)

    rows = []
    for name in runs:
        rows.append({**against_cfg(name, medians, gflops, args.batch), "gflops_per_image": gflops[name]})
        r = rows[-1]
        print(
            f"{name:16} {r['images_per_s']:7.4f} img/s  speedup {r['speedup_vs_cfg']:.3f}  "
            f"flops ratio {r['flops_ratio_vs_cfg']:.3f}"
        )
    by_name = {r["method"]: r for r in rows}
    sg, unshared = by_name["sg"], by_name["sg_unshared"]
    share_speedup = sg["images_per_s"] / unshared["images_per_s"]
    share_flops = unshared["gflops_per_image"] / sg["gflops_per_image"]
    vs_plain = sg["images_per_s"] / by_name["sg_two_forward"]["images_per_s"]
    targets = {
        "sg_speedup_ge_0.9_flops_ratio": sg["speedup_vs_cfg"] >= 0.9 * sg["flops_ratio_vs_cfg"],
        "sg_shared_over_unshared_ge_0.95_flops_ratio": share_speedup >= 0.95 * share_flops,
        "sg_over_two_forward_sg_ge_1.1": vs_plain >= 1.1,
        "batched_cfg_ge_two_forward": by_name["cfg_two_forward"]["speedup_vs_cfg"] <= 1.0,
    }
    print(
        f"SG shared ÷ unshared: {share_speedup:.3f} (FLOPs ratio {share_flops:.3f}); ÷ two-forward SG: {vs_plain:.3f}"
    )
    for name, met in targets.items():
        print(f"{name}: {'met' if met else 'MISSED'}")
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
            "clock": args.clock,
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "rows": rows,
            "sg_shared_over_unshared": {"speedup": share_speedup, "flops_ratio": share_flops},
            "sg_over_two_forward_sg": vs_plain,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
