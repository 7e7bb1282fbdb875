"""Cells, the study's unit of work and of caching: one setting's images on one seed set, sampled and scored.

A cell's key hashes everything that decides its images and metrics: the contents of the model files it uses,
the guidance, steps, sampler, seed, image count and the evaluator. Batch size, device and threads are left
out (they do not change the images). Each finished cell is one `.npz` in the cache folder, written
atomically, so an interrupted study resumes at the first unfinished cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sparseguidance.checkpoints import config_path, load_model
from sparseguidance.errors import ConfigError
from sparseguidance.files import NPZ_ERRORS, atomic_write
from sparseguidance.guidance import GammaSchedule, Guidance
from sparseguidance.images import to_uint8
from sparseguidance.metrics import EvalConfig, Evaluator
from sparseguidance.metrics.features import Features
from sparseguidance.metrics.sources import ImageSet
from sparseguidance.models import DiT
from sparseguidance.pretrained import SHIPPED_DIR, shipped_dir, shipped_file, shipped_path, shipped_snapshots
from sparseguidance.sampling import Samples, class_labels, generate
from sparseguidance.study.finetune import finetune_config, finetuned, run_name
from sparseguidance.study.presets import StudyPreset

logger = logging.getLogger("sparseguidance.study")

CACHE_FORMAT = 1  # bump when what a cell file holds, or how its numbers are computed, changes
REFERENCE = "mnist5k:heldout"  # 1,000 held-out digits, never seen in training
METRICS = ("fid", "is", "pr", "acc")  # on the domain classifier's features (Inception is far too slow on a CPU)
# sparsity -> shipped model; masking as MaskDiT ships it: after the unmasked fine-tuning stage
SHIPPED = {"routing": "mnist-routing", "masking": "mnist-masking-ft"}
FINAL = "final"  # a cell's model: the shipped run's final weights
DENSE_FT = "+dense-ft"  # a model name's suffix: those weights after the study's dense fine-tuning (Fig. 5)


@dataclass(frozen=True)
class Cell:
    """`count` images of `guidance` on the `sparsity` model from seed set `seed` (image k: noise of (seed, k))."""

    sparsity: str
    guidance: Guidance
    seed: int
    count: int
    model: str = FINAL  # the main weights: FINAL, a snapshot `step-N`, either + DENSE_FT (see CellSampler)


@dataclass(frozen=True, eq=False)
class CellResult:
    """What a cell measured, and its images and their classifier features (for the diversity distances)."""

    metrics: dict[str, float]  # fid, is, precision, recall, accuracy
    cost: dict[str, float]  # per image: nfe, forwards, gflops_per_image_paper, gflops_per_image_full
    seconds: float  # wall time of sampling and scoring
    images: np.ndarray  # uint8 (N, H, W, C)
    features: np.ndarray  # (N, D) pool features of the metrics' feature extractor


class CellSource(Protocol):
    """Computes cells, names everything besides the cell itself that decides their results, and lists the routing
    run's training points (cell model names → training step)."""

    def describe(self, cell: Cell) -> dict[str, Any]: ...

    def __call__(self, cell: Cell) -> CellResult: ...

    def training_points(self) -> dict[str, int]: ...


def plain(value: Any) -> Any:
    """JSON-ready form of a guidance field: a γ schedule as [start, end, kind], tuples as lists."""
    if isinstance(value, GammaSchedule):
        return [value.start, value.end, value.kind]
    return list(value) if isinstance(value, tuple) else value


def describe_guidance(guidance: Guidance) -> dict[str, Any]:
    """The method's name and every field of its declaration (ω, interval, γ schedules)."""
    fields = {f.name: plain(getattr(guidance, f.name)) for f in dataclasses.fields(guidance)}
    return {"name": guidance.name, **fields}


def describe_cell(cell: Cell, source: CellSource) -> dict[str, Any]:
    """Everything that decides a cell's images and metrics, as plain data."""
    return {
        "format": CACHE_FORMAT,
        "sparsity": cell.sparsity,
        "guidance": describe_guidance(cell.guidance),
        "seed": cell.seed,
        "count": cell.count,
        **source.describe(cell),
    }


def cell_key(cell: Cell, source: CellSource) -> str:
    """16 hex digits of the SHA-256 of the cell's description: a changed setting is a different key."""
    text = json.dumps(describe_cell(cell, source), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CellCache:
    """Finished cells as files `FOLDER/SPARSITY-METHOD-KEY.npz`; `get` computes (and stores) only missing ones."""

    def __init__(self, folder: str | Path, source: CellSource) -> None:
        self.folder, self.source = Path(folder), source

    def path(self, cell: Cell) -> Path:
        """The file of a cell."""
        method = cell.guidance.name.replace("+", "")
        return self.folder / f"{cell.sparsity}-{method}-{cell_key(cell, self.source)}.npz"

    def get(self, cell: Cell) -> tuple[CellResult, bool]:
        """(result, True) from the cache, or (result, False) computed now and stored."""
        path = self.path(cell)
        if path.is_file():
            try:
                return read_cell(path), True
            except (*NPZ_ERRORS, KeyError) as e:  # damaged outside the atomic write
                logger.warning("cache file %s is unreadable (%s); computing the cell again", path, e)
        result = self.source(cell)
        write_cell(path, result, describe_cell(cell, self.source))
        return result, False


def write_cell(path: Path, result: CellResult, description: dict[str, Any]) -> None:
    """Store a cell's result (images, features and a JSON record) atomically."""
    record = {"cell": description, "metrics": result.metrics, "cost": result.cost, "seconds": result.seconds}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append `.npz` to a temporary name
            np.savez(f, images=result.images, features=result.features, record=np.array(json.dumps(record)))

    atomic_write(path, write)


def read_cell(path: Path) -> CellResult:
    """A stored cell's result."""
    with np.load(path) as archive:
        record = json.loads(str(archive["record"]))
        return CellResult(record["metrics"], record["cost"], record["seconds"], archive["images"], archive["features"])


def fingerprint(path: Path) -> str:
    """16 hex digits of the SHA-256 of a file's bytes: replaced weights give new cell keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def final_step(name: str) -> int:
    """Training step of a shipped model's final weights (from its JSON; else its latest snapshot's)."""
    metadata = json.loads(config_path(shipped_path(name)).read_text())
    return int(metadata.get("step") or max(shipped_snapshots(name), default=0))


def weak_snapshot(fraction: float, name: str = SHIPPED["routing"]) -> int:
    """Training step of the snapshot nearest `fraction` of the run (AutoGuidance's weak model); earlier on a tie."""
    snapshots = shipped_snapshots(name)
    if not snapshots:
        raise ConfigError(f"shipped model {name!r} kept no training snapshots: AutoGuidance needs one as weak model")
    final = final_step(name)
    return min(snapshots, key=lambda step: (abs(step - fraction * final), step))


def snapshot_model(step: int) -> str:
    """The cell model name of a training snapshot."""
    return f"step-{step}"


def shipped_training_points(name: str = SHIPPED["routing"]) -> dict[str, int]:
    """A shipped run's snapshots and its final weights, as cell model names → training step."""
    return {snapshot_model(step): step for step in sorted(shipped_snapshots(name))} | {FINAL: final_step(name)}


@dataclass(frozen=True)
class Scored:
    """Images of one seed set as sampled and as scored."""

    samples: Samples
    images: np.ndarray  # uint8, as the evaluator saw them
    features: Features
    metrics: dict[str, float]


def sample_and_score(
    guidance: Guidance,
    models: dict[str, DiT],
    evaluator: Evaluator,
    seed: int,
    count: int,
    *,
    steps: int = 20,
    sampler: str = "euler",
    batch_size: int = 100,
) -> Scored:
    """`count` images of seed set `seed` (image k from noise (seed, k), classes 0..9 in turn), scored by `evaluator`:
    a study cell, and the quick sweeps of benchmarks/ on the same images and noise."""
    labels = class_labels("all", range(count), models["main"].config.num_classes)
    samples = generate(guidance, models, labels, seed=seed, steps=steps, sampler=sampler, batch_size=batch_size)
    images = to_uint8(samples.images)
    features = evaluator.features(ImageSet(images), "samples")  # extracted once: metrics and distances
    return Scored(samples, images, features, evaluator.score(features, labels.numpy()))


class CellSampler:
    """Samples cells with the shipped models (and dense fine-tunings of the routing run's training points, trained
    into `finetune_dir` when first needed); scores them with one Evaluator (built once)."""

    def __init__(self, preset: StudyPreset, finetune_dir: Path) -> None:
        self.preset, self.finetune_dir = preset, Path(finetune_dir)
        self.weak_step = weak_snapshot(preset.weak_fraction)
        self.weak_file = shipped_snapshots(SHIPPED["routing"])[self.weak_step]
        self.fingerprints: dict[Path, str] = {}
        self.models: dict[Path, DiT] = {}
        self.evaluator = Evaluator(REFERENCE, EvalConfig(features="mnist", metrics=METRICS, device=preset.device))

    def fingerprint(self, path: Path) -> str:
        """The content hash of a weights file (computed once)."""
        if path not in self.fingerprints:
            self.fingerprints[path] = fingerprint(path)
        return self.fingerprints[path]

    def model(self, path: Path) -> DiT:
        """The model of a weights file (loaded once)."""
        if path not in self.models:
            self.models[path] = load_model(path, self.preset.device)
        return self.models[path]

    def main_file(self, sparsity: str, model: str) -> Path:
        """The weights a cell model name stands for; a DENSE_FT name's are fine-tuned first if not yet done."""
        name = SHIPPED[sparsity]
        if model.endswith(DENSE_FT):
            start = self.main_file(sparsity, model.removesuffix(DENSE_FT))
            recipe = shipped_dir(name) / "config.yaml"
            config = finetune_config(recipe, start, self.preset.finetune_steps, self.preset.device)
            key = run_name(config, self.fingerprint(start))
            return finetuned(config, self.finetune_dir / f"{sparsity}-{model}-{key}")
        if model == FINAL:
            return shipped_path(name)
        return shipped_file(name, int(model.removeprefix("step-")))

    def files(self, cell: Cell) -> dict[str, Path]:
        """The weights files of a cell by role: main, and AutoGuidance's weak model where the guidance uses one."""
        files = {"main": self.main_file(cell.sparsity, cell.model)}
        return files | ({"weak": self.weak_file} if cell.guidance.uses_weak_model else {})

    def training_points(self) -> dict[str, int]:
        """The routing run's shipped snapshots and its final weights, as cell model names → training step."""
        return shipped_training_points()

    def describe(self, cell: Cell) -> dict[str, Any]:
        """The weights (by content) the cell runs, steps, sampler, classes and the evaluation."""
        return {
            "models": {role: self.fingerprint(path) for role, path in self.files(cell).items()},
            "steps": self.preset.steps,
            "sampler": self.preset.sampler,
            "classes": "all",
            **self.evaluation(),
        }

    def evaluation(self) -> dict[str, Any]:
        """How cells are scored: reference, feature tag, metrics, each metric's convention, the classifier's classes."""
        conventions = self.evaluator.config.conventions()
        return {
            "reference": REFERENCE,
            "features": self.evaluator.tag,
            "metrics": list(METRICS),
            "conventions": {metric: conventions[metric] for metric in METRICS},
            "label_classes": self.evaluator.extractor.label_classes,
        }

    def __call__(self, cell: Cell) -> CellResult:
        """Sample the cell's images (classes 0..9 in turn), then score them."""
        start = time.perf_counter()
        models = {role: self.model(path) for role, path in self.files(cell).items()}
        scored = sample_and_score(
            cell.guidance,
            models,
            self.evaluator,
            cell.seed,
            cell.count,
            steps=self.preset.steps,
            sampler=self.preset.sampler,
            batch_size=self.preset.batch_size,
        )
        cost = scored.samples.cost.as_dict()
        return CellResult(scored.metrics, cost, time.perf_counter() - start, scored.images, scored.features.pool)

    def file_info(self, path: Path) -> dict[str, str]:
        """A shipped weights file (relative to the shipped models' folder) and its fingerprint."""
        return {"file": str(path.relative_to(SHIPPED_DIR)), "sha256_16": self.fingerprint(path)}

    def models_info(self) -> dict[str, Any]:
        """The shipped final weights the study sampled and AutoGuidance's snapshot, with fingerprints and its step."""
        info: dict[str, Any] = {s: {"main": self.file_info(shipped_path(name))} for s, name in SHIPPED.items()}
        info["routing"]["weak"] = self.file_info(self.weak_file) | {"step": self.weak_step}
        return info
