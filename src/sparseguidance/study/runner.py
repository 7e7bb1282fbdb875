"""The study's order of work: tune each method's ω on the tuning seed set, report it on the other seed sets,
fill the heat maps, and measure how far guided samples move from the unguided ones of the same noise.

Every cell goes through a CellCache, so a second run reads finished cells instead of sampling them again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseguidance.errors import DataError
from sparseguidance.guidance import Guidance
from sparseguidance.study.cells import Cell, CellCache, CellResult
from sparseguidance.study.presets import SPARSITIES, TUNING_SEED, Method, StudyPreset, methods

logger = logging.getLogger("sparseguidance.study")


@dataclass(frozen=True, eq=False)
class Point:
    """A finished cell and the method and ω it ran."""

    method: Method
    scale: float
    cell: Cell
    result: CellResult

    @property
    def fid(self) -> float:
        """The cell's FID."""
        return self.result.metrics["fid"]

    @property
    def gflops_per_image(self) -> float:
        """Sampling cost per image, paper convention (linear layers, one per multiply-add)."""
        return self.result.cost["gflops_per_image_paper"]


@dataclass(frozen=True, eq=False)
class Row:
    """A reported row: a method at its tuned ω, one point per final seed set (the same seeds for every row)."""

    method: Method
    scale: float
    points: tuple[Point, ...]

    def values(self, metric: str) -> np.ndarray:
        """The metric on each seed set."""
        return np.array([p.result.metrics[metric] for p in self.points])

    def mean(self, metric: str) -> float:
        """Mean over the seed sets."""
        return float(self.values(metric).mean())

    def std(self, metric: str) -> float:
        """Seed-to-seed standard deviation (ddof 1)."""
        return float(self.values(metric).std(ddof=1))


@dataclass(frozen=True, eq=False)
class Distance:
    """Fig. 7's check: how far a guided row's images lie from the unguided ones of the same noise, per seed set."""

    method: Method
    scale: float
    pixel: tuple[float, ...]  # mean per-image RMS difference of pixels scaled to [0, 1]
    feature: tuple[float, ...]  # mean per-image L2 distance of the classifier features


@dataclass(frozen=True, eq=False)
class StudyResults:
    """Everything the report draws from: tuning sweeps, chosen ω, reported rows, heat maps, distances."""

    preset: StudyPreset
    tuning: tuple[Point, ...]
    selected: dict[Method, float]
    rows: tuple[Row, ...]
    heat: tuple[Point, ...]
    diversity: tuple[Distance, ...]
    computed: int  # cells sampled by this run
    cached: int  # cells read from the cache
    cell_seconds: float  # time of every distinct cell, cached ones included: the study's cost from scratch


def select_scale(fids: Mapping[float, float]) -> float:
    """The ω with the lowest FID (the smaller ω on a tie); NaN FIDs never win."""
    finite = {scale: fid for scale, fid in fids.items() if math.isfinite(fid)}
    if not finite:
        raise DataError(f"no finite FID to choose a scale from: {dict(fids)}")
    return min(finite, key=lambda scale: (finite[scale], scale))


def at_edge(method: Method, scale: float, preset: StudyPreset) -> bool:
    """Whether the chosen ω is the smallest or largest of a sweep of several (the optimum may lie outside)."""
    sweep = method.sweep(preset)
    return len(sweep) > 1 and scale in (min(sweep), max(sweep))


def forwards_per_image(guidance: Guidance, steps: int) -> int:
    """Network forwards per image of an Euler run (the weak branch is skipped at ω = 1 and outside the interval)."""
    if guidance.scale == 1.0:
        return steps
    return sum(len(guidance.branches(i / steps)) for i in range(steps))


class Runner:
    """Runs cells through the cache, logging each with its place in the plan and the time left, counting cached ones."""

    def __init__(self, cache: CellCache, steps: int, total: int, forwards: int) -> None:
        self.cache, self.steps, self.total, self.forwards_left = cache, steps, total, forwards
        self.done = self.computed = 0
        self.forwards_per_second: list[float] = []  # of the cells computed by this run
        self.seconds: dict[Path, float] = {}  # per distinct cell file: its sampling and scoring time

    def __call__(self, method: Method, scale: float, seed: int, count: int) -> Point:
        """The point of `method` at ω = `scale` on `count` images of seed set `seed`."""
        cell = Cell(method.sparsity, method.at(scale), seed, count)
        result, cached = self.cache.get(cell)
        forwards = count * forwards_per_image(cell.guidance, self.steps)
        self.seconds[self.cache.path(cell)] = result.seconds
        self.done += 1
        self.computed += not cached
        self.forwards_left -= forwards
        if cached:
            where = "cached"
        else:
            self.forwards_per_second.append(forwards / max(result.seconds, 1e-9))
            left = max(self.forwards_left, 0) / float(np.median(self.forwards_per_second)) / 60
            where = f"{result.seconds:.1f} s, {count / max(result.seconds, 1e-9):.1f} img/s; about {left:.0f} min left"
        what = f"{method.sparsity} {method.guidance} {method.setting(scale) or '-'}, seed {seed}, {count} images"
        logger.info("[%d/%d] %s: FID %.2f (%s)", self.done, self.total, what, result.metrics["fid"], where)
        return Point(method, scale, cell, result)


def heat_methods(preset: StudyPreset) -> list[Method]:
    """SG at every (γ_strong, γ_weak) of the heat-map grid, on both models."""
    return [Method(s, "sg", strong, weak) for s in SPARSITIES for strong, weak in preset.heat_pairs]


def log_plan(preset: StudyPreset, rows: list[Method], heat: list[Method]) -> tuple[int, int]:
    """Log the cells, images and network forwards each part will take; return the cells and image-forwards."""
    parts = {
        "tuning sweeps": [(m.at(s), preset.tune_images) for m in rows for s in m.sweep(preset)],
        "reported rows": [(m.at(m.sweep(preset)[0]), preset.final_images) for m in rows for _ in preset.final_seeds],
        "heat maps": [(m.at(s), preset.tune_images) for m in heat for s in preset.heat_scales],
    }
    for part, cells in parts.items():
        images = sum(count for _, count in cells)
        forwards = sum(count * forwards_per_image(g, preset.steps) for g, count in cells)
        logger.info("plan: %s: %d cells, %d images, %d image-forwards", part, len(cells), images, forwards)
    total = sum(map(len, parts.values()))
    forwards = sum(count * forwards_per_image(g, preset.steps) for cells in parts.values() for g, count in cells)
    logger.info(
        "plan: %d cells, %d image-forwards (%s %d steps; forwards counted for Euler; cells met twice run once)",
        *(total, forwards, preset.sampler, preset.steps),
    )
    return total, forwards


def distances(rows: tuple[Row, ...]) -> tuple[Distance, ...]:
    """Each guided row's distance to the unguided row of its model, image by image (same seed and index: same
    noise), per seed set."""
    unguided = {row.method.sparsity: row for row in rows if row.method.guidance == "none"}
    found = []
    for row in rows:
        base = unguided.get(row.method.sparsity)
        if base is None or row is base:
            continue
        pixel, feature = [], []
        for guided, unguided_point in zip(row.points, base.points, strict=True):
            diff = (guided.result.images.astype(np.float64) - unguided_point.result.images) / 255.0
            pixel.append(float(np.sqrt((diff**2).reshape(len(diff), -1).mean(axis=1)).mean()))
            gap = guided.result.features.astype(np.float64) - unguided_point.result.features
            feature.append(float(np.linalg.norm(gap, axis=1).mean()))
        found.append(Distance(row.method, row.scale, tuple(pixel), tuple(feature)))
    return tuple(found)


def run_study(preset: StudyPreset, cache: CellCache) -> StudyResults:
    """Tune, report, fill the heat maps and measure distances; every cell through `cache`."""
    rows_methods, heat_grid = methods(preset), heat_methods(preset)
    run = Runner(cache, preset.steps, *log_plan(preset, rows_methods, heat_grid))
    start = time.perf_counter()
    tuning = tuple(run(m, s, TUNING_SEED, preset.tune_images) for m in rows_methods for s in m.sweep(preset))
    selected = {m: select_scale({p.scale: p.fid for p in tuning if p.method == m}) for m in rows_methods}
    for method, scale in selected.items():
        note = " (at the edge of the sweep: widen it)" if at_edge(method, scale, preset) else ""
        logger.info("tuned: %s %s: ω %g%s", method.sparsity, method.guidance, scale, note)
    rows = tuple(
        Row(m, selected[m], tuple(run(m, selected[m], seed, preset.final_images) for seed in preset.final_seeds))
        for m in rows_methods
    )
    heat = tuple(run(m, s, TUNING_SEED, preset.tune_images) for m in heat_grid for s in preset.heat_scales)
    minutes = (time.perf_counter() - start) / 60
    logger.info("cells: %d computed, %d cached, %.1f min", run.computed, run.done - run.computed, minutes)
    cached, seconds = run.done - run.computed, sum(run.seconds.values())
    return StudyResults(preset, tuning, selected, rows, heat, distances(rows), run.computed, cached, seconds)
