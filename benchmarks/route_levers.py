"""Does a training lever make the route carry work? `inspect` figures and a quick FID per trained model.

For each model: the routed blocks' relative update ÷ a dense reference's same blocks, SG's branch gap ÷
CFG's, and FID (MNIST classifier features, 1,000 held-out digits) of no guidance, CFG and SG on the study's
*tuning* seed set (seed 0) — never on the seed sets that reports use. Writes one JSON with provenance.

    python benchmarks/route_levers.py runs/a/model.safetensors runs/b/model.safetensors \
        --reference runs/dense/model.safetensors --out benchmarks/results/route-levers.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from torch import nn

from sparseguidance.checkpoints import load_model
from sparseguidance.cli.inspect import parse_floats, parse_pairs
from sparseguidance.diagnostics import inspect_model, make_probe, pair_name, probe_data
from sparseguidance.guidance import make_guidance
from sparseguidance.metrics import EvalConfig, Evaluator
from sparseguidance.pretrained import resolve_checkpoint
from sparseguidance.provenance import provenance, write_json
from sparseguidance.study.cells import sample_and_score

TUNING_SEED = 0  # the study's tuning seed set
PAIRS = ((0.0, 0.5), (0.5, 0.9), (0.0, 0.9))


def settings(
    pairs: list[tuple[float, float]], scales: list[float], cfg_scales: list[float]
) -> list[tuple[str, str, float, tuple[float, float] | None]]:
    """(label, method, ω, γ pair) of the quick FID rows: none, CFG at each of its ω, SG at each pair and ω."""
    rows = [("none", "none", 1.0, None)] + [(f"cfg {w:g}", "cfg", w, None) for w in cfg_scales]
    for pair in pairs:
        rows += [(f"sg {pair_name(*pair)} ω {w:g}", "sg", w, pair) for w in scales]
    return rows


def measure(path: str, args: argparse.Namespace, evaluator: Evaluator, ref: nn.Module | None) -> dict[str, object]:
    """Inspect figures and quick FIDs (none with --images 0) of one model."""
    model = load_model(resolve_checkpoint(path))
    probe = make_probe(*probe_data("mnist5k:heldout", model, 64), seed=0)
    inspection = inspect_model(model, probe, [0.25, 0.5, 0.75], [0.1, 0.3, 0.5, 0.7, 0.9], PAIRS, None, ref)
    fids = {}
    for label, method, scale, pair in settings(args.pairs, args.scales, args.cfg_scales) if args.images else []:
        guidance = make_guidance(method, scale, *(pair or (None, None)))
        start = time.perf_counter()
        scored = sample_and_score(guidance, {"main": model}, evaluator, TUNING_SEED, args.images, steps=args.steps)
        metrics = scored.metrics
        fids[label] = {**metrics, "seconds": time.perf_counter() - start, **scored.samples.cost.as_dict()}
        print(f"{path}: {label}: FID {metrics['fid']:.2f}, acc {metrics['accuracy']:.3f}", flush=True)
    return {
        "model": path,
        "config": {"routes": model.config.routes, "train_gamma": model.config.train_gamma},
        "updates_dense": inspection.updates_dense,
        "reference_updates": inspection.reference_updates,
        "routed_update_ratio": inspection.routed_update_ratio(),
        "sg_gap_over_cfg_gap": inspection.gap_ratios(),
        "quick_fid": fids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--reference", help="dense model of the same architecture")
    parser.add_argument("--images", type=int, default=200, help="images per FID cell; 0: inspect figures only")
    parser.add_argument("--pairs", type=parse_pairs, default=[(0.5, 0.9), (0.0, 0.9)], help="SG pairs GS:GW,…")
    parser.add_argument("--scales", type=parse_floats, default=[2.0, 4.0], help="SG scales ω,…")
    parser.add_argument("--cfg-scales", type=parse_floats, default=[1.5, 3.0], help="CFG scales ω,…")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/route-levers.json"))
    args = parser.parse_args()
    evaluator = Evaluator("mnist5k:heldout", EvalConfig(features="mnist", metrics=("fid", "acc")))
    ref = load_model(resolve_checkpoint(args.reference)) if args.reference else None  # loaded once for all
    rows = [measure(path, args, evaluator, ref) for path in args.models]
    write_json(
        args.out, {**provenance(), "images": args.images, "steps": args.steps, "seed": TUNING_SEED, "rows": rows}
    )


if __name__ == "__main__":
    main()
