"""Diagnose a sparse model before a sweep: per-block updates and the branch gaps SG and CFG would scale."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparseguidance.cli.arguments import parse_route
from sparseguidance.cli.sample import load
from sparseguidance.diagnostics import (
    as_json,
    format_inspection,
    inspect_model,
    make_probe,
    plot_inspection,
    probe_data,
)
from sparseguidance.errors import ConfigError
from sparseguidance.models import DiT
from sparseguidance.pretrained import resolve_checkpoint
from sparseguidance.provenance import provenance, write_json
from sparseguidance.text import stored_text_config


def parse_floats(text: str) -> list[float]:
    """`0.25,0.5,0.75` -> [0.25, 0.5, 0.75]."""
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of numbers, e.g. 0.25,0.5,0.75, got {text!r}"
        ) from None


def parse_pairs(text: str) -> list[tuple[float, float]]:
    """`0:0.5,0.5:0.9` -> [(0.0, 0.5), (0.5, 0.9)]: (γ_strong, γ_weak) pairs."""
    try:
        pairs = [tuple(float(g) for g in part.split(":")) for part in text.split(",")] if text else []
    except ValueError:
        pairs = [()]
    if any(len(pair) != 2 for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected GS:GW pairs such as 0:0.5,0.5:0.9, got {text!r}")
    return pairs  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance inspect`."""
    parser.add_argument("checkpoint", help="any model `sample` reads: our .safetensors, a .pt, mnist-routing[@STEP]")
    parser.add_argument("--route", action="append", type=parse_route, metavar="START-END", help="routes for a .pt")
    parser.add_argument("--which", choices=("ema", "model"), default="ema", help="weights of a .pt (default ema)")
    parser.add_argument(
        "--reference", metavar="CHECKPOINT", help="a dense model of the same architecture: the per-block yardstick"
    )
    parser.add_argument("--weak-checkpoint", metavar="CHECKPOINT", help="AutoGuidance's auxiliary model (AG gap)")
    parser.add_argument(
        "--data",
        metavar="SOURCE[:PATH]",
        help="mnist5k[:SPLIT] (default for 1×32×32, 10-class models: the held-out digits), latents:DIR, folder:DIR; "
        "text models: mnist5k-captions[:SPLIT] (their default) or captions:DIR",
    )
    parser.add_argument(
        "--text-encoder", metavar="DIR", help="a text model's encoder folder (default: the one its checkpoint names)"
    )
    parser.add_argument("--num-images", type=int, default=64, help="samples in the probe batch (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and token subsets (default 0)")
    parser.add_argument(
        "--times", type=parse_floats, default=[0.25, 0.5, 0.75], metavar="T,…", help="t of the block updates"
    )
    parser.add_argument(
        "--gap-times",
        type=parse_floats,
        default=[0.1, 0.3, 0.5, 0.7, 0.9],
        metavar="T,…",
        help="t of the branch gaps (default 0.1,0.3,0.5,0.7,0.9)",
    )
    parser.add_argument(
        "--pairs",
        type=parse_pairs,
        metavar="GS:GW,…",
        help="(γ_strong, γ_weak) pairs for SG's gap (default 0:0.5,0.5:0.9,0:0.9; none for dense models)",
    )
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write the two panels as a PNG")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the measurements as JSON")


def open_model(spec: str, routes: list[tuple[int, int]] | None, which: str) -> DiT:
    """A model on the CPU from a path or a shipped name (mnist-routing@1000)."""
    return load(str(resolve_checkpoint(spec)), routes, which, "cpu")


def run(args: argparse.Namespace) -> int:
    """Measure, print the tables, and write the plot and JSON where asked."""
    for t in [*args.times, *args.gap_times]:
        if not 0.0 <= t < 1.0:
            raise ConfigError(f"times must lie in [0, 1) (at t = 1 the input is the clean image), got {t}")
    model = open_model(args.checkpoint, args.route, args.which)
    sparse = model.config.sparsity != "dense"
    pairs = args.pairs if args.pairs is not None else ([(0.0, 0.5), (0.5, 0.9), (0.0, 0.9)] if sparse else [])
    text_model = hasattr(model.config, "text_width")
    text = stored_text_config(resolve_checkpoint(args.checkpoint), args.text_encoder) if text_model else None
    x, y = probe_data(args.data, model, args.num_images, text)
    weak = open_model(args.weak_checkpoint, None, args.which) if args.weak_checkpoint else None
    reference = open_model(args.reference, None, args.which) if args.reference else None
    inspection = inspect_model(model, make_probe(x, y, args.seed), args.times, args.gap_times, pairs, weak, reference)
    print(format_inspection(inspection))
    if args.plot:
        plot_inspection(inspection, str(args.plot), title=str(args.checkpoint))
    if args.json:
        write_json(args.json, {**provenance(), "checkpoint": args.checkpoint, **as_json(inspection)})
        print(json.dumps({"routed_update_ratio": inspection.routed_update_ratio(), **inspection.gap_ratios()}))
    return 0
