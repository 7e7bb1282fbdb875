"""γ schedules over the sampling steps: constant, linear or cosine from a start to an end value."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from sparseguidance.errors import ConfigError
from sparseguidance.sparsity import check_gamma

ScheduleKind = Literal["constant", "linear", "cosine"]
SCHEDULE_KINDS: tuple[str, ...] = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class GammaSchedule:
    """γ at sampling step i of N, going from `start` (step 0) to `end` (step N − 1), both endpoints included.

    linear: γ = start + (end − start)·s;  cosine: γ = end + (start − end)·(1 + cos πs)/2;  s = i / (N − 1).
    """

    start: float = 0.0
    end: float | None = None  # None: same as start
    kind: ScheduleKind = "constant"
    label: str = field(default="γ", compare=False)  # how errors name it, e.g. "gamma_strong"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ConfigError(f"unknown γ schedule {self.kind!r}; known: {', '.join(SCHEDULE_KINDS)}")
        if self.end is None:
            object.__setattr__(self, "end", self.start)
        name = self.label if self.start == self.end else f"{self.label} (schedule)"
        check_gamma(self.start, name)
        check_gamma(self.end, name)
        if self.kind == "constant" and self.end != self.start:
            raise ConfigError(f"a constant γ schedule has one value, got {self.start} → {self.end}")

    def at(self, step: int, num_steps: int) -> float:
        """γ at step `step` of `num_steps`."""
        if not 0 <= step < num_steps:
            raise ValueError(f"step {step} outside 0..{num_steps - 1}")
        s = step / (num_steps - 1) if num_steps > 1 else 0.0
        if self.kind == "linear":
            return self.start + (self.end - self.start) * s
        if self.kind == "cosine":
            return self.end + (self.start - self.end) * (1 + math.cos(math.pi * s)) / 2
        return self.start

    @property
    def is_constant(self) -> bool:
        """True when γ does not change over the steps."""
        return self.start == self.end


def as_schedule(value: float | GammaSchedule) -> GammaSchedule:
    """A constant schedule from a number; a schedule as it is."""
    return value if isinstance(value, GammaSchedule) else GammaSchedule(float(value))


def parse_schedule(text: str, kind: str = "constant", label: str = "γ") -> GammaSchedule:
    """Parse `0.5` (constant) or `start:end` (with `kind`, linear if `kind` is constant) into a schedule."""
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        raise ConfigError(f"{label} must be a number or start:end, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise ConfigError(f"{label} must be a number or start:end, got {text!r}")
    if len(parts) == 1:
        return GammaSchedule(parts[0], label=label)
    kind = "linear" if kind == "constant" else kind
    return GammaSchedule(parts[0], parts[1], kind, label=label)  # type: ignore[arg-type]
