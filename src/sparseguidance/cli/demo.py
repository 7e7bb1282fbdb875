"""Compare no guidance, CFG and SG on the shipped MNIST model: one image, a table of cost and metrics (~2 min, CPU)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import torch

from sparseguidance.cli.arguments import add_device_arguments
from sparseguidance.cli.sample import parse_classes
from sparseguidance.demo import DemoSettings, format_table, load_demo_model, run_demo, save_comparison, table_rows
from sparseguidance.devices import compile_model, use_device
from sparseguidance.errors import ConfigError
from sparseguidance.provenance import provenance, write_json

DEFAULTS = DemoSettings()


def class_list(text: str) -> tuple[int, ...]:
    """`all` (0..9) or a comma list such as `3,5,8`: one column each."""
    classes = parse_classes(text)
    if classes == "random":
        raise argparse.ArgumentTypeError("the demo shows fixed classes: all or a comma list such as 3,5,8")
    return DEFAULTS.classes if classes == "all" else tuple(classes)


def default_threads() -> int:
    """Torch's own count when OMP_NUM_THREADS is set, else half the logical cores (1 to 4).

    Tensors this small gain little from many threads, and on a busy machine two threads on two cores ran
    2–5× slower than one.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, min(4, (os.cpu_count() or 2) // 2))


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
    count = parser.add_mutually_exclusive_group()
    count.add_argument(
        "--seconds",
        type=float,
        default=DEFAULTS.seconds,
        help=f"time budget after start-up; sets the images per method (default {DEFAULTS.seconds:g})",
    )
    count.add_argument("--num-images", type=int, help="images per method instead of a time budget")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="images per batch")
    parser.add_argument("--threads", type=int, help="torch threads (default: see OMP_NUM_THREADS, else half the cores)")
    add_device_arguments(parser, "the model")
    parser.add_argument("--out", type=Path, default=Path("demo.png"), help="comparison image (default demo.png)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the table as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Sample, write the image (and JSON), print the table."""
    started = time.perf_counter()
    settings = DemoSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DemoSettings)})
    threads = args.threads if args.threads is not None else default_threads()
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = load_demo_model(args.model).to(use_device(args.device, args.tf32))
        if args.compile is not None:
            compile_model(model, args.compile)
        result = run_demo(model, settings, started=started, progress=not args.no_progress)
        save_comparison(args.out, result)
        seconds = time.perf_counter() - started
        if args.json is not None:
            summary = {"model": args.model, "settings": dataclasses.asdict(settings), "total_s": seconds}
            write_json(args.json, {**summary, "rows": table_rows(result), "real_digits": result.floor, **provenance()})
    finally:
        torch.set_num_threads(previous)
    print(format_table(result))
    print(f"wrote {args.out} in {seconds:.0f} s (torch threads: {threads})")
    return 0
