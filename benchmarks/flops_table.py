"""PAPER.md Table 2's GFLOPs per sampling step (SiT-XL/2, route 2→24, 40 Euler steps) beside ours.

    python benchmarks/flops_table.py

Prints a Markdown table and writes benchmarks/results/flops.json. The paper's figures are the
reference values from its Table 2 (and DiT's 118.6 GFLOPs for DiT-XL/2); ours come from the
analytic count in sparseguidance.flops: every branch whole, as the paper counts (`flops --no-share`),
and beside it what our sampler runs, a dense prefix once for branches of one model and condition
(`flops`' default; it changes only SG_FLOPS, whose two branches are both conditional).
"""

from __future__ import annotations

from pathlib import Path

from sparseguidance.cli.flops import report
from sparseguidance.guidance import GammaSchedule, make_guidance
from sparseguidance.models import model_config
from sparseguidance.provenance import provenance, write_json

RESULTS = Path(__file__).parent / "results" / "flops.json"
SIT = model_config("SiT-XL/2", routes=((2, 24),))
DIT = model_config("DiT-XL/2")
# (label, command-line equivalent, guidance, model, paper GFLOPs, convention, tolerance of the issue)
CASES = [
    ("no guidance", "--route 2-24 --guidance none", make_guidance("none"), SIT, 114.42, "paper", 0.002),
    ("CFG", "--route 2-24 --guidance cfg", make_guidance("cfg"), SIT, 228.84, "paper", 0.002),
    ("AutoGuidance", "--route 2-24 --guidance ag", make_guidance("ag"), SIT, 228.84, "paper", 0.002),
    ("ICG", "--route 2-24 --guidance icg", make_guidance("icg"), SIT, 228.84, "paper", 0.002),
    (
        "SG_FLOPS (0.5 / 0.9)",
        "--route 2-24 --guidance sg --gamma-strong 0.5 --gamma-weak 0.9",
        make_guidance("sg", 1.0, 0.5, 0.9),
        SIT,
        97.67,
        "paper",
        0.002,
    ),
    (
        "SG_FID (AG+SG, cosine)",
        "--route 2-24 --guidance ag+sg --gamma-strong 0.0:0.6 --gamma-weak 0.6:0.0 --gamma-schedule cosine",
        make_guidance("ag+sg", 1.0, GammaSchedule(0.0, 0.6, "cosine"), GammaSchedule(0.6, 0.0, "cosine")),
        SIT,
        173.16,
        "paper",
        0.005,
    ),
    (
        "DiT-XL/2 dense, full (2 × DiT's 118.6)",
        "--model DiT-XL/2 --guidance none",
        make_guidance("none"),
        DIT,
        237.2,
        "full",
        0.002,
    ),
]


def main() -> None:
    """Print the table and write the results file."""
    rows = []
    columns = ("setting", "paper GFLOPs", "ours (`--no-share`)", "difference", "ours, shared prefix", "arguments")
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    for label, arguments, guidance, config, paper, convention, tolerance in CASES:
        ours, shared = (report(guidance, config, config, 40, share)[f"gflops_{convention}"] for share in (False, True))
        diff = (ours - paper) / paper
        model = "" if "--model" in arguments else "--model SiT-XL/2 "
        print(f"| {label} | {paper:.2f} | {ours:.2f} | {100 * diff:+.2f} % | {shared:.2f} | `{model}{arguments}` |")
        rows.append(
            {
                "setting": label,
                "convention": convention,
                "paper": paper,
                "ours": ours,
                "relative_difference": diff,
                "within_tolerance": abs(diff) <= tolerance,
                "ours_shared_prefix": shared,
            }
        )
    write_json(RESULTS, {**provenance(), "steps": 40, "rows": rows})


if __name__ == "__main__":
    main()
