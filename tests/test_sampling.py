"""Samplers: a Gaussian-mixture toy with an exact velocity, per-sample seeds, NFE and FLOPs accounting."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_model
from torch import nn

from sparseguidance.errors import ConfigError
from sparseguidance.flops import euler_step_flops
from sparseguidance.guidance import make_guidance
from sparseguidance.models import ModelConfig
from sparseguidance.sampling import class_labels, gaussian, generate, sample_batch, sample_generators, sample_seed


class MixtureVelocity(nn.Module):
    """Exact flow-matching velocity of a 1-D Gaussian mixture Σ π_k N(μ_k, s_k²): per class, or the marginal for ∅.

    With x_t = t·x + (1 − t)·z and V_k = t²s_k² + (1 − t)²:  v_k = μ_k + (t·s_k² − (1 − t))/V_k · (x_t − t·μ_k),
    and the marginal velocity is Σ_k p(k | x_t)·v_k. Its ODE maps z to μ_k + s_k·z exactly (per class).
    """

    def __init__(self, means: list[float], stds: list[float]) -> None:
        super().__init__()
        self.means, self.stds = torch.tensor(means), torch.tensor(stds)
        self.config = ModelConfig(1, 1, 1, 1, 1, 1, num_classes=len(means))
        self.null_class = len(means)

    def forward(self, x, t, y, gamma=0.0, generator=None):
        mu, s2, xt = self.means, self.stds**2, x.reshape(-1, 1)  # (K,), (K,), (B, 1)
        var = t**2 * s2 + (1 - t) ** 2  # (K,)
        v = mu + (t * s2 - (1 - t)) / var * (xt - t * mu)  # (B, K)
        posterior = torch.softmax(-((xt - t * mu) ** 2) / (2 * var) - 0.5 * var.log(), dim=1)  # equal weights π_k
        marginal = (posterior * v).sum(1, keepdim=True)
        conditional = v.gather(1, y.clamp(max=len(mu) - 1)[:, None])
        return torch.where((y == self.null_class)[:, None], marginal, conditional).reshape(x.shape)


def toy_samples(guidance, model, n, sampler="euler", steps=100, label=0):
    """n samples of class `label` and the noise each started from."""
    labels = torch.full((n,), label)
    x = sample_batch(guidance, {"main": model}, labels, range(n), steps=steps, sampler=sampler).flatten()
    z = gaussian((n, 1, 1, 1), sample_generators(0, range(n)), "cpu").flatten()
    return x, z


def test_euler_and_heun_follow_the_exact_flow_map():
    model = MixtureVelocity([1.5, -1.0], [0.5, 0.8])
    none = make_guidance("none")
    coarse, z = toy_samples(none, model, 64, "euler", steps=10)
    fine, _ = toy_samples(none, model, 64, "euler", steps=400)
    heun, _ = toy_samples(none, model, 64, "heun", steps=10)
    exact = 1.5 + 0.5 * z
    assert (fine - exact).abs().max() < 1e-2  # first order: the error shrinks like 1/N
    assert (heun - exact).abs().max() < 0.2 * (coarse - exact).abs().max()  # second order beats first


@pytest.mark.parametrize("sampler", ["euler", "sde"])
def test_samples_land_on_the_conditional_gaussian(sampler):
    model = MixtureVelocity([1.5, -1.0], [0.5, 0.8])
    x, _ = toy_samples(make_guidance("none"), model, 2000, sampler, steps=100, label=1)
    assert x.mean() == pytest.approx(-1.0, abs=0.06) and x.std() == pytest.approx(0.8, abs=0.05)


def test_cfg_pushes_mass_toward_the_conditional_mode():
    """Overlapping modes ±1 (σ 0.8): P(x < 0 | class 0) is Φ(1.25) ≈ 0.894 at ω = 1 and grows with ω."""
    model = MixtureVelocity([-1.0, 1.0], [0.8, 0.8])
    share, mean = {}, {}
    for omega in (1.0, 2.0, 3.0):
        x, _ = toy_samples(make_guidance("cfg", omega), model, 2000, steps=50)
        share[omega], mean[omega] = (x < 0).float().mean().item(), x.mean().item()
    assert share[1.0] == pytest.approx(0.5 * (1 + math.erf(1.25 / math.sqrt(2))), abs=0.02)
    assert mean[1.0] == pytest.approx(-1.0, abs=0.05)
    assert share[1.0] + 0.03 < share[2.0] <= share[3.0] and mean[3.0] < mean[2.0] < mean[1.0] - 0.3


GUIDED = [
    make_guidance("sg", 1.5, 0.25, 0.5),
    make_guidance("cfg+sg", 1.5, 0.25, 0.5),
    make_guidance("icg", 2.0),
]


@pytest.mark.parametrize("sampler", ["euler", "sde"])
@pytest.mark.parametrize("guidance", GUIDED, ids=lambda g: g.name)
def test_image_k_does_not_depend_on_the_batch(guidance, sampler, routed):
    labels = class_labels("random", range(5), 5, seed=3)
    options = dict(seed=3, steps=4, sampler=sampler)
    whole = generate(guidance, {"main": routed}, labels, batch_size=5, **options).images
    ones = generate(guidance, {"main": routed}, labels, batch_size=1, **options).images
    part = generate(guidance, {"main": routed}, labels[3:], indices=[3, 4], batch_size=2, **options).images
    torch.testing.assert_close(ones, whole, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part, whole[3:], rtol=1e-5, atol=1e-5)
    other = generate(guidance, {"main": routed}, labels, batch_size=5, **{**options, "seed": 4}).images
    assert not torch.allclose(other, whole)


def test_same_seed_same_images(routed):
    labels = torch.tensor([0, 1, 2])
    guidance = make_guidance("sg", 1.5, 0.25, 0.5)
    first = generate(guidance, {"main": routed}, labels, steps=3).images
    assert torch.equal(first, generate(guidance, {"main": routed}, labels, steps=3).images)


@pytest.mark.parametrize(("sampler", "nfe"), [("euler", 8), ("heun", 15), ("sde", 8)])
def test_nfe_per_sampler(sampler, nfe, routed):
    samples = generate(make_guidance("none"), {"main": routed}, torch.tensor([0, 1]), steps=8, sampler=sampler)
    assert samples.cost.nfe == nfe and samples.cost.forwards == nfe


def test_forwards_with_an_interval_and_flops_match_the_flops_module(routed):
    """CFG guided on t ∈ [0.25, 0.5] of t_i = i/8: steps 2, 3, 4 run two branches, the other five one."""
    guidance = make_guidance("cfg+sg", 1.5, 0.25, 0.5, interval=(0.25, 0.5))
    samples = generate(guidance, {"main": routed}, torch.tensor([0, 1, 2]), steps=8, batch_size=2)
    assert samples.cost.nfe == 8 and samples.cost.forwards == 8 + 3
    expected = euler_step_flops(guidance, routed.config, None, 8) * 8
    assert samples.cost.flops.paper == pytest.approx(expected.paper)
    assert samples.cost.flops.full == pytest.approx(expected.full)


def test_ag_sg_uses_both_models(routed):
    weak = tiny_model(seed=9, routes=((1, 2),))
    guidance = make_guidance("ag+sg", 1.5, 0.25, 0.5)
    samples = generate(guidance, {"main": routed, "weak": weak}, torch.tensor([0, 1]), steps=2)
    assert samples.images.shape == (2, 3, 8, 8) and samples.cost.forwards == 4
    with pytest.raises(ConfigError, match="weak"):
        generate(guidance, {"main": routed}, torch.tensor([0]), steps=2)


def test_class_labels():
    assert class_labels([3, 1], range(5), 10).tolist() == [3, 1, 3, 1, 3]
    assert class_labels("all", range(2, 6), 3).tolist() == [2, 0, 1, 2]
    random = class_labels("random", range(50), 10, seed=1)
    assert torch.equal(class_labels("random", range(40, 50), 10, seed=1), random[40:])
    assert len(set(random.tolist())) > 5
    for bad in ([10], [], "some"):
        with pytest.raises(ConfigError):
            class_labels(bad, range(3), 10)


def test_per_sample_seeds_do_not_collide():
    seeds = {sample_seed(s, k) for s in range(3) for k in range(1000)}
    assert len(seeds) == 3000
    assert sample_seed(0, 1_000_003) != sample_seed(1, 0)


def test_bad_settings_are_config_errors(routed):
    labels = torch.tensor([0])
    for kwargs in ({"steps": 0}, {"sampler": "rk4"}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            generate(make_guidance("none"), {"main": routed}, labels, **kwargs)
    with pytest.raises(ConfigError, match="labels"):
        generate(make_guidance("none"), {"main": routed}, torch.tensor([5]))


def test_shared_prefix_gives_the_same_images_and_the_flops_module_s_cost(routed):
    labels, guidance = torch.tensor([0, 1, 2]), make_guidance("sg", 1.5, 0.25, 0.5)
    shared, whole = (generate(guidance, {"main": routed}, labels, steps=3, share=s) for s in (True, False))
    assert torch.equal(shared.images, whole.images)
    for samples, share in ((shared, True), (whole, False)):
        expected = euler_step_flops(guidance, routed.config, None, 3, share=share) * 3
        assert samples.cost.flops.paper == pytest.approx(expected.paper)
        assert samples.cost.flops.full == pytest.approx(expected.full)
    assert shared.cost.flops.paper < whole.cost.flops.paper and shared.cost.forwards == whole.cost.forwards == 6


def test_fp32_is_the_plain_euler_loop_bit_for_bit_and_bf16_stays_close(routed):
    labels, steps = torch.tensor([0, 1, 2]), 3
    x = gaussian((3, 3, 8, 8), sample_generators(0, range(3)), "cpu")
    with torch.no_grad():
        for i in range(steps):
            x = x + routed(x, i / steps, labels) / steps
    fp32 = generate(make_guidance("none"), {"main": routed}, labels, steps=steps, precision="fp32").images
    bf16 = generate(make_guidance("none"), {"main": routed}, labels, steps=steps, precision="bf16").images
    assert torch.equal(fp32, x)
    assert not torch.equal(bf16, x) and bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, x, rtol=0.05, atol=0.05)
    with pytest.raises(ConfigError, match="unknown precision"):
        generate(make_guidance("none"), {"main": routed}, labels, steps=steps, precision="fp8")
