"""What a network predicts, and the one map that turns it into the velocity v(x_t, t) every sampler integrates.

Our path: x_t = (1 − t)·z + t·x, t = 0 noise, t = 1 data, v = x − z. The other families write the same noisy
image on their own axes, a rescaling of x_t at a matching noise level:

    EDM  (VE): x_ve = x + σ·z    = x_t / t           with σ = (1 − t)/t              (t = 1/(1 + σ))
    DDPM (VP): x_vp = α·x + σ·z  = x_t·(α + σ)       with α/σ = t/(1 − t), α² + σ² = 1  (t = α/(α + σ))

Each prediction maps (x_t, t) to the network's inputs and the network's output back to v. The output map is
affine in the output with coefficients of t alone, so a weighted sum with weights summing to one (every
guidance rule) gives the same result on velocities as on ε or on D: guidance never learns the parameterisation.
A family is defined on a range of noise levels only; outside it the velocity is held at the nearest end,
v(x, t) = v(x, clamp(t)) (its own samplers likewise start from pure noise at their largest noise level).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import nn

from sparseguidance.config import from_dict
from sparseguidance.errors import ConfigError


@dataclass(frozen=True)
class Velocity:
    """Flow velocity on our path, t fed as is (SiT, every model this library trains): both maps are the identity.

    The other predictions subclass it and override `t_range`, `inputs` and `velocity`.
    """

    name: ClassVar[str] = "velocity"

    @property
    def t_range(self) -> tuple[float, float]:
        """The times on which the network is defined; others are clamped into this range."""
        return 0.0, 1.0

    def times(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """t as a float64 (B,) tensor on x's device, clamped into `t_range`."""
        return torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0]).clamp(*self.t_range)

    def inputs(self, x: torch.Tensor, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor | float]:
        """The network's (input, time input) for the state x_t at time t."""
        return x, t

    def velocity(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """v(x_t, t) from the network's output at (x_t, t)."""
        return output

    def describe(self) -> str:
        """One line naming the prediction and its constants."""
        return "velocity (flow matching, t ∈ [0, 1] as is)"


def column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 coefficients -> (B, 1, 1, 1) in the dtype of `like`, to scale images."""
    return values.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


@dataclass(frozen=True)
class EDM(Velocity):
    """EDM's preconditioned denoiser (Karras et al. 2022, Table 1), as TREAD's training code wraps its DiT.

        D(x_ve; σ) = c_skip·x_ve + c_out·F(c_in·x_ve, c_noise),   c_skip = σd²/(σ² + σd²),
        c_out = σ·σd/√(σ² + σd²),   c_in = 1/√(σ² + σd²),   c_noise = ln(σ)/4

    On our path (x_ve = x_t/t, σ = (1 − t)/t) with s = t·√(σ² + σd²) = √((1 − t)² + σd²·t²):
        network input c_in·x_ve = x_t/s,   time input ln((1 − t)/t)/4,
        v = (D − x_t)/(1 − t) = (σd²·t − (1 − t))/s² · x_t + σd/s · F
    σ stays in EDM's sampling range [σ_min, σ_max], i.e. t ∈ [1/(1 + σ_max), 1/(1 + σ_min)].
    """

    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    name: ClassVar[str] = "edm"

    @property
    def t_range(self) -> tuple[float, float]:
        """t = 1/(1 + σ) at σ_max and σ_min."""
        return 1 / (1 + self.sigma_max), 1 / (1 + self.sigma_min)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """s = √((1 − t)² + σd²·t²)."""
        return ((1 - t) ** 2 + self.sigma_data**2 * t**2).sqrt()

    def inputs(self, x: torch.Tensor, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(c_in·x_ve, c_noise) = (x_t/s, ln((1 − t)/t)/4)."""
        t = self.times(t, x)
        return x / column(self.scale(t), x), torch.log((1 - t) / t) / 4

    def velocity(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """v = (σd²·t − (1 − t))/s² · x_t + σd/s · F."""
        t = self.times(t, x)
        s = self.scale(t)
        return column((self.sigma_data**2 * t - (1 - t)) / s**2, x) * x + column(self.sigma_data / s, x) * output

    def describe(self) -> str:
        """One line naming the prediction and its constants."""
        return f"edm (EDM denoiser, σ_data {self.sigma_data:g}, σ in [{self.sigma_min:g}, {self.sigma_max:g}])"


@dataclass(frozen=True)
class DDPMEpsilon(Velocity):
    """DDPM ε-prediction (Ho et al. 2020) as the released DiT weights: x_k = √ᾱ_k·x + √(1 − ᾱ_k)·ε.

    ᾱ_k = Π_{j≤k} (1 − β_j) with β linear from `beta_start` to `beta_end` over `num_steps` steps; the network
    embeds the step k. On our path α = t/r, σ = (1 − t)/r with r = √(t² + (1 − t)²), log-SNR λ = 2·logit(t):
        network input x_vp = x_t/r,   time input k(t): piecewise linear in λ between the integer steps,
        v = x̂ − ε̂ = (x_t − ε̂)/t   (x̂ = (x_t − (1 − t)·ε̂)/t)
    k(t) is exact at the integer steps, so any grid through them is DDIM on those steps; between them the
    network sees a fractional step (its sin-cos embedding is smooth in k). t stays in [t(num_steps − 1), t(0)].
    """

    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000
    name: ClassVar[str] = "eps"

    @cached_property
    def log_snr(self) -> torch.Tensor:
        """λ_k = ln(ᾱ_k/(1 − ᾱ_k)) for k = 0..num_steps − 1 (float64, decreasing)."""
        betas = torch.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=torch.float64)
        alpha_bar = torch.cumprod(1 - betas, dim=0)
        return torch.log(alpha_bar / (1 - alpha_bar))

    @property
    def t_range(self) -> tuple[float, float]:
        """t = sigmoid(λ/2) at the last and the first step."""
        return tuple(torch.sigmoid(self.log_snr[[-1, 0]] / 2).tolist())

    def step(self, t: torch.Tensor) -> torch.Tensor:
        """The continuous DDPM step k(t) at log-SNR 2·logit(t), linear in λ between integer steps."""
        rising = -self.log_snr.to(t.device)  # −λ_k increases with k
        target = -2 * torch.logit(t)
        j = (torch.searchsorted(rising, target) - 1).clamp(0, self.num_steps - 2)
        return j + (target - rising[j]) / (rising[j + 1] - rising[j])

    def inputs(self, x: torch.Tensor, t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_vp, k) = (x_t/r, k(t))."""
        t = self.times(t, x)
        return x / column((t**2 + (1 - t) ** 2).sqrt(), x), self.step(t)

    def velocity(self, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """v = (x_t − ε̂)/t."""
        return (x - output) / column(self.times(t, x), x)

    def describe(self) -> str:
        """One line naming the prediction and its constants."""
        return f"eps (DDPM ε, linear β {self.beta_start:g}..{self.beta_end:g} over {self.num_steps} steps)"


PREDICTIONS: dict[str, type[Velocity]] = {p.name: p for p in (Velocity, DDPMEpsilon, EDM)}


def make_prediction(name: str, **constants: Any) -> Velocity:
    """A prediction by name (`velocity`, `eps`, `edm`) with its constants (e.g. sigma_data)."""
    if name not in PREDICTIONS:
        raise ConfigError(f"unknown prediction {name!r}; known: {', '.join(PREDICTIONS)}")
    return from_dict(PREDICTIONS[name], constants, where=f"prediction {name}")


class VelocityModel(nn.Module):
    """A network that predicts ε or D, seen as a velocity model: the same forward, sparsity passed straight through."""

    def __init__(self, network: nn.Module, prediction: Velocity) -> None:
        super().__init__()
        self.network = network
        self.prediction = prediction

    @property
    def config(self) -> Any:
        """The network's ModelConfig (architecture, routes; FLOPs are the network's)."""
        return self.network.config

    @property
    def null_class(self) -> int:
        """The network's null class ∅."""
        return self.network.null_class

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor, **sparsity: Any) -> torch.Tensor:
        """v(x_t, t, y) at the sparsity given (gamma, generator, keep, routes go to the network unchanged)."""
        x_in, t_in = self.prediction.inputs(x, t)
        return self.prediction.velocity(self.network(x_in, t_in, y, **sparsity), x, t)


def as_velocity(network: nn.Module, prediction: Velocity) -> nn.Module:
    """The network itself when it predicts velocity (untouched), else wrapped in a VelocityModel."""
    return network if type(prediction) is Velocity else VelocityModel(network, prediction)


def unwrap(model: nn.Module) -> tuple[nn.Module, Velocity]:
    """(network, prediction) of a model from `as_velocity`."""
    if isinstance(model, VelocityModel):
        return model.network, model.prediction
    return model, Velocity()


__all__ = ["DDPMEpsilon", "EDM", "PREDICTIONS", "Velocity", "VelocityModel", "as_velocity", "make_prediction", "unwrap"]
