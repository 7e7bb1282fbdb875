"""Guided sampling: integrators over the guided velocity, per-sample seeds, the batch loop and the outputs."""

from sparseguidance.sampling.integrators import euler, euler_maruyama, heun
from sparseguidance.sampling.sampler import (
    INTEGRATORS,
    Cost,
    Samples,
    class_labels,
    cost_of,
    generate,
    sample_batch,
)
from sparseguidance.sampling.seeds import gaussian, sample_generators, sample_seed

__all__ = [
    "INTEGRATORS",
    "Cost",
    "Samples",
    "class_labels",
    "cost_of",
    "euler",
    "euler_maruyama",
    "gaussian",
    "generate",
    "heun",
    "sample_batch",
    "sample_generators",
    "sample_seed",
]
