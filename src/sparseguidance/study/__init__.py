"""`sparseguidance study`: the paper's comparison on the shipped MNIST models, cached per cell, with a written report.

presets: the study's sizes and reported rows; cells: one setting's images on one seed set, sampled, scored and
cached; finetune: Fig. 5's dense fine-tuning runs; runner: tuning (the heat maps' grid), reported rows, training
points, distances; report: tables, figures and summary.json.
"""

from sparseguidance.study.cells import Cell, CellCache, CellResult, CellSampler, cell_key
from sparseguidance.study.presets import PRESETS, Method, StudyPreset, get_preset, methods
from sparseguidance.study.report import pareto_front, write_report
from sparseguidance.study.runner import StudyResults, best, run_study, select

__all__ = [
    "PRESETS",
    "Cell",
    "CellCache",
    "CellResult",
    "CellSampler",
    "Method",
    "StudyPreset",
    "StudyResults",
    "best",
    "cell_key",
    "get_preset",
    "methods",
    "pareto_front",
    "run_study",
    "select",
    "write_report",
]
