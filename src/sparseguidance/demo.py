"""The demo: the same seeds and classes sampled with no guidance, CFG and SG, one comparison image, one table.

`run_demo(load_demo_model("mnist-routing"), DemoSettings())` samples a fixed number of images with every
method (the first ones form the comparison grid), so the same settings give the same table on any machine
(only the times vary), then scores each method's samples with the MNIST domain features against the 1,000
held-out MNIST-5k digits. Real training digits of the same classes and count are scored too: the FID floor at
that count.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from sparseguidance.checkpoints import load_model
from sparseguidance.config import check_types
from sparseguidance.data import mnist5k
from sparseguidance.devices import PRECISIONS
from sparseguidance.errors import ConfigError
from sparseguidance.files import atomic_write
from sparseguidance.guidance import Guidance, make_guidance
from sparseguidance.images import to_uint8
from sparseguidance.metrics.evaluate import PR_NEIGHBOURS, EvalConfig, Evaluator, FewSamplesWarning
from sparseguidance.models import DiT
from sparseguidance.pretrained import SHIPPED_MODELS, resolve_checkpoint
from sparseguidance.sampling import Cost, Samples, class_labels, generate
from sparseguidance.sampling.sampler import MAX_IMAGES, model_device

REFERENCE = "mnist5k:heldout"  # 1,000 held-out digits, 100 per class
DIGIT_SHAPE = (1, 32, 32, 10)  # channels, height, width, classes: what the MNIST metrics score
TITLES = {"none": "no guidance", "cfg": "CFG", "sg": "SG"}  # how the table and the image name them
COLUMNS = (  # table columns: key of a row, title, width, format
    ("gflops_per_image_paper", "GFLOPs/img", 11, ".2f"),
    ("wall_s", "wall s", 8, ".1f"),
    ("images", "images", 8, "d"),
    ("images_per_s", "img/s", 7, ".2f"),
    ("fid", "FID", 8, ".1f"),
    ("precision", "prec", 7, ".3f"),
    ("recall", "recall", 7, ".3f"),
    ("accuracy", "acc", 7, ".3f"),
)


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless `ok`."""
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides the demo's samples and their count; the CLI's defaults come from here."""

    classes: tuple[int, ...] = tuple(range(10))  # one column each
    per_class: int = 1  # rows of each method in the comparison image
    seed: int = 1  # image k depends only on (seed, k); seed 0 is the tuning seed set, so the demo shows others
    steps: int = 20  # Euler steps
    # ω and γ: the best of the study's tuning cells (`sparseguidance study --preset cpu`: seed 0, 160 images,
    # 20 steps; CFG over ω 1.25…4, SG over the γ grid × ω 1.5…8), never chosen on the demo's own seed
    cfg_scale: float = 1.25  # ω of CFG (FID 31.4; ω 1.5: 32.6, ω 2: 46.6)
    sg_scale: float = 4.0  # ω of SG (FID 34.0 at γ 0.25 / 0.5, the best SG cell of the grid)
    gamma_strong: float = 0.25  # γ of SG's strong branch: the model's training ratio
    gamma_weak: float = 0.5  # γ of SG's weak branch
    num_images: int = 110  # images per method: about 2 minutes in all on a 2-core CPU, one thread
    batch_size: int = 32  # images per batch (does not change them)
    precision: str = "fp32"  # or bf16 / fp16 autocast of the model

    def __post_init__(self) -> None:
        check_types(self)
        v = vars(self)
        for name in ("per_class", "steps", "batch_size"):
            require(v[name] >= 1, f"{name} must be at least 1, got {v[name]}")
        require(len(self.classes) > 0, "give at least one class")
        require(self.seed >= 0, f"seed must be ≥ 0, got {self.seed}")
        for name in ("cfg_scale", "sg_scale"):
            ok = math.isfinite(v[name]) and v[name] >= 1
            require(ok, f"{name} must be a finite guidance scale ω ≥ 1 (1: no guidance), got {v[name]}")
        for name in ("gamma_strong", "gamma_weak"):
            require(0 <= v[name] < 1, f"{name} must lie in [0, 1) (the fraction of tokens dropped), got {v[name]}")
        require(
            self.gamma_strong < self.gamma_weak,
            f"SG needs gamma_strong < gamma_weak (a sparser weak branch), got {self.gamma_strong}, {self.gamma_weak}",
        )
        require(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision}")
        least = max(2, self.grid_size)  # the comparison image, and two samples for a covariance
        require(
            least <= self.num_images <= MAX_IMAGES,
            f"num_images must be at least {least} (classes × per_class, and 2 for FID) and at most {MAX_IMAGES:,}, "
            f"got {self.num_images}",
        )
        require(self.grid_size <= MAX_IMAGES, f"classes × per_class must be at most {MAX_IMAGES:,}")

    @property
    def grid_size(self) -> int:
        """Images per method in the comparison image: samples 0 .. classes × per_class − 1."""
        return len(self.classes) * self.per_class

    def metrics(self) -> tuple[str, ...]:
        """FID and accuracy, with precision/recall unless there are too few samples for their k-NN balls."""
        return ("fid", "acc") if self.num_images <= PR_NEIGHBOURS else ("fid", "pr", "acc")


def demo_methods(settings: DemoSettings) -> dict[str, Guidance]:
    """The compared methods by name, in row order: no guidance (dense), CFG (dense), SG (both branches sparse)."""
    return {
        "none": make_guidance("none"),
        "cfg": make_guidance("cfg", settings.cfg_scale),
        "sg": make_guidance("sg", settings.sg_scale, settings.gamma_strong, settings.gamma_weak),
    }


def setting_text(guidance: Guidance) -> str:
    """ω and the branches' γ in a few characters, e.g. `ω 1.5, γ 0.5/0.8` (`dense` without guidance)."""
    gammas = [b.gamma.start for b in (guidance.strong, guidance.weak) if b is not None]
    parts = [] if guidance.weak is None else [f"ω {guidance.scale:g}"]
    if any(gammas):
        parts.append("γ " + "/".join(f"{g:g}" for g in gammas))
    return ", ".join(parts) or "dense"


def load_demo_model(spec: str) -> DiT:
    """A shipped model's name or a .safetensors path, checked to be a sparse model of MNIST digits."""
    path = resolve_checkpoint(spec)
    if path.suffix == ".safetensors":
        model = load_model(path)
    else:
        raise ConfigError(
            f"unknown model {spec!r}: give a shipped model ({', '.join(SHIPPED_MODELS)}) or a .safetensors"
        )
    config = model.config
    shape = (config.in_channels, config.input_size, config.input_size, config.num_classes)
    if shape != DIGIT_SHAPE:
        raise ConfigError(
            f"the demo scores MNIST digits (1×32×32, 10 classes); {spec} makes {shape[0]}×{shape[1]}×{shape[2]} "
            f"images of {shape[3]} classes"
        )
    if not config.routes and config.decoder is None:
        raise ConfigError(f"SG runs the model at γ > 0: {spec} is dense (give a routing or masking model)")
    return model


@dataclass
class MethodRun:
    """One method's samples, batch by batch, and their scores."""

    name: str
    guidance: Guidance
    batches: list[Samples] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def images(self) -> np.ndarray:
        """uint8 (N, H, W, C) in sample-index order."""
        return to_uint8(torch.cat([b.images for b in self.batches]))

    @property
    def labels(self) -> np.ndarray:
        """The class of each image."""
        return torch.cat([b.labels for b in self.batches]).numpy()

    @property
    def seconds(self) -> float:
        """Sampling wall time over all batches."""
        return sum(b.seconds for b in self.batches)

    @property
    def cost(self) -> Cost:
        """Per-image cost (the same for every image of a fixed-step sampler)."""
        return self.batches[0].cost


@dataclass
class DemoResult:
    """The runs in row order, the metrics of real digits of the same classes and count, and the settings."""

    settings: DemoSettings
    runs: list[MethodRun]
    floor: dict[str, float]

    @property
    def count(self) -> int:
        """Images per method."""
        return len(self.runs[0].labels)


def sample_range(runs: list[MethodRun], model: DiT, settings: DemoSettings, indices: range, bar: tqdm) -> None:
    """Sample images `indices` with every method, the same seeds and classes for each."""
    labels = class_labels(settings.classes, indices, model.config.num_classes)
    for run in runs:
        run.batches.append(
            generate(
                run.guidance,
                {"main": model},
                labels,
                seed=settings.seed,
                steps=settings.steps,
                batch_size=settings.batch_size,
                indices=indices,
                progress=bar,
                precision=settings.precision,
            )
        )


def real_digits(labels: np.ndarray) -> np.ndarray:
    """Training digits with the given labels, uint8 (N, 32, 32, 1): the k-th of each class for its k-th request."""
    images, digit_labels = mnist5k("train")
    pools = {int(c): np.flatnonzero(digit_labels == c) for c in np.unique(labels)}
    seen: Counter[int] = Counter()
    picks = []
    for label in labels.tolist():
        pool = pools[label]
        picks.append(pool[seen[label] % len(pool)])
        seen[label] += 1
    return images[picks][..., None]


def score(evaluator: Evaluator, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The evaluator's metrics, quiet about few samples (the table's real-digit row is the floor at this count)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="singular covariance product")
        warnings.simplefilter("ignore", FewSamplesWarning)
        return evaluator(images, labels)


def run_demo(model: DiT, settings: DemoSettings, *, progress: bool = False) -> DemoResult:
    """Sample `num_images` images with every method (the same seeds and classes for each) and score them."""
    config = EvalConfig(features="mnist", metrics=settings.metrics(), device=str(model_device(model)))
    evaluator = Evaluator(REFERENCE, config)
    runs = [MethodRun(name, guidance) for name, guidance in demo_methods(settings).items()]
    with tqdm(total=len(runs) * settings.num_images, unit="img", desc="demo", disable=not progress) as bar:
        sample_range(runs, model, settings, range(settings.num_images), bar)
    for run in runs:
        run.metrics = score(evaluator, run.images, run.labels)
    labels = runs[0].labels
    return DemoResult(settings, runs, score(evaluator, real_digits(labels), labels))


# Comparison image layout, in pixels at DPI: digits scaled ZOOM×, row labels on the left, class labels on top.
DPI, ZOOM, LEFT, TOP, GAP, MARGIN = 100, 3, 190, 26, 10, 6


def comparison_size(result: DemoResult) -> tuple[int, int]:
    """(width, height) of the comparison image in pixels."""
    s, cell = result.settings, ZOOM * DIGIT_SHAPE[1]
    rows = len(result.runs)
    return LEFT + len(s.classes) * cell + MARGIN, TOP + rows * s.per_class * cell + (rows - 1) * GAP + MARGIN


def save_comparison(path: str | Path, result: DemoResult) -> None:
    """One PNG: a row of digits per method (its first classes × per_class samples), labelled with ω, γ, GFLOPs."""
    s, cell = result.settings, ZOOM * DIGIT_SHAPE[1]
    width, height = comparison_size(result)
    columns, block = len(s.classes), s.per_class * cell
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for row, run in enumerate(result.runs):
        h, w = run.images.shape[1:3]
        tile = run.images[: s.grid_size, ..., 0].reshape(s.per_class, columns, h, w).swapaxes(1, 2)
        top = TOP + row * (block + GAP)
        ax = fig.add_axes((LEFT / width, 1 - (top + block) / height, columns * cell / width, block / height))
        ax.imshow(tile.reshape(s.per_class * h, columns * w), cmap="gray", vmin=0, vmax=255, aspect="auto")
        ax.set_axis_off()
        gflops = run.cost.flops.paper / 1e9
        label = f"{TITLES[run.name]}\n{setting_text(run.guidance)}\n{gflops:.2f} GFLOPs/image"
        ax.text(-0.02, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=10)
        if row == 0:
            for col, c in enumerate(s.classes):
                ax.text((col + 0.5) / columns, 1.02, str(c), transform=ax.transAxes, ha="center", va="bottom")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def table_rows(result: DemoResult) -> list[dict[str, Any]]:
    """One plain-data row per method (GFLOPs, wall time, images/s, metrics) for the table and the JSON file."""
    rows = []
    for run in result.runs:
        count, seconds = len(run.labels), run.seconds
        rows.append(
            {
                "method": run.name,
                "setting": setting_text(run.guidance),
                "guidance": {"name": run.guidance.name, **dataclasses.asdict(run.guidance)},
                **run.cost.as_dict(),
                "wall_s": seconds,
                "images": count,
                "images_per_s": count / seconds,
                **run.metrics,
            }
        )
    return rows


def verdict(rows: list[dict[str, Any]]) -> str:
    """One line saying what the rows show: each guided method's FID and cost against no guidance's."""
    by_name = {row["method"]: row for row in rows}
    base = by_name["none"]
    parts = []
    for name in ("sg", "cfg"):
        row = by_name[name]
        change = 100 * (row["fid"] / base["fid"] - 1)
        cost = row["gflops_per_image_paper"] / base["gflops_per_image_paper"]
        parts.append(f"{TITLES[name]} FID {row['fid']:.1f} ({change:+.0f} %) at {cost:.2f}× its GFLOPs")
    return f"Against no guidance (FID {base['fid']:.1f}): " + "; ".join(parts) + "."


def format_table(result: DemoResult) -> str:
    """The printed table: a row per method, the real-digit floor, and what the numbers mean."""
    floor = {"method": "real digits", "setting": "train split", "images": result.count, **result.floor}
    rows = [*table_rows(result), floor]
    columns = [c for c in COLUMNS if any(c[0] in row for row in rows)]  # P/R only when computed
    lines = [f"{'method':<13}{'ω, γ':<18}" + "".join(f"{title:>{width}}" for _, title, width, _ in columns)]
    for row in rows:
        line = f"{TITLES.get(row['method'], row['method']):<13}{row['setting']:<18}"
        line += "".join(
            f"{row[key]:>{width}{form}}" if key in row else f"{'—':>{width}}" for key, _, width, form in columns
        )
        lines.append(line)
    lines += [
        verdict(rows),
        f"GFLOPs: per image over all {result.settings.steps} Euler steps, paper convention (linear layers, one per",
        f"multiply-add). FID: MNIST domain features against the 1,000 {REFERENCE} digits, from only {result.count}",
        "samples per row: biased upward, comparable only between rows of this run; 'real digits' (training digits",
        "of the same classes and count) is its floor. acc: the shipped MNIST classifier on the requested classes.",
    ]
    return "\n".join(lines)
