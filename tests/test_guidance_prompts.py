"""Prompt guidance: the class-label guidance methods run unchanged on text conditions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseguidance.conditions import TextCondition
from sparseguidance.errors import ConfigError
from sparseguidance.guidance import make_guidance
from sparseguidance.guidance.evaluate import guided_velocity
from sparseguidance.models import ModelConfig
from sparseguidance.sampling.sampler import generate


class PromptRecorder(nn.Module):
    """A text-conditioned toy: output = x·(1 + mean prompt state) + γ; records each call's prompts and γ."""

    config = ModelConfig(  # a routed DiT's config stands in for the FLOPs count
        input_size=2, in_channels=1, patch_size=1, hidden_size=8, depth=1, num_heads=1, routes=((0, 0),)
    )

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[float, torch.Tensor]] = []

    def forward(self, x, t, y: TextCondition, gamma=0.0, generator=None):
        self.calls.append((gamma, y.states.clone()))
        summary = (y.states * y.mask[..., None]).sum((1, 2)) / (y.mask.sum(1) * y.width)  # (B,) mean real state
        return x * (1 + summary[:, None, None, None]) + gamma


def prompts(batch: int = 2) -> TextCondition:
    states = torch.arange(batch * 3 * 2, dtype=torch.float32).view(batch, 3, 2) / 10
    empty = torch.full((1, 1, 2), -1.0)
    return TextCondition(states, torch.ones(batch, 3, dtype=torch.bool), empty, torch.ones(1, 1, dtype=torch.bool))


def run(method: str, model: PromptRecorder, y: TextCondition) -> torch.Tensor:
    gammas = (0.25, 0.5) if "sg" in method else (None, None)
    guidance = make_guidance(method, 2.0, *gammas)
    x = torch.ones(len(y), 1, 2, 2)
    return guided_velocity(x, 0.5, 0, guidance=guidance, models={"main": model}, labels=y, num_steps=4)


def test_sg_gives_both_branches_the_prompt():
    model, y = PromptRecorder(), prompts()
    out = run("sg", model, y)
    assert [gamma for gamma, _ in model.calls] == [0.25, 0.5]  # γ differs, so two forwards
    assert all(torch.equal(seen, y.states) for _, seen in model.calls)
    conditional = torch.ones_like(out) * (1 + y.states.mean((1, 2)))[:, None, None, None]
    torch.testing.assert_close(out, 2.0 * (conditional + 0.25) - (conditional + 0.5))


@pytest.mark.parametrize("method", ["cfg", "cfg+sg"])
def test_the_unconditional_branch_gets_the_empty_prompt(method):
    model, y = PromptRecorder(), prompts()
    run(method, model, y)
    seen = {gamma: states for gamma, states in model.calls}
    weak_gamma = 0.5 if method == "cfg+sg" else 0.0
    strong_gamma = 0.25 if method == "cfg+sg" else 0.0
    if method == "cfg":  # one batched forward: prompts first, then the empty prompt (padded to the prompts' length)
        states = seen[0.0]
        assert torch.equal(states[:2], y.states)
        assert torch.equal(states[2:, :1], y.empty_states.expand(2, 1, 2)) and not states[2:, 1:].any()
    else:
        assert torch.equal(seen[strong_gamma], y.states)
        assert torch.equal(seen[weak_gamma], y.empty_states.expand(2, 1, 2))


def test_icg_refuses_prompts():
    with pytest.raises(ConfigError, match="class labels"):
        run("icg", PromptRecorder(), prompts())


def test_generate_samples_prompts_batch_independently():
    y = prompts(3)
    guidance = make_guidance("cfg+sg", 2.0, 0.25, 0.5)
    whole = generate(guidance, {"main": PromptRecorder()}, y, seed=1, steps=3, batch_size=3)
    single = generate(guidance, {"main": PromptRecorder()}, y, seed=1, steps=3, batch_size=1)
    assert whole.images.shape == (3, 1, 2, 2) and len(whole.labels) == 3
    torch.testing.assert_close(whole.images, single.images)
