"""Train the MNIST-5k domain classifier whose features and logits `eval --features mnist` uses."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sparseguidance.checkpoints import config_path
from sparseguidance.files import check_output_file
from sparseguidance.metrics.mnist_features import (
    TrainConfig,
    heldout_accuracy,
    load_classifier,
    save_classifier,
    train_classifier,
)
from sparseguidance.provenance import provenance

DEFAULT_OUT = Path("runs/mnist-features/mnist-features.safetensors")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance train-features`."""
    defaults = TrainConfig()
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"weights file (.safetensors; default {DEFAULT_OUT}; the shipped one is not overwritten)",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"default {defaults.epochs}")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help=f"default {defaults.batch_size}")
    parser.add_argument("--lr", type=float, default=defaults.lr, help=f"AdamW peak rate (default {defaults.lr})")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"default {defaults.seed}")


def run(args: argparse.Namespace) -> int:
    """Train on the `train` split, measure the `heldout` accuracy, write weights + JSON."""
    check_output_file(args.out, (".safetensors",))
    check_output_file(config_path(args.out), (".json",), "--out (its JSON beside it)")
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    start = time.perf_counter()
    model = train_classifier(train)
    seconds = time.perf_counter() - start
    accuracy = heldout_accuracy(model)
    save_classifier(
        model,
        args.out,
        {"train": vars(train), "heldout_accuracy": accuracy, "train_seconds": round(seconds, 1), **provenance()},
    )
    print(f"held-out accuracy {accuracy:.4f} (1,000 digits), trained in {seconds:.0f} s; wrote {args.out}")
    print(f"extractor tag: {load_classifier(args.out).tag}; use it with: eval --features mnist --weights {args.out}")
    return 0
