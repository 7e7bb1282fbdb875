"""Compare no guidance, CFG and SG on the shipped MNIST model: one image, a table of cost and metrics (~2 min, CPU)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from sparseguidance.cli.arguments import add_device_arguments
from sparseguidance.cli.sample import parse_classes
from sparseguidance.demo import DemoSettings, format_table, load_demo_model, run_demo, save_comparison, table_rows
from sparseguidance.devices import compile_model, use_device
from sparseguidance.files import check_output_file
from sparseguidance.provenance import provenance, write_json

DEFAULTS = DemoSettings()


def class_list(text: str) -> tuple[int, ...]:
    """`all` (0..9) or a comma list such as `3,5,8`: one column each."""
    classes = parse_classes(text)
    if classes == "random":
        raise argparse.ArgumentTypeError("the demo shows fixed classes: all or a comma list such as 3,5,8")
    return DEFAULTS.classes if classes == "all" else tuple(classes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance demo`; the defaults are DemoSettings'."""
    parser.add_argument("--model", default="mnist-routing", metavar="NAME|PATH", help="shipped model or .safetensors")
    parser.add_argument("--classes", type=class_list, default=DEFAULTS.classes, metavar="LIST|all", help="default all")
    parser.add_argument("--per-class", type=int, default=DEFAULTS.per_class, help="image rows per method (default 1)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="image k depends only on (seed, k)")
    parser.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"Euler steps (default {DEFAULTS.steps})")
    parser.add_argument("--cfg-scale", type=float, default=DEFAULTS.cfg_scale, metavar="Ω", help="ω of CFG")
    parser.add_argument("--sg-scale", type=float, default=DEFAULTS.sg_scale, metavar="Ω", help="ω of SG")
    parser.add_argument("--gamma-strong", type=float, default=DEFAULTS.gamma_strong, metavar="Γ", help="SG's γ_strong")
    parser.add_argument("--gamma-weak", type=float, default=DEFAULTS.gamma_weak, metavar="Γ", help="SG's γ_weak")
    parser.add_argument(
        "--num-images",
        type=int,
        default=DEFAULTS.num_images,
        help=f"images per method, the same on any machine (default {DEFAULTS.num_images}: ~2 min on 2 cores)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per batch")
    add_device_arguments(parser, "the model")
    parser.add_argument("--out", type=Path, default=Path("demo.png"), help="comparison image (default demo.png)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the table as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Sample, write the image (and JSON), print the table."""
    started = time.perf_counter()
    check_output_file(args.out, (".png",))
    if args.json is not None:
        check_output_file(args.json, (".json",), "--json")
    settings = DemoSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoSettings)})
    model = load_demo_model(args.model).to(use_device(args.device, args.tf32))
    if args.compile is not None:
        compile_model(model, args.compile)
    result = run_demo(model, settings, progress=not args.no_progress)
    save_comparison(args.out, result)
    seconds = time.perf_counter() - started
    if args.json is not None:
        summary = {"model": args.model, "settings": dataclasses.asdict(settings), "total_s": seconds}
        write_json(args.json, {**summary, "rows": table_rows(result), "real_digits": result.floor, **provenance()})
    print(format_table(result))
    print(f"wrote {args.out} in {seconds:.0f} s (torch threads: {torch.get_num_threads()})")
    return 0
