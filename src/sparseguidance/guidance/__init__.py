"""Guidance: the methods of PAPER.md §2 as strong/weak branch declarations, and γ schedules."""

from sparseguidance.guidance.methods import (
    AG,
    AGSG,
    CFG,
    CFGSG,
    GUIDANCE_METHODS,
    ICG,
    SG,
    Branch,
    Guidance,
    NoGuidance,
    SparseGuidance,
    make_guidance,
)
from sparseguidance.guidance.schedules import SCHEDULE_KINDS, GammaSchedule, as_schedule, parse_schedule

__all__ = [
    "AG",
    "AGSG",
    "CFG",
    "CFGSG",
    "GUIDANCE_METHODS",
    "ICG",
    "SCHEDULE_KINDS",
    "SG",
    "Branch",
    "GammaSchedule",
    "Guidance",
    "NoGuidance",
    "SparseGuidance",
    "as_schedule",
    "make_guidance",
    "parse_schedule",
]
