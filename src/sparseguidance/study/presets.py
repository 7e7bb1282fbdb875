"""The sizes of `sparseguidance study` (quick, cpu, gpu) and the rows it reports.

A preset holds every number that decides which images are sampled: steps, image counts, seed sets, the ω
sweeps, SG's γ grid (searched jointly with ω: the heat maps), and Fig. 5's training points and fine-tuning.
A cell's cache key is built from what the cell runs, so changing any of these values reruns exactly the
cells it touches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sparseguidance.config import check_types
from sparseguidance.errors import ConfigError
from sparseguidance.guidance import GammaSchedule, Guidance, as_schedule, make_guidance
from sparseguidance.sampling.sampler import INTEGRATORS, MAX_IMAGES, MAX_STEPS
from sparseguidance.sparsity import check_gamma

SPARSITIES = ("routing", "masking")  # the two token-sparse families; each has its shipped model
TUNING_SEED = 0  # the seed set that chooses every setting (ω, SG's γ pair); reported rows use seeds 1..K
GRID_GUIDANCE = ("sg", "cfg+sg")  # γ pair and ω chosen jointly on the tuning seed set (Figs. 6/8 grid)
SG_FID_PEAK = 0.6  # PAPER.md Table 2, SG_FID: auxiliary γ cosine 0.6 → 0, main model 0 → 0.6


def require(ok: bool, problem: str, value: object) -> None:
    """Raise ConfigError `study preset: PROBLEM, got VALUE` unless `ok`."""
    if not ok:
        raise ConfigError(f"study preset: {problem}, got {value!r}")


def is_count(value: object, least: int) -> bool:
    """Whether `value` is an int (not a bool) of at least `least`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def is_number(value: object) -> bool:
    """Whether `value` is an int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class StudyPreset:
    """One size of the study (see PRESETS); validated on construction, overridable with `--set key=value`."""

    steps: int = 20  # sampling steps of every cell
    sampler: str = "euler"  # a key of sampling.INTEGRATORS
    tune_images: int = 160  # per tuning cell (ω sweeps, γ grid, Pareto): above the 128 feature dims, so FID is defined
    final_images: int = 250  # images per seed set of a reported row
    final_seed_sets: int = 3  # reported rows are means over this many seed sets; their spread is reported
    scales: tuple[float, ...] = (1.1, 1.25, 1.5, 2.0, 3.0, 4.0)  # ω sweep of CFG, AG, ICG and AG+SG
    sg_scales: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)  # ω sweep of SG, crossed with the γ grid
    heat_strong: tuple[float, ...] = (0.0, 0.25, 0.5)  # γ_strong axis of SG's grid on the routing model (heat maps)
    heat_weak: tuple[float, ...] = (0.5, 0.75, 0.9)  # γ_weak axis (cells with γ_strong < γ_weak only)
    # the masking model's grid: masking tolerates much less sparsity than routing (PAPER.md Figs. 6/8, γ ≲ 0.3)
    masking_heat_strong: tuple[float, ...] = (0.0, 0.1)
    masking_heat_weak: tuple[float, ...] = (0.25, 0.5, 0.75)
    weak_fraction: float = 0.2  # AutoGuidance's auxiliary: the routing snapshot nearest this fraction of training
    snapshots: int = 2  # Fig. 5: this many of the routing run's shipped snapshots (spread evenly), and the final model
    snapshot_seed_sets: int = 1  # Fig. 5: FID on the first this many reported seed sets
    finetune_steps: int = 200  # Fig. 5: steps of the dense fine-tuning from each training point
    batch_size: int = 100  # images per forward batch (does not change the images)
    device: str = "cpu"  # torch device of the models and the feature extractor

    def __post_init__(self) -> None:
        check_types(self, "study preset: ")
        for name in ("steps", "tune_images", "final_images", "batch_size", "finetune_steps"):
            require(is_count(getattr(self, name), 1), f"{name} must be a whole number ≥ 1", getattr(self, name))
        for name, most in (("steps", MAX_STEPS), ("tune_images", MAX_IMAGES), ("final_images", MAX_IMAGES)):
            require(getattr(self, name) <= most, f"{name} must be at most {most:,}", getattr(self, name))
        require(is_count(self.final_seed_sets, 2), "final_seed_sets must be ≥ 2 (for the spread)", self.final_seed_sets)
        require(is_count(self.snapshots, 0), "snapshots must be a whole number ≥ 0", self.snapshots)
        sets = self.snapshot_seed_sets
        require(
            is_count(sets, 1) and sets <= self.final_seed_sets, "snapshot_seed_sets must be 1..final_seed_sets", sets
        )
        require(self.sampler in INTEGRATORS, f"sampler must be one of {', '.join(INTEGRATORS)}", self.sampler)
        for name in ("scales", "sg_scales", "heat_strong", "heat_weak", "masking_heat_strong", "masking_heat_weak"):
            values = getattr(self, name)
            require(isinstance(values, tuple) and len(values) > 0, f"{name} must be a non-empty list", values)
            if name.endswith("scales"):
                require(all(is_number(v) and v > 0 for v in values), f"{name}: every ω must be > 0", values)
            else:
                for value in values:
                    check_gamma(value, f"study preset: {name}")
        for sparsity in SPARSITIES:
            problem = f"the {sparsity} γ grid needs a cell with γ_strong < γ_weak"
            require(bool(self.heat_pairs(sparsity)), problem, self.grid(sparsity))
        fraction = self.weak_fraction
        require(is_number(fraction) and 0 <= fraction <= 1, "weak_fraction must lie in [0, 1]", fraction)

    def grid(self, sparsity: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The γ_strong and γ_weak axes of SG's grid on the routing or the masking model."""
        if sparsity == "masking":
            return self.masking_heat_strong, self.masking_heat_weak
        return self.heat_strong, self.heat_weak

    def heat_pairs(self, sparsity: str) -> list[tuple[float, float]]:
        """SG's (γ_strong, γ_weak) grid on one model: the pairs of its axes with γ_strong < γ_weak."""
        strong, weak = self.grid(sparsity)
        return [(s, w) for s in strong for w in weak if s < w]

    @property
    def final_seeds(self) -> list[int]:
        """Seeds of the reported rows' seed sets (never the tuning seed)."""
        return [TUNING_SEED + 1 + i for i in range(self.final_seed_sets)]


PRESETS: dict[str, StudyPreset] = {
    # a smoke run of every part (the test suite runs it): numbers are meaningless at 12 images and 2 steps
    "quick": StudyPreset(
        steps=2,
        tune_images=12,
        final_images=12,
        final_seed_sets=2,
        scales=(1.5, 2.0),
        sg_scales=(2.0, 8.0),
        heat_strong=(0.0, 0.5),
        heat_weak=(0.9,),
        masking_heat_strong=(0.0,),
        masking_heat_weak=(0.5,),
        snapshots=1,
        finetune_steps=1,
        batch_size=64,
    ),
    # sized by the study's plan to well under 2 hours on 2 CPU cores with the shipped 64-token MNIST models
    "cpu": StudyPreset(),
    # a larger run for one GPU: the paper's 40 steps and 7 × 7 γ grid, thousands of images per cell
    "gpu": StudyPreset(
        steps=40,
        tune_images=1000,
        final_images=2000,
        final_seed_sets=3,
        scales=(1.25, 1.5, 2.0, 2.5, 3.0, 4.0),
        sg_scales=(1.3, 1.5, 1.7, 1.9, 2.5, 3.0, 4.0, 6.0, 8.0),
        heat_strong=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        heat_weak=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        masking_heat_strong=(0.0, 0.1, 0.2, 0.3),
        masking_heat_weak=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6),
        snapshots=8,
        snapshot_seed_sets=3,
        finetune_steps=1000,
        batch_size=500,
        device="cuda",
    ),
}


def get_preset(name: str) -> StudyPreset:
    """The named preset; a clear error for an unknown name."""
    if name not in PRESETS:
        raise ConfigError(f"unknown study preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class Method:
    """A guidance method on the routing or masking model. As a reported row's template, SG and CFG+SG leave their
    γ pair open: it is chosen with ω on the tuning seed set, over the γ grid × `sg_scales`."""

    sparsity: str  # "routing" | "masking"
    guidance: str  # a guidance.make_guidance name
    gamma_strong: float | GammaSchedule | None = None
    gamma_weak: float | GammaSchedule | None = None

    def at(self, scale: float) -> Guidance:
        """The guidance at ω = `scale`."""
        return make_guidance(self.guidance, scale, self.gamma_strong, self.gamma_weak)

    @property
    def on_grid(self) -> bool:
        """Whether the method's γ pair is chosen on the γ grid (SG, CFG+SG) rather than fixed (AG+SG's schedules)."""
        return self.guidance in GRID_GUIDANCE

    @property
    def template(self) -> Method:
        """The reported row this setting is a candidate of: a grid method without its γ pair, any other as is."""
        return replace(self, gamma_strong=None, gamma_weak=None) if self.on_grid else self

    @property
    def gammas(self) -> str:
        """`0.5 / 0.9`, the γ of the strong and the weak branch (empty for dense methods)."""
        return " / ".join(describe_gamma(g) for g in (self.gamma_strong, self.gamma_weak) if g is not None)

    def setting(self, scale: float) -> str:
        """`ω 2, γ 0.5 / 0.9` (empty for no guidance)."""
        if self.guidance == "none":
            return ""
        return f"ω {scale:g}" + (f", γ {self.gammas}" if self.gammas else "")

    def sweep(self, preset: StudyPreset) -> tuple[float, ...]:
        """The ω values tried on the tuning seed set (one, ω = 1, for no guidance)."""
        if self.guidance == "none":
            return (1.0,)
        return preset.sg_scales if self.on_grid else preset.scales

    def candidates(self, preset: StudyPreset) -> list[tuple[Method, float]]:
        """The (setting, ω) cells tried on the tuning seed set: a grid method at every γ pair and ω of its sweep."""
        pairs = preset.heat_pairs(self.sparsity) if self.on_grid else []
        settings = [replace(self, gamma_strong=s, gamma_weak=w) for s, w in pairs] if self.on_grid else [self]
        return [(setting, scale) for setting in settings for scale in self.sweep(preset)]


def describe_gamma(value: float | GammaSchedule) -> str:
    """`0.5`, or `0→0.6 cosine` for a schedule."""
    schedule = as_schedule(value)
    return f"{schedule.start:g}" if schedule.is_constant else f"{schedule.start:g}→{schedule.end:g} {schedule.kind}"


def methods() -> list[Method]:
    """Every reported row's template: Table 2's methods on the routing model, then none / CFG / SG on the masking
    model."""
    rising = GammaSchedule(0.0, SG_FID_PEAK, "cosine")
    falling = GammaSchedule(SG_FID_PEAK, 0.0, "cosine")
    return [
        Method("routing", "none"),
        Method("routing", "cfg"),
        Method("routing", "ag"),
        Method("routing", "icg"),
        Method("routing", "sg"),
        Method("routing", "ag+sg", rising, falling),
        Method("masking", "none"),
        Method("masking", "cfg"),
        Method("masking", "sg"),
    ]
