"""Integrators of dx/dt = v(x, t) from t = 0 (noise) to t = 1 (data), all with one signature.

`integrator(velocity, x, num_steps, generators) -> x at t = 1`, where `velocity(x, t, step)` is the (guided)
velocity and `step` the index of the sampling step it belongs to (γ schedules read it). Time grid t_i = i/N,
i = 0..N−1, computed as i / N (as flops.euler_step_flops does, so that
interval bounds compare alike). Integrators know nothing of routing, masking or guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sparseguidance.sampling.seeds import gaussian
from sparseguidance.sparsity import Generators

Velocity = Callable[[torch.Tensor, float, int], torch.Tensor]  # (x, t, step) -> dx/dt
Integrator = Callable[[Velocity, torch.Tensor, int, Generators], torch.Tensor]


def euler(velocity: Velocity, x: torch.Tensor, num_steps: int, generators: Generators = None) -> torch.Tensor:
    """Euler, the paper's sampler (40 steps): x_{i+1} = x_i + v(x_i, t_i)/N; N evaluations."""
    for i in range(num_steps):
        x = x + velocity(x, i / num_steps, i) / num_steps
    return x


def heun(velocity: Velocity, x: torch.Tensor, num_steps: int, generators: Generators = None) -> torch.Tensor:
    """Heun's second-order method (EDM, Karras et al. 2022, Alg. 1) on the flow ODE; 2N − 1 evaluations.

    The corrector averages v at t_i and at the Euler guess at t_{i+1} (evaluated with step index i); as in
    EDM the last step is plain Euler, which spares an evaluation at the t = 1 boundary.
    """
    h = 1.0 / num_steps
    for i in range(num_steps):
        v = velocity(x, i / num_steps, i)
        guess = x + h * v
        x = guess if i == num_steps - 1 else x + h / 2 * (v + velocity(guess, (i + 1) / num_steps, i))
    return x


def euler_maruyama(velocity: Velocity, x: torch.Tensor, num_steps: int, generators: Generators = None) -> torch.Tensor:
    """Euler–Maruyama on the SDE with the flow's marginals (SiT's SDE sampler, diffusion form "sigma"); N evaluations.

        dx = [v + w(t)·s(x, t)] dt + √(2·w(t)) dW,   w(t) = 1 − t,   s(x, t) = (t·v − x)/(1 − t)

    s is the score of x_t = t·x + (1 − t)·z (from z = x_t − t·v), so the drift is (1 + t)·v − x and w
    vanishes at t = 1; the last step is deterministic (Euler on v). Noise row k comes from generators[k].
    """
    h = 1.0 / num_steps
    for i in range(num_steps - 1):
        t = i / num_steps
        drift = (1 + t) * velocity(x, t, i) - x  # v + w·s with w = 1 − t
        x = x + h * drift + math.sqrt(2 * (1 - t) * h) * gaussian(x.shape, generators, x.device).to(x)
    return x + h * velocity(x, (num_steps - 1) / num_steps, num_steps - 1)
