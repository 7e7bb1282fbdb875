"""Train a token-sparse model (flow matching, routing or masking) from a YAML config; rerun to resume."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparseguidance.files import check_output_folder
from sparseguidance.training import load_train_config, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--config, --out, --steps, --set, --allow-changes, --fsdp, --activation-checkpointing, --no-progress."""
    parser.add_argument(
        "--config", required=True, type=Path, metavar="YAML", help="training config, e.g. configs/mnist-routing.yaml"
    )
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="run directory (default: runs/CONFIG-NAME); rerunning resumes"
    )
    parser.add_argument("--steps", type=int, metavar="N", help="train up to step N (same as --set train.steps=N)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=2e-4 (repeatable)",
    )
    parser.add_argument(
        "--allow-changes",
        action="store_true",
        help="resume even where settings differ from the run's (the change is recorded in its log)",
    )
    parser.add_argument(
        "--fsdp",
        action="store_true",
        help="shard weights, gradients and optimizer state over the processes with FSDP2 (under torchrun; "
        "same as --set train.fsdp=true)",
    )
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each block's activations in the backward pass: less memory, about a third more compute "
        "(same as --set train.activation_checkpointing=true)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Load the config with its overrides, then train (or resume) in the run directory."""
    flags = [f"train.steps={args.steps}"] if args.steps is not None else []
    flags += ["train.fsdp=true"] * args.fsdp + ["train.activation_checkpointing=true"] * args.activation_checkpointing
    overrides = [*args.overrides, *flags]
    config = load_train_config(args.config, overrides)
    out = check_output_folder(args.out or Path("runs") / args.config.stem)
    trainer = train(config, out, progress=not args.no_progress, allow_changes=args.allow_changes)
    if trainer.dist.is_main:
        print(f"step {trainer.step}: EMA weights in {out / 'model.safetensors'}")
    return 0
