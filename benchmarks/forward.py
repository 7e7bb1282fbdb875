"""Time one forward of DiT-B/2 (4×32×32, route 2→8, random weights) at several γ against the dense forward.

    python benchmarks/forward.py [--batch 8] [--repeats 7]

Writes benchmarks/results/forward.json: per γ, speedup = dense time / sparse time (medians of
interleaved repeats in one run) beside flops_ratio = dense FLOPs / sparse FLOPs (paper convention).
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

import torch
from common import interleaved_medians, random_weights

from sparseguidance.flops import forward_flops
from sparseguidance.models import create_model
from sparseguidance.provenance import provenance, write_json

GAMMAS = (0.0, 0.25, 0.5, 0.75, 0.9)
RESULTS = Path(__file__).parent / "results" / "forward.json"


def main() -> None:
    """Measure and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    model = random_weights(create_model("DiT-B/2", routes=((2, 8),), learn_sigma=False)).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, 32, 32, generator=gen)
    t = torch.rand(args.batch, generator=gen)
    y = torch.randint(0, 1000, (args.batch,), generator=gen)

    def forward(gamma: float) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model(x, t, y, gamma=gamma, generator=gen)
        return time.perf_counter() - start

    medians = interleaved_medians({gamma: partial(forward, gamma) for gamma in GAMMAS}, args.repeats)
    dense_time = medians[0.0]
    dense_flops = forward_flops(model.config).paper
    rows = []
    for gamma in GAMMAS:
        median = medians[gamma]
        rows.append(
            {
                "gamma": gamma,
                "ms_per_forward": 1000 * median,
                "images_per_s": args.batch / median,
                "speedup": dense_time / median,
                "flops_ratio": dense_flops / forward_flops(model.config, gamma).paper,
            }
        )
        r = rows[-1]
        print(f"γ={gamma:<5} {r['ms_per_forward']:8.1f} ms", end="  ")
        print(f"speedup {r['speedup']:.3f}  flops ratio {r['flops_ratio']:.3f}")
    half = next(r for r in rows if r["gamma"] == 0.5)
    target = half["speedup"] >= 0.9 * half["flops_ratio"]
    print(f"target speedup ≥ 0.9 × flops ratio at γ = 0.5: {'met' if target else 'MISSED'}")
    write_json(
        args.out,
        {
            **provenance(),
            "model": "DiT-B/2",
            "route": [2, 8],
            "input": [4, 32, 32],
            "batch": args.batch,
            "repeats": args.repeats,
            "rows": rows,
            "target_met": target,
        },
    )


if __name__ == "__main__":
    main()
