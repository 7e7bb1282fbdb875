"""Prediction adapters: each family's own sampler on the same network, an exact Gaussian toy, and the loaders.

The family samplers below are written from their papers, not from models.prediction: EDM's Euler step in σ
(Karras et al. 2022, Alg. 1 without the correction) on D(x; σ) = c_skip·x + c_out·F(c_in·x, ln σ / 4), and DDIM
(η = 0) on ε with DDPM's linear β (numpy, as DiT builds it; fractional steps by numpy.interp in log-SNR).
"""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_model
from torch import nn

from sparseguidance.checkpoints import load_model, open_checkpoint, save_model
from sparseguidance.cli import main
from sparseguidance.config import to_dict
from sparseguidance.errors import CheckpointError
from sparseguidance.flops import euler_step_flops
from sparseguidance.guidance import make_guidance
from sparseguidance.guidance.evaluate import guided_velocity
from sparseguidance.models import DiT, ModelConfig
from sparseguidance.models.prediction import EDM, DDPMEpsilon, Velocity, VelocityModel, as_velocity
from sparseguidance.sampling import generate, sample_batch, sample_generators
from sparseguidance.training.trainer import initial_weights

SIGMA_DATA = 0.5
BETAS = np.linspace(1e-4, 0.02, 1000)  # DiT's "linear" schedule
ALPHA_BAR = np.cumprod(1 - BETAS)
LOG_SNR = np.log(ALPHA_BAR / (1 - ALPHA_BAR))


def edm_denoiser(network: nn.Module, x: torch.Tensor, sigma: float, y: torch.Tensor) -> torch.Tensor:
    """D(x; σ) = c_skip·x + c_out·F(c_in·x, ln σ / 4) with EDM's coefficients (x float64, F in float32)."""
    c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
    c_out = sigma * SIGMA_DATA / math.sqrt(sigma**2 + SIGMA_DATA**2)
    c_in = 1 / math.sqrt(sigma**2 + SIGMA_DATA**2)
    noise = torch.full((x.shape[0],), math.log(sigma) / 4)
    return c_skip * x + c_out * network((c_in * x).float(), noise, y).double()


def ddpm_step(alpha_bar: float) -> float:
    """The DDPM step of a noise level: integer steps exactly, linear in log-SNR between them."""
    return float(np.interp(-math.log(alpha_bar / (1 - alpha_bar)), -LOG_SNR, np.arange(1000)))


def guided(predict, network, x, level, labels, scale):  # noqa: ANN001, ANN201 - test helper
    """CFG in the family's own quantity: lerp(pred(∅), pred(c), ω), or pred(c) at ω = 1."""
    conditional = predict(network, x, level, labels)
    if scale == 1.0:
        return conditional
    return torch.lerp(predict(network, x, level, torch.full_like(labels, network.null_class)), conditional, scale)


def edm_euler(network, x_ve, sigmas, labels, scale):  # noqa: ANN001, ANN201
    """EDM's Euler step in σ: x ← x + (σ' − σ)·(x − D(x; σ))/σ, through the σ grid given (ending at 0)."""
    for sigma, next_sigma in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = guided(edm_denoiser, network, x_ve, sigma, labels, scale)
        x_ve = x_ve + (next_sigma - sigma) * (x_ve - denoised) / sigma
    return x_ve


def ddpm_eps(network: nn.Module, x: torch.Tensor, alpha_bar: float, y: torch.Tensor) -> torch.Tensor:
    """ε̂ of the network at the VP state x of noise level ᾱ."""
    return network(x.float(), torch.full((x.shape[0],), ddpm_step(alpha_bar)), y).double()


def ddim(network, x_vp, alpha_bars, labels, scale):  # noqa: ANN001, ANN201
    """DDIM (η = 0): x̂ = (x − √(1 − ᾱ)·ε̂)/√ᾱ, x ← √ᾱ'·x̂ + √(1 − ᾱ')·ε̂, through the ᾱ grid given (ending at 1)."""
    for a, next_a in zip(alpha_bars[:-1], alpha_bars[1:], strict=True):
        eps = guided(ddpm_eps, network, x_vp, a, labels, scale)
        x0 = (x_vp - math.sqrt(1 - a) * eps) / math.sqrt(a)
        x_vp = math.sqrt(next_a) * x0 + math.sqrt(1 - next_a) * eps
    return x_vp


class Recorder(nn.Module):
    """A velocity model that records the state x_t of every call (the first `batch` rows) and passes it on."""

    def __init__(self, model: nn.Module, batch: int) -> None:
        super().__init__()
        self.model, self.batch, self.states = model, batch, []
        self.config, self.null_class = model.config, model.null_class

    def forward(self, x, t, y, **sparsity):  # noqa: ANN001, ANN201
        self.states.append(x[: self.batch].double().clone())
        return self.model(x, t, y, **sparsity)


@pytest.mark.parametrize("scale", [1.0, 2.0], ids=["none", "cfg"])
@pytest.mark.parametrize("family", ["edm", "eps"])
def test_our_euler_is_the_familys_own_sampler_on_the_matched_grid(family, scale):
    """Our Euler on t_i = i/N through the adapter = EDM Euler at σ_i = (1 − t_i)/t_i, or DDIM at ᾱ_i = t_i²/r_i².

    Both start from our state at t_1 (at t_0 = 0, pure noise, the family's network is held at its largest noise
    level: see test_velocity_is_held_outside_the_familys_noise_levels); steps 1..N − 1 must agree to rounding.
    """
    network = tiny_model(seed=3, learn_sigma=family == "eps")
    prediction = EDM() if family == "edm" else DDPMEpsilon()
    labels, n = torch.tensor([0, 3, 4]), 8
    recorder = Recorder(as_velocity(network, prediction), len(labels))
    guidance = make_guidance("cfg" if scale != 1 else "none", scale)
    ours = sample_batch(guidance, {"main": recorder}, labels, range(3), steps=n)
    t = np.arange(n + 1) / n
    states = recorder.states  # x_t at t_0, …, t_{N−1}
    with torch.no_grad():
        if family == "edm":
            sigmas = [*((1 - t[1:n]) / t[1:n]), 0.0]  # x_ve = x_t / t
            theirs = edm_euler(network, states[1] / t[1], sigmas, labels, scale)
        else:
            alpha_bars = [*(t[1:n] ** 2 / (t[1:n] ** 2 + (1 - t[1:n]) ** 2)), 1.0]  # x_vp = x_t / r
            theirs = ddim(network, states[1] / math.hypot(t[1], 1 - t[1]), alpha_bars, labels, scale)
    assert (ours.double() - theirs).abs().max() < 2e-6 * theirs.abs().max()  # float32 rounding: 1–4e-7 measured


def test_every_intermediate_state_matches_edm_euler():
    """The same comparison step by step: x_t/t after our step i is EDM's x at σ_i."""
    network = tiny_model(seed=4)
    labels, n = torch.tensor([1, 2]), 6
    recorder = Recorder(as_velocity(network, EDM()), len(labels))
    sample_batch(make_guidance("none"), {"main": recorder}, labels, range(2), steps=n)
    with torch.no_grad():
        for i in range(1, n - 1):
            t, t_next = i / n, (i + 1) / n
            theirs = edm_euler(network, recorder.states[i] / t, [(1 - t) / t, (1 - t_next) / t_next], labels, 1.0)
            torch.testing.assert_close(recorder.states[i + 1] / t_next, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction", [EDM(), DDPMEpsilon()], ids=["edm", "eps"])
def test_sparse_guidance_on_velocities_is_guidance_on_the_familys_output(prediction):
    """SG's lerp of velocities equals the velocity of the lerp of raw ε or F (the map is affine, weights sum to 1)."""
    network = tiny_model(seed=5, routes=((1, 2),))
    x, labels, t = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2]), 0.3
    guidance = make_guidance("sg", 2.5, 0.25, 0.5)
    with torch.no_grad():
        ours = guided_velocity(
            x, t, 4, guidance=guidance, models={"main": as_velocity(network, prediction)}, labels=labels,
            num_steps=10, generators=sample_generators(0, range(3)),
        )  # fmt: skip
        generators = sample_generators(0, range(3))  # the same streams: strong branch first, then weak
        x_in, t_in = prediction.inputs(x, t)
        strong = network(x_in, t_in, labels, gamma=0.25, generator=generators)
        weak = network(x_in, t_in, labels, gamma=0.5, generator=generators)
    torch.testing.assert_close(ours, prediction.velocity(torch.lerp(weak, strong, 2.5), x, t), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(strong, weak)  # the branches differ: a pass-through bug would show


def test_velocity_is_the_identity():
    network = tiny_model()
    assert as_velocity(network, Velocity()) is network
    x, t, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(VelocityModel(network, Velocity())(x, t, y), network(x, t, y))


@pytest.mark.parametrize("prediction", [EDM(), DDPMEpsilon()], ids=["edm", "eps"])
def test_velocity_is_held_outside_the_familys_noise_levels(prediction):
    model = as_velocity(tiny_model(seed=1), prediction)
    lo, hi = prediction.t_range
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(model(x, 0.0, y), model(x, lo, y)) and torch.equal(model(x, 1.0, y), model(x, hi, y))
        assert torch.isfinite(model(x, 0.0, y)).all()
    if isinstance(prediction, EDM):
        assert (lo, hi) == pytest.approx((1 / 81, 1 / 1.002))  # σ from 80 down to 0.002
    else:  # t(k) = α/(α + σ) at the last and first of DiT's 1000 steps
        a = np.sqrt(ALPHA_BAR[[-1, 0]])
        assert (lo, hi) == pytest.approx(tuple(a / (a + np.sqrt(1 - a**2))))


def test_ddpm_step_is_exact_at_integer_steps():
    t = torch.tensor(
        [np.sqrt(ALPHA_BAR[k]) / (np.sqrt(ALPHA_BAR[k]) + np.sqrt(1 - ALPHA_BAR[k])) for k in (0, 17, 500, 999)]
    )
    torch.testing.assert_close(DDPMEpsilon().step(t.double()), torch.tensor([0.0, 17, 500, 999], dtype=torch.float64))


# -------------------------------------------------------------------------------- exact Gaussian toy
class GaussianToy(nn.Module):
    """The exact prediction of data N(μ_y, s²) per class, in one family's own coordinates (1 channel, 1 pixel)."""

    def __init__(self, means: list[float], std: float, family: str) -> None:
        super().__init__()
        self.means, self.std, self.family = torch.tensor(means, dtype=torch.float64), std, family
        self.config = ModelConfig(1, 1, 1, 1, 1, 1, num_classes=len(means))
        self.null_class = len(means)

    def forward(self, x, t, y, gamma=0.0, generator=None):  # noqa: ANN001, ANN201
        mu, s2, x, t = self.means[y].view(-1, 1, 1, 1), self.std**2, x.double(), t.view(-1, 1, 1, 1)
        if self.family == "edm":  # input c_in·x_ve, time ln σ / 4; E[x | x_ve] = μ + s²/(s² + σ²)·(x_ve − μ)
            sigma = torch.exp(4 * t)
            x_ve = x * (sigma**2 + SIGMA_DATA**2).sqrt()
            denoised = mu + s2 / (s2 + sigma**2) * (x_ve - mu)
            c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
            return (denoised - c_skip * x_ve) / (sigma * SIGMA_DATA / (sigma**2 + SIGMA_DATA**2).sqrt())
        # input x_vp at step k; E[ε | x_vp] = σ·(x_vp − α·μ)/(α²·s² + σ²)
        alpha_bar = torch.sigmoid(torch.from_numpy(np.interp(t.flatten().numpy(), np.arange(1000), LOG_SNR)))
        alpha, sigma = alpha_bar.sqrt().view(-1, 1, 1, 1), (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
        return sigma * (x - alpha * mu) / (alpha**2 * s2 + sigma**2)


def exact_velocity(x: torch.Tensor, t: float, mu: torch.Tensor, std: float) -> torch.Tensor:
    """v = μ + (t·s² − (1 − t))/(t²·s² + (1 − t)²)·(x_t − t·μ) for data N(μ, s²) on our path."""
    return mu + (t * std**2 - (1 - t)) / (t**2 * std**2 + (1 - t) ** 2) * (x - t * mu)


@pytest.mark.parametrize("prediction", [EDM(), DDPMEpsilon()], ids=["edm", "eps"])
def test_gaussian_toy_gives_the_exact_velocity_and_samples(prediction):
    toy = GaussianToy([1.5, -1.0], 0.5, prediction.name)
    model = as_velocity(toy, prediction)
    x, y = torch.randn(64, 1, 1, 1, dtype=torch.float64), torch.tensor([0, 1] * 32)
    mu = toy.means[y].view(-1, 1, 1, 1)
    lo, hi = prediction.t_range
    for t in (lo, 0.1, 0.5, 0.9, hi):
        torch.testing.assert_close(model(x, t, y), exact_velocity(x, t, mu, 0.5), rtol=1e-9, atol=1e-9)
    images = generate(make_guidance("none"), {"main": model}, torch.tensor([1] * 2000), steps=100).images
    assert images.mean() == pytest.approx(-1.0, abs=0.05) and images.std() == pytest.approx(0.5, abs=0.03)


# ------------------------------------------------------------------------------------------- loaders
def tread_checkpoint(path, network: DiT) -> None:  # noqa: ANN001
    """What TREAD's train.py writes: EDMPrecond(model=DiT)'s state dicts, so every key starts with `model.`."""
    wrapped = {f"model.{k}": v for k, v in network.state_dict().items()}
    torch.save({"model_state_dict": wrapped, "ema_state_dict": wrapped, "optimizer_state_dict": {}, "step": 7}, path)


def outputs(model: nn.Module, gamma: float = 0.0) -> torch.Tensor:
    """The model's output on fixed inputs (t = 0.4), at γ with a fixed token subset draw."""
    x, y = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])
    with torch.no_grad():
        return model(x, 0.4, y, gamma=gamma, generator=torch.Generator().manual_seed(1))


def test_tread_latest_pt_loads_as_an_edm_model_with_the_routes_given(tmp_path):
    network = tiny_model(seed=2, hidden_size=64, num_heads=1)
    tread_checkpoint(tmp_path / "latest.pt", network)
    loaded = open_checkpoint(tmp_path / "latest.pt")
    assert loaded.prediction == EDM() and "model." in loaded.source and isinstance(loaded.model, VelocityModel)
    assert loaded.model.config == network.config
    torch.testing.assert_close(outputs(loaded.model), outputs(as_velocity(network, EDM())), rtol=0, atol=0)
    routed = open_checkpoint(tmp_path / "latest.pt", routes=[(1, 2)], train_gamma=0.5).model
    assert routed.config.routes == ((1, 2),) and routed.config.train_gamma == 0.5
    assert not torch.equal(outputs(routed, 0.5), outputs(routed))


def test_released_names_tell_the_prediction(tmp_path):
    network = tiny_model(learn_sigma=True, hidden_size=64, num_heads=1)
    for name in ("DiT-XL-2-256x256.pt", "SiT-XL-2-256x256.pt", "mine.pt"):
        torch.save(network.state_dict(), tmp_path / name)
    dit = open_checkpoint(tmp_path / "DiT-XL-2-256x256.pt")
    assert dit.prediction == DDPMEpsilon() and "DiT-*" in dit.source
    sit = open_checkpoint(tmp_path / "SiT-XL-2-256x256.pt")
    assert sit.prediction == Velocity() and isinstance(sit.model, DiT)  # velocity: the network itself
    with pytest.raises(CheckpointError, match="cannot tell what mine.pt predicts.*--prediction"):
        open_checkpoint(tmp_path / "mine.pt")
    told = open_checkpoint(tmp_path / "mine.pt", prediction="eps")
    assert told.prediction == DDPMEpsilon() and told.source == "as given"


def test_our_training_state_carries_its_routes(tmp_path):
    network = tiny_model(hidden_size=64, num_heads=1, routes=((1, 2),), train_gamma=0.5)
    state = network.state_dict()
    torch.save({"model": state, "ema": state, "config": {"model": to_dict(network.config)}}, tmp_path / "latest.pt")
    loaded = open_checkpoint(tmp_path / "latest.pt")
    assert loaded.prediction == Velocity() and loaded.model.config == network.config


def test_a_wrapped_model_saves_and_loads_its_prediction(tmp_path):
    model = as_velocity(tiny_model(seed=6), EDM(sigma_data=0.7))
    save_model(model, tmp_path / "m.safetensors")
    assert json.loads((tmp_path / "m.json").read_text())["prediction"]["sigma_data"] == 0.7
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.prediction == EDM(sigma_data=0.7)
    assert torch.equal(outputs(loaded), outputs(model))
    save_model(tiny_model(), tmp_path / "v.safetensors")
    assert "prediction" not in json.loads((tmp_path / "v.json").read_text())  # velocity files stay as they were


def test_sample_cli_on_a_tread_run(tmp_path, capsys):
    tread_checkpoint(tmp_path / "latest.pt", tiny_model(seed=2, hidden_size=64, num_heads=1))
    common = [str(tmp_path / "latest.pt"), "--out", str(tmp_path / "g.png"), "--steps", "2", "--num-images", "2"]
    assert main(["sample", *common, "--guidance", "sg", "--no-progress"]) == 2
    assert "stores no routes" in capsys.readouterr().err
    args = ["--guidance", "sg", "--route", "1-2", "--train-gamma", "0.5", "--json", "--no-progress"]
    assert main(["sample", *common, *args]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["prediction"]["main"] == {"name": "edm", **to_dict(EDM())}
    assert "predicts edm" in captured.err and captured.err.count("predicts") == 1


def test_sample_cli_asks_for_the_prediction(tmp_path, capsys):
    torch.save(tiny_model(hidden_size=64, num_heads=1).state_dict(), tmp_path / "mine.pt")
    common = [str(tmp_path / "mine.pt"), "--out", str(tmp_path / "g.png"), "--steps", "2", "--num-images", "2"]
    assert main(["sample", *common, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--prediction" in err and err.count("\n") == 1
    assert main(["sample", *common, "--prediction", "eps", "--no-progress"]) == 0
    assert "predicts eps" in capsys.readouterr().err


def test_flops_cli_reads_a_checkpoint(tmp_path, capsys):
    network = tiny_model(seed=2, hidden_size=64, num_heads=1)
    tread_checkpoint(tmp_path / "latest.pt", network)
    args = ["flops", "--checkpoint", str(tmp_path / "latest.pt"), "--route", "1-2", "--guidance", "sg", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    routed = dataclasses.replace(network.config, routes=((1, 2),))
    expected = euler_step_flops(make_guidance("sg", 1.0, 0.5, 0.9), routed, None, 40)
    assert summary["prediction"] == "edm" and summary["routes"] == [[1, 2]]
    assert summary["gflops_paper"] == pytest.approx(expected.paper / 1e9)
    assert main(["flops", "--guidance", "sg"]) == 2
    assert "one of --model NAME and --checkpoint PATH" in capsys.readouterr().err


def test_fine_tuning_refuses_a_model_that_is_not_a_velocity_model(tmp_path):
    save_model(as_velocity(tiny_model(), EDM()), tmp_path / "edm.safetensors")
    config = SimpleNamespace(train=SimpleNamespace(init_from=str(tmp_path / "edm.safetensors")))
    with pytest.raises(CheckpointError, match="predicts edm; we train velocity"):
        initial_weights(config)
