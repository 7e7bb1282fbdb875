"""The study's order of work: try every candidate setting on the tuning seed set (each method's ω sweep; for SG
the γ grid × its ω sweep, which is also the heat maps), report the chosen settings on the other seed sets, run
the Fig. 5 training points, and measure how far guided samples move from the unguided ones of the same noise.

Every cell goes through a CellCache, so a second run reads finished cells instead of sampling them again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseguidance.errors import DataError
from sparseguidance.guidance import Guidance
from sparseguidance.pretrained import shipped_dir
from sparseguidance.study.cells import DENSE_FT, FINAL, SHIPPED, Cell, CellCache, CellResult
from sparseguidance.study.finetune import training_forwards
from sparseguidance.study.presets import TUNING_SEED, Method, StudyPreset, methods

logger = logging.getLogger("sparseguidance.study")

FLOPS_ROW = ("routing", "sg_flops")  # Table 2's SG_FLOPS: the best SG setting cheaper than no guidance
# image-forwards/s of a whole study on 2 idle CPU cores with --threads 2, scoring included (v1 cpu run: 800k in
# 56 min); one thread beside another job gave ~93 (2026-12-02), so the estimate holds only on a quiet machine
CPU_RATE = 240.0
# Fig. 5 at each training point: variant -> (the reported row whose setting it uses, suffix of the model name)
VARIANTS = {"sg": ("sg", ""), "cfg": ("cfg", ""), "dense-ft+cfg": ("cfg", DENSE_FT)}


@dataclass(frozen=True, eq=False)
class Point:
    """A finished cell and the setting (method with its γ, and ω) it ran."""

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
    """A reported row: a chosen setting, one point per seed set (the same seeds for every row)."""

    name: str  # the row's key in the tables: its guidance, or "sg_flops"
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
        """Seed-to-seed standard deviation (ddof 1; NaN for one seed set)."""
        values = self.values(metric)
        return float(values.std(ddof=1)) if len(values) > 1 else math.nan


@dataclass(frozen=True, eq=False)
class TrainingRow:
    """Fig. 5: one variant (SG, CFG, dense fine-tune + CFG) at one training point of the routing run."""

    step: int
    variant: str  # a key of VARIANTS
    row: Row


@dataclass(frozen=True, eq=False)
class Distance:
    """Fig. 7's check: how far a guided row's images lie from the unguided ones of the same noise, per seed set."""

    row: Row
    pixel: tuple[float, ...]  # mean per-image RMS difference of pixels scaled to [0, 1]
    feature: tuple[float, ...]  # mean per-image L2 distance of the classifier features


@dataclass(frozen=True, eq=False)
class StudyResults:
    """Everything the report draws from: tuning cells, chosen settings, reported rows, Fig. 5 rows, distances."""

    preset: StudyPreset
    tuning: tuple[Point, ...]
    selected: dict[tuple[str, str], Point | None]  # (sparsity, row name) -> the tuning point chosen (None: none fit)
    rows: tuple[Row, ...]
    training: tuple[TrainingRow, ...]
    diversity: tuple[Distance, ...]
    computed: int  # cells sampled by this run
    cached: int  # cells read from the cache
    cell_seconds: float  # time of every distinct cell, cached ones included: the study's cost from scratch


@dataclass(frozen=True)
class Plan:
    """The cells and image-forwards a study will take (fine-tuning steps counted as image-forwards too)."""

    cells: int
    sampling_forwards: int
    training_forwards: int

    @property
    def minutes(self) -> float:
        """The expected time at CPU_RATE (2 idle CPU cores, 2 threads)."""
        return (self.sampling_forwards + self.training_forwards) / CPU_RATE / 60


def best(points: Iterable[Point]) -> Point | None:
    """The point with the lowest FID (on a tie the smaller ω, then the earlier); NaN FIDs never win; None if none."""
    finite = [p for p in points if math.isfinite(p.fid)]
    return min(finite, key=lambda p: (p.fid, p.scale)) if finite else None


def chosen_by(points: Iterable[Point], template: Method) -> Point:
    """The best of a row template's candidates; a DataError when none has a finite FID."""
    chosen = best(p for p in points if p.method.template == template)
    if chosen is None:
        raise DataError(f"no finite FID to choose {template.sparsity} {template.guidance}'s setting from")
    return chosen


def select(tuning: tuple[Point, ...], templates: Iterable[Method]) -> dict[tuple[str, str], Point | None]:
    """Each row's setting, chosen on the tuning cells: the best of its template's candidates (SG: jointly over the
    γ grid and ω), and SG_FLOPS, the best routing SG setting whose cost per image is below no guidance's."""
    chosen = {(t.sparsity, t.guidance): chosen_by(tuning, t) for t in templates}
    budget = chosen[(FLOPS_ROW[0], "none")].gflops_per_image
    sparse = Method(FLOPS_ROW[0], "sg")
    cheaper = (p for p in tuning if p.method.template == sparse and p.gflops_per_image < budget)
    return {**chosen, FLOPS_ROW: best(cheaper)}


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

    def __init__(self, cache: CellCache, steps: int, plan: Plan) -> None:
        self.cache, self.steps, self.total, self.forwards_left = cache, steps, plan.cells, plan.sampling_forwards
        self.done = self.computed = 0
        self.forwards_per_second: list[float] = []  # of the cells computed by this run
        self.seconds: dict[Path, float] = {}  # per distinct cell file: its sampling and scoring time

    def __call__(self, method: Method, scale: float, seed: int, count: int, model: str = FINAL) -> Point:
        """The point of `method` at ω = `scale` on `count` images of seed set `seed`, with the weights `model`."""
        cell = Cell(method.sparsity, method.at(scale), seed, count, model)
        result, cached = self.cache.get(cell)
        forwards = count * forwards_per_image(cell.guidance, self.steps)
        path = self.cache.path(cell)
        repeat = path in self.seconds  # met before in this run: the plan counts it once
        self.seconds[path] = result.seconds
        self.done += not repeat
        self.computed += not cached
        self.forwards_left -= 0 if repeat else forwards
        if repeat:
            where = "met before in this run"
        elif cached:
            where = "cached"
        else:
            self.forwards_per_second.append(forwards / max(result.seconds, 1e-9))
            left = max(self.forwards_left, 0) / float(np.median(self.forwards_per_second)) / 60
            where = f"{result.seconds:.1f} s, {count / max(result.seconds, 1e-9):.1f} img/s; about {left:.0f} min left"
        weights = "" if model == FINAL else f" ({model})"
        what = f"{method.sparsity}{weights} {method.guidance} {method.setting(scale) or '-'}, seed {seed}"
        logger.info(
            "[%d/%d] %s, %d images: FID %.2f (%s)", self.done, self.total, what, count, result.metrics["fid"], where
        )
        return Point(method, scale, cell, result)


def training_points(points: dict[str, int], count: int) -> dict[str, int]:
    """Fig. 5's training points: `count` of the snapshots (spread evenly, the earliest first), and the final model."""
    snapshots = sorted((step, name) for name, step in points.items() if name != FINAL)
    picked = sorted({round(i) for i in np.linspace(0, len(snapshots) - 1, min(count, len(snapshots)))})
    return {snapshots[i][1]: snapshots[i][0] for i in picked} | {FINAL: points[FINAL]}


def log_plan(preset: StudyPreset, templates: list[Method], points: dict[str, int]) -> Plan:
    """Log the cells, images and image-forwards each part will take (and the fine-tuning); return the plan."""
    some = {(t.sparsity, t.guidance): t.candidates(preset)[0] for t in templates}  # same forwards as the chosen one
    some[FLOPS_ROW] = some[("routing", "sg")]
    fig5 = [  # the final model's SG and CFG cells are reported rows' cells
        (some[("routing", row)], model + suffix)
        for model in points
        for row, suffix in VARIANTS.values()
        if model != FINAL or suffix
    ]
    tune, final = preset.tune_images, preset.final_images
    parts = {
        "tuning (ω sweeps, SG's γ grid)": [(m.at(s), tune) for t in templates for m, s in t.candidates(preset)],
        "reported rows": [(m.at(s), final) for m, s in some.values() for _ in preset.final_seeds],
        "Fig. 5": [(m.at(s), final) for (m, s), _ in fig5 for _ in range(preset.snapshot_seed_sets)],
    }
    sampling = 0
    for part, cells in parts.items():
        forwards = sum(count * forwards_per_image(g, preset.steps) for g, count in cells)
        images = sum(count for _, count in cells)
        logger.info("plan: %s: %d cells, %d images, %d image-forwards", part, len(cells), images, forwards)
        sampling += forwards
    runs = sum(model.endswith(DENSE_FT) for _, model in fig5)
    training = runs * training_forwards(shipped_dir(SHIPPED["routing"]) / "config.yaml", preset.finetune_steps)
    logger.info(
        "plan: dense fine-tuning: %d runs × %d steps, about %d image-forwards", runs, preset.finetune_steps, training
    )
    plan = Plan(sum(map(len, parts.values())), sampling, training)
    logger.info(
        "plan: %d cells, %d image-forwards in all (%s %d steps; cells met twice run once): about %.0f min at %g "
        "image-forwards/s (2 idle CPU cores, --threads 2)",
        *(plan.cells, sampling + training, preset.sampler, preset.steps, plan.minutes, CPU_RATE),
    )
    return plan


def distances(rows: tuple[Row, ...]) -> tuple[Distance, ...]:
    """Each guided row's distance to the unguided row of its model, image by image (same seed and index: same
    noise), per seed set."""
    unguided = {row.method.sparsity: row for row in rows if row.name == "none"}
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
        found.append(Distance(row, tuple(pixel), tuple(feature)))
    return tuple(found)


def log_choices(selected: dict[tuple[str, str], Point | None], preset: StudyPreset) -> None:
    """Log each row's chosen setting and its tuning FID, flagging an ω at the edge of its sweep."""
    for (sparsity, name), point in selected.items():
        if point is None:
            logger.info("chosen: %s %s: none (no SG setting costs less per image than no guidance)", sparsity, name)
            continue
        note = " (ω at the edge of its sweep: widen it)" if at_edge(point.method, point.scale, preset) else ""
        logger.info("chosen: %s %s: %s, FID %.2f%s", sparsity, name, point.method.setting(point.scale), point.fid, note)


def report_rows(run: Runner, selected: dict[tuple[str, str], Point | None], preset: StudyPreset) -> tuple[Row, ...]:
    """Every chosen setting on the reported seed sets (a row whose choice found no setting is left out)."""
    rows = []
    for (_, name), point in selected.items():
        if point is not None:
            points = tuple(run(point.method, point.scale, seed, preset.final_images) for seed in preset.final_seeds)
            rows.append(Row(name, point.method, point.scale, points))
    return tuple(rows)


def training_rows(
    run: Runner, selected: dict[tuple[str, str], Point | None], points: dict[str, int], preset: StudyPreset
) -> tuple[TrainingRow, ...]:
    """Fig. 5: SG, CFG and dense fine-tune + CFG at each training point, at the settings chosen on the final model."""
    seeds = preset.final_seeds[: preset.snapshot_seed_sets]
    found = []
    for model, step in points.items():
        for variant, (name, suffix) in VARIANTS.items():
            chosen = selected[("routing", name)]
            if chosen is None:  # never for SG and CFG: select() raises first
                continue
            cells = tuple(run(chosen.method, chosen.scale, seed, preset.final_images, model + suffix) for seed in seeds)
            found.append(TrainingRow(step, variant, Row(name, chosen.method, chosen.scale, cells)))
    return tuple(found)


def run_study(preset: StudyPreset, cache: CellCache) -> StudyResults:
    """Tune, report, run the training points and measure distances; every cell through `cache`."""
    templates = methods()
    points = training_points(cache.source.training_points(), preset.snapshots)
    run = Runner(cache, preset.steps, log_plan(preset, templates, points))
    start = time.perf_counter()
    tuning = tuple(run(m, s, TUNING_SEED, preset.tune_images) for t in templates for m, s in t.candidates(preset))
    selected = select(tuning, templates)
    log_choices(selected, preset)
    rows = report_rows(run, selected, preset)
    training = training_rows(run, selected, points, preset)
    minutes = (time.perf_counter() - start) / 60
    logger.info("cells: %d computed, %d cached, %.1f min", run.computed, run.done - run.computed, minutes)
    cached, seconds = run.done - run.computed, sum(run.seconds.values())
    return StudyResults(preset, tuning, selected, rows, training, distances(rows), run.computed, cached, seconds)
