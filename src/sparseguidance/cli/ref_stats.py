"""Write reference statistics (mu, sigma, mu_s, sigma_s, features) of a dataset for `eval --ref`."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparseguidance.cli.eval import add_extractor_arguments, extractor_config
from sparseguidance.errors import DataError
from sparseguidance.files import check_output_file
from sparseguidance.metrics.evaluate import Evaluator
from sparseguidance.metrics.reference import is_statistics_file, save_reference
from sparseguidance.metrics.sources import MNIST_PREFIX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance ref-stats`."""
    parser.add_argument("images", help=f"images: .npz (arr_0 uint8 NHWC), image folder, or {MNIST_PREFIX}SPLIT")
    parser.add_argument("--out", type=Path, required=True, help="statistics file to write (.npz)")
    add_extractor_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Extract the features of the images and write their statistics, tagged with the extractor."""
    check_output_file(args.out, (".npz",))
    if is_statistics_file(args.images):
        raise DataError(f"{args.images} already holds statistics (mu, sigma); give images")
    config = extractor_config(args, None)
    stats = Evaluator(args.images, config, progress=not args.no_progress).reference
    save_reference(args.out, stats)
    print(f"wrote {args.out}: {len(stats.features)} images, {stats.pool.mu.shape[0]}-d features ({stats.extractor})")
    return 0
