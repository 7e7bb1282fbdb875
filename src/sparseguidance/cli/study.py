"""Run the whole guidance comparison (Tables 1–2, heat maps, Pareto plot, diversity, Fig. 5): tables, figures, log."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparseguidance.config import apply_overrides, from_dict, to_dict
from sparseguidance.devices import resolve_device
from sparseguidance.errors import ConfigError
from sparseguidance.files import check_output_folder
from sparseguidance.provenance import provenance
from sparseguidance.study.cells import CellCache, CellSampler
from sparseguidance.study.presets import PRESETS, StudyPreset, get_preset
from sparseguidance.study.report import write_report
from sparseguidance.study.runner import run_study

logger = logging.getLogger("sparseguidance.study")
DEFAULT_CACHE = Path("runs/study-cache")  # runs/ is git-ignored: the cache is not committed
DEFAULT_OUT = Path("runs/study")  # docs/results, the committed results, is written only when asked for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `sparseguidance study`."""
    parser.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="cpu",
        help="quick: a smoke run in seconds; cpu: under 2 hours on 2 cores; gpu: a larger run (default cpu)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset setting, e.g. final_images=500 or scales=[1.5,2,3] (repeatable)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT}; docs/results is ours)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"finished cells, one file each, and the fine-tuning runs in finetune/ (default {DEFAULT_CACHE})",
    )
    parser.add_argument("--device", help="torch device of models and metrics (default: the preset's)")


def resolve_preset(args: argparse.Namespace) -> StudyPreset:
    """The named preset with --set and --device applied (validated again)."""
    data = apply_overrides(to_dict(get_preset(args.preset)), args.set)
    data |= {"device": args.device} if args.device is not None else {}
    preset = from_dict(StudyPreset, data, where=f"study preset {args.preset}")
    try:
        resolve_device(preset.device)  # a device that is unknown or absent here is one line, before any work
    except ConfigError as e:
        raise ConfigError(f"study preset {args.preset}: {e}") from None
    return preset


@contextmanager
def study_log(path: Path) -> Iterator[None]:
    """Log the study's lines to stderr and to `path` (started afresh: it describes the run that wrote the results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(path, mode="w", encoding="utf-8"), logging.StreamHandler(sys.stderr)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def run(args: argparse.Namespace) -> int:
    """Run every cell (or read it from the cache), then write the tables, figures, summary and log."""
    check_output_folder(args.out)
    check_output_folder(args.cache, "--cache")
    preset = resolve_preset(args)
    start = time.perf_counter()
    where = provenance()  # before the log file is opened: a study writing into the repository is not "+dirty" by it
    with study_log(args.out / "study.log"):
        logger.info(
            f"{where['command']}: {where['machine']}, torch {where['torch']}, {where['threads']} thread(s), "
            f"commit {where['commit']}"
        )
        logger.info("preset %s: %s; cache %s", args.preset, to_dict(preset), args.cache)
        sampler = CellSampler(preset, args.cache / "finetune")
        logger.info("models: %s", sampler.models_info())
        results = run_study(preset, CellCache(args.cache, sampler))
        meta = {
            **where,
            "minutes": (time.perf_counter() - start) / 60,
            "preset": args.preset,
            "settings": to_dict(preset),
            "models": sampler.models_info(),
            "evaluation": sampler.evaluation(),
            "cells": {
                "computed": results.computed,
                "cached": results.cached,
                "compute_minutes": results.cell_seconds / 60,
                "cache": str(args.cache),
            },
        }
        summary = write_report(results, args.out, meta)
        for row in summary["table2"]:
            numbers = row.get("note") or (
                f"FID {row['fid']:7.2f} ± {row['fid_std']:5.2f}, {row['gflops_per_step']:.3f} GFLOPs/step"
            )
            logger.info(f"table 2: {row['label']:<33} {numbers}")
        logger.info("wrote %s in %.1f min", args.out, (time.perf_counter() - start) / 60)
    return 0
