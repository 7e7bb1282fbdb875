"""Guidance methods of PAPER.md §2 as declarations of a strong and a weak branch.

Every method is the same rule, D = ω·D_strong + (1 − ω)·D_weak, with ω = 1 meaning "strong branch
alone"; the methods differ only in what each branch runs: which model, which condition (the sample's
class c, the null class ∅, or an independently drawn class c′), and at which token sparsity γ.
Outside the guidance interval [t_lo, t_hi] only the strong branch runs (one forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from sparseguidance.config import check_types
from sparseguidance.errors import ConfigError
from sparseguidance.guidance.schedules import GammaSchedule, as_schedule

ModelRole = Literal["main", "weak"]
Condition = Literal["class", "null", "independent"]
PrefixKey = tuple[ModelRole, Condition]


@dataclass(frozen=True)
class Branch:
    """One prediction D(x_t, t, condition; γ) of one model."""

    model: ModelRole = "main"
    condition: Condition = "class"
    gamma: GammaSchedule = field(default_factory=GammaSchedule)

    @property
    def prefix_key(self) -> PrefixKey:
        """(model, condition): branches that agree on it see the same input up to the first route, whatever γ."""
        return self.model, self.condition


@dataclass(frozen=True)
class Guidance:
    """Base of all methods: D = ω·D_strong + (1 − ω)·D_weak inside the interval, D_strong outside it."""

    scale: float = 1.0  # ω
    interval: tuple[float, float] = (0.0, 1.0)  # guide only for t in [t_lo, t_hi]
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_types(self, "guidance ")
        lo, hi = self.interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"guidance interval must satisfy 0 ≤ t_lo ≤ t_hi ≤ 1, got {lo}:{hi}")

    @property
    def strong(self) -> Branch:
        """The branch that ω multiplies."""
        return Branch()

    @property
    def weak(self) -> Branch | None:
        """The branch that 1 − ω multiplies; None for no guidance."""
        return None

    def branches(self, t: float) -> tuple[Branch, ...]:
        """The branches to evaluate at time t: both inside the interval, the strong one alone outside."""
        weak = self.weak
        if weak is None or not self.interval[0] <= t <= self.interval[1]:
            return (self.strong,)
        return (self.strong, weak)

    def combine(self, d_strong: torch.Tensor, d_weak: torch.Tensor | None) -> torch.Tensor:
        """ω·D_strong + (1 − ω)·D_weak, or D_strong when there is no weak prediction."""
        if d_weak is None:
            return d_strong
        return torch.lerp(d_weak, d_strong, self.scale)

    @property
    def uses_weak_model(self) -> bool:
        """True when a second (auxiliary) model is needed."""
        return any(b is not None and b.model == "weak" for b in (self.strong, self.weak))


@dataclass(frozen=True)
class NoGuidance(Guidance):
    """No guidance: the conditional prediction D(c; γ) alone (γ = 0: the dense model)."""

    gamma: float | GammaSchedule = 0.0
    name: ClassVar[str] = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "gamma", as_schedule(self.gamma))

    @property
    def strong(self) -> Branch:
        return Branch("main", "class", self.gamma)


@dataclass(frozen=True)
class CFG(Guidance):
    """Classifier-free guidance (Ho & Salimans): D = ω·D(c) + (1 − ω)·D(∅), both dense."""

    name: ClassVar[str] = "cfg"

    @property
    def weak(self) -> Branch:
        return Branch("main", "null")


@dataclass(frozen=True)
class ICG(Guidance):
    """Independent condition guidance (arXiv 2407.02687): D = ω·D(c) + (1 − ω)·D(c′), c′ drawn uniformly."""

    name: ClassVar[str] = "icg"

    @property
    def weak(self) -> Branch:
        return Branch("main", "independent")


@dataclass(frozen=True)
class AG(Guidance):
    """AutoGuidance (Karras et al.): D = ω·D_main(c) + (1 − ω)·D_aux(c), the auxiliary a weaker model."""

    name: ClassVar[str] = "ag"

    @property
    def weak(self) -> Branch:
        return Branch("weak", "class")


@dataclass(frozen=True)
class SparseGuidance(Guidance):
    """Base of the sparse methods: the strong branch at γ_strong, the weak branch at γ_weak."""

    gamma_strong: float | GammaSchedule = 0.5
    gamma_weak: float | GammaSchedule = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "gamma_strong", as_schedule(self.gamma_strong))
        object.__setattr__(self, "gamma_weak", as_schedule(self.gamma_weak))
        strong, weak = self.gamma_strong, self.gamma_weak
        if not self.uses_weak_model and strong.is_constant and weak.is_constant and strong.start > weak.start:
            # The capacity gap is the guidance signal; swapped rates would guide away from the strong branch.
            raise ConfigError(f"{self.name} needs γ_strong ≤ γ_weak, got {strong.start} > {weak.start}")


@dataclass(frozen=True)
class SG(SparseGuidance):
    """Sparse Guidance (PAPER.md §2): D = ω·D(c; γ_strong) + (1 − ω)·D(c; γ_weak), both branches conditional."""

    name: ClassVar[str] = "sg"

    @property
    def strong(self) -> Branch:
        return Branch("main", "class", self.gamma_strong)

    @property
    def weak(self) -> Branch:
        return Branch("main", "class", self.gamma_weak)


@dataclass(frozen=True)
class CFGSG(SparseGuidance):
    """CFG + SG (PAPER.md §2): D = ω·D(c; γ_strong) + (1 − ω)·D(∅; γ_weak), weak branch unconditional and sparse."""

    name: ClassVar[str] = "cfg+sg"

    @property
    def strong(self) -> Branch:
        return Branch("main", "class", self.gamma_strong)

    @property
    def weak(self) -> Branch:
        return Branch("main", "null", self.gamma_weak)


@dataclass(frozen=True)
class AGSG(SparseGuidance):
    """AG + SG (PAPER.md §2, SG_FID): D = ω·D_main(c; γ_strong) + (1 − ω)·D_aux(c; γ_weak), γ per step."""

    gamma_strong: float | GammaSchedule = 0.0
    gamma_weak: float | GammaSchedule = 0.0
    name: ClassVar[str] = "ag+sg"

    @property
    def strong(self) -> Branch:
        return Branch("main", "class", self.gamma_strong)

    @property
    def weak(self) -> Branch:
        return Branch("weak", "class", self.gamma_weak)


GUIDANCE_METHODS: dict[str, type[Guidance]] = {cls.name: cls for cls in (NoGuidance, CFG, SG, CFGSG, AG, AGSG, ICG)}


def make_guidance(
    name: str,
    scale: float = 1.0,
    gamma_strong: float | GammaSchedule | None = None,
    gamma_weak: float | GammaSchedule | None = None,
    interval: tuple[float, float] = (0.0, 1.0),
) -> Guidance:
    """Build a named method; γ settings are refused by methods that have no sparse branch."""
    if name not in GUIDANCE_METHODS:
        raise ConfigError(f"unknown guidance {name!r}; known: {', '.join(GUIDANCE_METHODS)}")
    cls = GUIDANCE_METHODS[name]
    kwargs: dict[str, object] = {"scale": scale, "interval": interval}
    if issubclass(cls, SparseGuidance):
        kwargs.update({k: v for k, v in (("gamma_strong", gamma_strong), ("gamma_weak", gamma_weak)) if v is not None})
    elif cls is NoGuidance and gamma_strong is not None:
        kwargs["gamma"] = gamma_strong
    elif gamma_strong is not None or gamma_weak is not None:
        raise ConfigError(f"guidance {name!r} runs dense branches; it takes no γ (use sg, cfg+sg or ag+sg)")
    if gamma_weak is not None and cls is NoGuidance:
        raise ConfigError("guidance 'none' has no weak branch; it takes no γ_weak")
    return cls(**kwargs)  # type: ignore[arg-type]
