"""Images/s of CFG vs SG on a small TR-DiT (random weights, CPU) beside the FLOPs ratio, and TR-DiT-2.5B's FLOPs.

    python benchmarks/t2i.py [--model TR-DiT-S] [--input-size 32] [--patch-size 2] [--batch 4] [--steps 20]
                             [--repeats 3] [--text-tokens 16] [--threads N] [--clock wall|process]

The paper's text-to-image settings (PAPER.md §5): CFG at ω 1.8; SG at ω 1.8, γ_strong 0.1, γ_weak 0.8 (its
HPSv3 setting); CFG+SG at ω 2.5, γ 0.2 / 0.7 (its GenEval setting); no guidance for scale. All through
`sampling.generate` with the shared prefix, Euler, repeats interleaved and the median kept. Prompts are fixed
random text states of `--text-tokens` tokens: the encoder runs once per prompt, never per step, so it is not
part of a step's cost. Then the FLOPs per step of TR-DiT-2.5B at 512×512 (1,024 image tokens, 128 prompt
tokens) for CFG and SG, whose ratio is set beside the paper's 0.32 → 0.49 images/s on one H200.
Writes benchmarks/results/t2i.json.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import torch
from common import CLOCKS, add_timing_arguments, against_cfg, interleaved_medians, random_weights, set_threads, timed

from sparseguidance.conditions import TextCondition
from sparseguidance.flops import TEXT_TOKENS, euler_step_flops
from sparseguidance.guidance import make_guidance
from sparseguidance.models import TRDIT_NAMES, TRDiTConfig, create_model, model_config
from sparseguidance.provenance import provenance, write_json
from sparseguidance.sampling import generate

RESULTS = Path(__file__).parent / "results" / "t2i.json"
METHODS = {  # PAPER.md §5's settings
    "none": make_guidance("none"),
    "cfg": make_guidance("cfg", 1.8),
    "sg": make_guidance("sg", 1.8, 0.1, 0.8),
    "cfg+sg": make_guidance("cfg+sg", 2.5, 0.2, 0.7),
}
PAPER_IMAGES_PER_S = {"cfg": 0.32, "sg": 0.49}  # TR-DiT-2.5B, 512×512, 50 steps, bf16, one H200


def prompts(batch: int, tokens: int, width: int) -> TextCondition:
    """Fixed random prompt states (B, L, E) with every token real, and a 2-token empty prompt."""
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(batch, tokens, width, generator=generator)
    empty = torch.randn(1, 2, width, generator=generator)
    return TextCondition(states, torch.ones(batch, tokens, dtype=torch.bool), empty, torch.ones(1, 2, dtype=torch.bool))


def sample(model: torch.nn.Module, y: TextCondition, steps: int, name: str) -> None:
    """`steps` Euler steps of one method over the batch."""
    generate(METHODS[name], {"main": model}, y, steps=steps, batch_size=len(y))


def step_gflops(config: TRDiTConfig, steps: int, text_tokens: int) -> dict[str, dict[str, float]]:
    """GFLOPs per sampling step of each method (both conventions), the mean over a run of `steps` steps."""
    flops = {name: euler_step_flops(g, config, None, steps, True, text_tokens) for name, g in METHODS.items()}
    return {name: {"paper": f.paper / 1e9, "full": f.full / 1e9} for name, f in flops.items()}


def main() -> None:
    """Measure and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=TRDIT_NAMES, default="TR-DiT-S")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=16)
    add_timing_arguments(parser, batch=4, steps=20, repeats=3, out=RESULTS)
    args = parser.parse_args()
    set_threads(args.threads)

    config = model_config(args.model, input_size=args.input_size, patch_size=args.patch_size)
    model = random_weights(create_model(config)).eval()
    y = prompts(args.batch, args.text_tokens, config.text_width)
    clock = CLOCKS[args.clock]
    runs = {name: partial(timed, clock, partial(sample, model, y, args.steps, name)) for name in METHODS}
    gflops = step_gflops(config, args.steps, args.text_tokens)
    load_before = os.getloadavg()
    medians = interleaved_medians(runs, args.repeats)
    paper_gflops = {name: per_step["paper"] * args.steps for name, per_step in gflops.items()}
    rows = [{**against_cfg(name, medians, paper_gflops, args.batch), "gflops_per_step": gflops[name]} for name in runs]
    for r in rows:
        print(
            f"{r['method']:7} {r['images_per_s']:7.3f} img/s  speedup vs CFG {r['speedup_vs_cfg']:.3f}  "
            f"FLOPs ratio {r['flops_ratio_vs_cfg']:.3f}"
        )

    big = model_config("TR-DiT-2.5B")  # 512×512: 64×64 latents, patch 2
    big_gflops = step_gflops(big, 50, TEXT_TOKENS)
    paper_ratio = PAPER_IMAGES_PER_S["sg"] / PAPER_IMAGES_PER_S["cfg"]
    flops_ratio = big_gflops["cfg"]["paper"] / big_gflops["sg"]["paper"]
    print(
        f"TR-DiT-2.5B, 512×512, {TEXT_TOKENS} prompt tokens: GFLOPs/step CFG {big_gflops['cfg']['paper']:.0f}, "
        f"SG {big_gflops['sg']['paper']:.0f} (ratio {flops_ratio:.2f}); the paper's images/s "
        f"{PAPER_IMAGES_PER_S['cfg']} → {PAPER_IMAGES_PER_S['sg']} (ratio {paper_ratio:.2f})"
    )
    write_json(
        args.out,
        {
            **provenance(),
            "model": args.model,
            "input": [config.in_channels, config.input_size, config.input_size],
            "patch_size": config.patch_size,
            "route": [list(r) for r in config.routes],
            "text_tokens": args.text_tokens,
            "sampler": "euler",
            "steps": args.steps,
            "batch": args.batch,
            "repeats": args.repeats,
            "clock": args.clock,
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "rows": rows,
            "tr_dit_2_5b_512px": {
                "text_tokens": TEXT_TOKENS,
                "gflops_per_step": {name: big_gflops[name] for name in ("cfg", "sg", "cfg+sg")},
                "cfg_over_sg_flops": flops_ratio,
                "paper_images_per_s": PAPER_IMAGES_PER_S,
                "paper_sg_over_cfg_images_per_s": paper_ratio,
            },
        },
    )


if __name__ == "__main__":
    main()
