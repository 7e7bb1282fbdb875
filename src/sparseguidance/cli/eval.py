"""Score samples (npz or image folder) against a reference: FID, sFID, IS, precision/recall, accuracy."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sparseguidance.cli.arguments import add_device_arguments
from sparseguidance.devices import use_device
from sparseguidance.files import check_output_file
from sparseguidance.metrics.evaluate import (
    EXTRACTORS,
    METRICS,
    RESULT_KEYS,
    EvalConfig,
    Evaluator,
    convention_text,
    size_warnings,
)
from sparseguidance.metrics.scores import IS_CONVENTIONS, PR_DISTANCES
from sparseguidance.metrics.sources import MNIST_PREFIX, read_images
from sparseguidance.provenance import provenance, write_json

NAMES = {"fid": "FID", "sfid": "sFID", "is": "IS", "precision": "Precision", "recall": "Recall", "accuracy": "Accuracy"}


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """--features / --weights / --batch-size / device arguments / --no-progress, shared with `ref-stats`."""
    parser.add_argument("--features", choices=list(EXTRACTORS), default="inception", help="feature extractor")
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="extractor weights (inception: pytorch-fid's .pth or a .safetensors state dict; default: found locally; "
        "mnist: default the shipped classifier)",
    )
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward (default 50)")
    add_device_arguments(parser, "the feature extractor (not fp32: features, hence FID, shift)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def extractor_config(args: argparse.Namespace, metrics: tuple[str, ...] | None) -> EvalConfig:
    """The EvalConfig of add_extractor_arguments' arguments, on the device they name (checked to exist)."""
    device = str(use_device(args.device, args.tf32))
    return EvalConfig(
        features=args.features,
        metrics=metrics,
        weights=args.weights,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        compile=args.compile,
    )


def parse_metrics(text: str) -> tuple[str, ...]:
    """`fid,pr` -> ("fid", "pr"), refusing unknown names."""
    metrics = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(METRICS)}, got {text!r}")
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance eval`."""
    parser.add_argument(
        "samples", help=f"samples: .npz (arr_0 uint8 NHWC, arr_1 labels), image folder, or {MNIST_PREFIX}SPLIT"
    )
    parser.add_argument(
        "--ref",
        required=True,
        help="reference: statistics .npz (ref-stats or an ADM reference batch), or images like the samples",
    )
    parser.add_argument(
        "--metrics",
        type=parse_metrics,
        metavar="LIST",
        help=f"comma-separated subset of {','.join(METRICS)} (default: every one the features and data allow)",
    )
    parser.add_argument(
        "--is-convention",
        choices=list(IS_CONVENTIONS),
        default="chunks-5000",
        help="IS parts: chunks-5000 as ADM's evaluator (default), or splits-10 as the original IS paper",
    )
    parser.add_argument(
        "--pr-distances",
        choices=list(PR_DISTANCES),
        help="precision/recall distances: adm-float16 as ADM's evaluator (default with --features inception), "
        "or float32 (default otherwise)",
    )
    parser.add_argument("--out", type=Path, help="JSON results file (default: SAMPLES.metrics.json beside the samples)")
    add_extractor_arguments(parser)


def default_out(samples: str) -> Path:
    """`x.npz` -> `x.metrics.json`, `folder` -> `folder.metrics.json`, `mnist5k:heldout` -> `mnist5k-heldout.…`."""
    path = Path(samples.replace(":", "-") if samples.startswith(MNIST_PREFIX) else samples)
    return path.with_name(f"{path.stem if path.suffix == '.npz' else path.name}.metrics.json")


def run(args: argparse.Namespace) -> int:
    """Compute the metrics, print a table with each one's convention, warn of too few samples, write the JSON file."""
    out = check_output_file(args.out or default_out(args.samples), (".json",))
    config = dataclasses.replace(
        extractor_config(args, args.metrics), is_convention=args.is_convention, pr_distances=args.pr_distances
    )
    images = read_images(args.samples)  # a broken samples file is reported before any feature extraction
    evaluator = Evaluator(args.ref, config, progress=not args.no_progress)
    feats = evaluator.features(images, "samples")
    results = evaluator.score(feats, images.labels)
    conventions = {m: c for m, c in config.conventions().items() if RESULT_KEYS[m][0] in results}
    warnings = size_warnings(feats, results, config.is_convention)
    write_json(
        out,
        {
            "samples": args.samples,
            "sample_count": len(feats),
            "reference": args.ref,
            "extractor": evaluator.tag,
            "metrics": results,
            "conventions": conventions,
            "warnings": warnings,
            **provenance(),
        },
    )
    print(f"{'metric':<12}{'value':>12}   ({evaluator.tag}, {len(feats):,} samples, reference {args.ref})")
    for metric, convention in conventions.items():
        for key in RESULT_KEYS[metric]:
            print(f"{NAMES[key]:<12}{results[key]:>12.4f}   {convention_text(metric, convention, len(feats))}")
    if args.metrics is None:  # say why a metric was left out of the default set
        for metric, reason in evaluator.unsupported(has_labels="accuracy" in results).items():
            print(f"not computed: {metric}: {reason}")
    print(f"wrote {out}")
    return 0
