"""The guided velocity: every method against its formula by hand, branch conditions, batching, interval, ω = 1."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_inputs, tiny_model
from torch import nn

from sparseguidance.errors import ConfigError
from sparseguidance.guidance import GammaSchedule, make_guidance
from sparseguidance.guidance.evaluate import Tally, guided_velocity
from sparseguidance.sampling.seeds import sample_generators

STEPS = 10


class Recorder(nn.Module):
    """A model that records (rows, γ, labels) of every call and passes it on (optionally with fixed kept tokens)."""

    def __init__(self, model: nn.Module, keep: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model, self.keep, self.calls = model, keep, []

    @property
    def config(self):
        return self.model.config

    @property
    def null_class(self) -> int:
        return self.model.null_class

    def forward(self, x, t, y, gamma=0.0, generator=None):
        self.calls.append((x.shape[0], gamma, y.clone()))
        if self.keep is not None:  # one shared subset for every row and call
            return self.model(x, t, y, keep=self.keep.expand(x.shape[0], -1))
        return self.model(x, t, y, gamma=gamma, generator=generator)


@pytest.fixture
def inputs():
    x, t, y = tiny_inputs(batch=4)
    return x, 0.5, y.clamp(max=3)  # class labels only (no null class among the samples)


def velocity(guidance, models, x, t, y, step=3, seed=0, tally=None, share=True):
    """The guided velocity with per-sample generators seeded from `seed`."""
    gens = sample_generators(seed, range(len(y)))
    options = dict(guidance=guidance, models=models, labels=y, num_steps=STEPS, generators=gens, tally=tally)
    return guided_velocity(x, t, step, share=share, **options)


def by_hand(method, main, weak, x, t, y, step=3, seed=0):
    """ω·D_strong + (1 − ω)·D_weak of PAPER.md §2, written out, drawing from the same per-sample generators."""
    g = sample_generators(seed, range(len(y)))
    null = torch.full_like(y, main.null_class)
    omega, gs, gw = 1.7, 0.25, 0.5
    with torch.no_grad():
        if method == "cfg":
            strong, weak_d = main(x, t, y), main(x, t, null)
        elif method == "sg":
            strong, weak_d = main(x, t, y, gamma=gs, generator=g), main(x, t, y, gamma=gw, generator=g)
        elif method == "cfg+sg":
            strong, weak_d = main(x, t, y, gamma=gs, generator=g), main(x, t, null, gamma=gw, generator=g)
        elif method == "ag":
            strong, weak_d = main(x, t, y), weak(x, t, y)
        elif method == "ag+sg":
            s = step / (STEPS - 1)
            strong, weak_d = main(x, t, y, gamma=gs * s, generator=g), weak(x, t, y, gamma=gw * (1 - s), generator=g)
        else:  # icg: c′ drawn first, one per sample from its own generator
            other = torch.stack([torch.randint(main.config.num_classes, (), generator=k) for k in g])
            strong, weak_d = main(x, t, y), main(x, t, other)
    return omega * strong + (1 - omega) * weak_d


def guidance_for(method):
    """The method with ω = 1.7, γ 0.25 / 0.5 (ag+sg: linear 0→0.25 and 0.5→0)."""
    if method == "ag+sg":
        return make_guidance(method, 1.7, GammaSchedule(0, 0.25, "linear"), GammaSchedule(0.5, 0, "linear"))
    gammas = (0.25, 0.5) if method in ("sg", "cfg+sg") else (None, None)
    return make_guidance(method, 1.7, *gammas)


@pytest.mark.parametrize("method", ["cfg", "sg", "cfg+sg", "ag", "ag+sg", "icg"])
def test_guided_velocity_is_the_papers_formula(method, routed, inputs):
    x, t, y = inputs
    weak = tiny_model(seed=5, routes=((1, 2),))
    with torch.no_grad():
        got = velocity(guidance_for(method), {"main": routed, "weak": weak}, x, t, y)
    torch.testing.assert_close(got, by_hand(method, routed, weak, x, t, y), rtol=1e-5, atol=1e-5)


def test_the_label_matters_so_the_formula_tests_have_teeth(routed, inputs):
    x, t, y = inputs
    with torch.no_grad():
        assert not torch.allclose(routed(x, t, y), routed(x, t, torch.full_like(y, routed.null_class)), atol=1e-3)
        assert not torch.allclose(routed(x, t, y), routed(x, t, (y + 1) % 5), atol=1e-3)


def test_sg_with_equal_gammas_and_one_shared_subset_is_the_single_prediction(routed, inputs):
    x, t, y = inputs
    keep = torch.tensor([[0, 2, 3, 5, 8, 9, 12, 15]])
    model = Recorder(routed, keep)
    with torch.no_grad():
        got = velocity(make_guidance("sg", 2.5, 0.5, 0.5), {"main": model}, x, t, y)
        single = routed(x, t, y, keep=keep.expand(len(y), -1))
    torch.testing.assert_close(got, single, rtol=1e-5, atol=1e-5)
    assert [c[0] for c in model.calls] == [2 * len(y)]  # same model, same γ: one forward


def test_both_sg_branches_get_the_class_label(routed, inputs):
    x, t, y = inputs
    model = Recorder(routed)
    with torch.no_grad():
        velocity(make_guidance("sg", 1.5, 0.25, 0.5), {"main": model}, x, t, y)
    assert [(rows, gamma) for rows, gamma, _ in model.calls] == [(4, 0.25), (4, 0.5)]
    assert all(torch.equal(labels, y) for _, _, labels in model.calls)


def test_cfg_sg_weak_branch_is_unconditional_and_sparse(routed, inputs):
    x, t, y = inputs
    model = Recorder(routed)
    with torch.no_grad():
        velocity(make_guidance("cfg+sg", 1.5, 0.25, 0.5), {"main": model}, x, t, y)
    (_, g_strong, y_strong), (_, g_weak, y_weak) = model.calls
    assert (g_strong, g_weak) == (0.25, 0.5)
    assert torch.equal(y_strong, y) and (y_weak == routed.null_class).all()


def test_ag_calls_the_second_model(routed, inputs):
    x, t, y = inputs
    main, weak = Recorder(routed), Recorder(tiny_model(seed=5))
    with torch.no_grad():
        velocity(make_guidance("ag", 2.0), {"main": main, "weak": weak}, x, t, y)
    assert [c[:2] for c in main.calls] == [(4, 0.0)] and [c[:2] for c in weak.calls] == [(4, 0.0)]
    assert torch.equal(weak.calls[0][2], y)


def test_ag_sg_reads_each_models_gamma_schedule_at_the_step(routed, inputs):
    x, t, y = inputs
    main, weak = Recorder(routed), Recorder(tiny_model(seed=5, routes=((1, 2),)))
    guidance = make_guidance("ag+sg", 2.0, GammaSchedule(0, 0.6, "cosine"), GammaSchedule(0.6, 0, "cosine"))
    with torch.no_grad():
        for step in (0, STEPS - 1):
            velocity(guidance, {"main": main, "weak": weak}, x, t, y, step=step)
    assert [c[1] for c in main.calls] == [0.0, 0.6] and [c[1] for c in weak.calls] == [0.6, 0.0]


def test_icg_draws_an_independent_condition_per_sample(routed):
    x, _, _ = tiny_inputs(batch=64)
    y = torch.zeros(64, dtype=torch.long)
    model = Recorder(routed)
    with torch.no_grad():
        velocity(make_guidance("icg", 2.0), {"main": model}, x, 0.5, y)
    ((rows, _, labels),) = model.calls  # dense and same model: one batched forward
    other = labels[64:]
    assert rows == 128 and torch.equal(labels[:64], y)
    assert set(other.tolist()) == set(range(5))  # uniform over the classes, never the null class


def test_batched_cfg_is_one_forward_equal_to_two(routed, inputs):
    x, t, y = inputs
    model = Recorder(routed)
    with torch.no_grad():
        got = velocity(make_guidance("cfg", 3.0), {"main": model}, x, t, y)
        cond, uncond = routed(x, t, y), routed(x, t, torch.full_like(y, routed.null_class))
    assert [c[0] for c in model.calls] == [8]
    torch.testing.assert_close(got, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_outside_the_interval_only_the_strong_branch_runs(routed, inputs):
    x, _, y = inputs
    model = Recorder(routed)
    guidance = make_guidance("sg", 2.0, 0.25, 0.5, interval=(0.3, 0.7))
    with torch.no_grad():
        outside = velocity(guidance, {"main": model}, x, 0.8, y)
        strong = routed(x, 0.8, y, gamma=0.25, generator=sample_generators(0, range(4)))
        velocity(guidance, {"main": model}, x, 0.3, y)  # the bounds are inside
    assert [c[1] for c in model.calls] == [0.25, 0.25, 0.5]
    assert torch.equal(outside, strong)


def test_scale_one_is_the_strong_branch_in_one_forward(routed, inputs):
    x, t, y = inputs
    model = Recorder(routed)
    with torch.no_grad():
        got = velocity(make_guidance("cfg+sg", 1.0, 0.25, 0.5), {"main": model}, x, t, y)
        strong = routed(x, t, y, gamma=0.25, generator=sample_generators(0, range(4)))
    assert len(model.calls) == 1 and torch.equal(got, strong)


def test_tally_counts_evaluations_and_forwards_per_model_and_gamma(routed, inputs):
    x, t, y = inputs
    tally = Tally()
    with torch.no_grad():
        velocity(make_guidance("sg", 2.0, 0.25, 0.5), {"main": routed}, x, t, y, tally=tally)
        velocity(make_guidance("cfg", 2.0), {"main": routed}, x, t, y, tally=tally)
    assert tally.evaluations == 8
    assert tally.forwards == {("main", 0.25): 4, ("main", 0.5): 4, ("main", 0.0): 8}


def test_schedule_endpoints():
    for kind in ("linear", "cosine"):
        down = GammaSchedule(0.6, 0.0, kind)
        assert down.at(0, 40) == 0.6 and down.at(39, 40) == 0.0
    assert GammaSchedule(0.0, 0.6, "cosine").at(20, 41) == pytest.approx(0.3)


def test_guidance_with_a_weak_model_needs_one(routed):
    from sparseguidance.guidance.evaluate import check_models

    with pytest.raises(ConfigError, match="weak"):
        check_models(make_guidance("ag", 2.0), {"main": routed})
    with pytest.raises(ConfigError, match="classes"):
        check_models(make_guidance("ag", 2.0), {"main": routed, "weak": tiny_model(num_classes=7)})


SHARED = ["none", "cfg", "sg", "cfg+sg", "ag", "ag+sg", "icg"]


@pytest.mark.parametrize("method", SHARED)
@pytest.mark.parametrize("sparsity", ["routed", "masked"])
def test_a_shared_prefix_changes_nothing_but_the_work(method, sparsity, inputs, request):
    """Bit for bit: the prefix batches exactly as the whole forwards did, and token subsets are drawn in order."""
    x, t, y = inputs
    model = request.getfixturevalue(sparsity)
    models = {"main": model, "weak": tiny_model(seed=5, routes=((1, 2),))}
    guidance = make_guidance("none", 1.0, 0.25) if method == "none" else guidance_for(method)
    shared, whole = Tally(), Tally()
    with torch.no_grad():
        got = velocity(guidance, models, x, t, y, tally=shared)
        want = velocity(guidance, models, x, t, y, tally=whole, share=False)
    assert torch.equal(got, want)
    assert shared.forwards == whole.forwards
    assert shared.prefixes["main"] == (4 if method == "sg" else whole.prefixes["main"])  # SG: one prefix, not two


def test_sg_at_equal_gammas_shares_the_prefix_within_a_kernel_batching_difference(routed, inputs):
    x, t, y = inputs
    guidance, tally = make_guidance("sg", 2.0, 0.5, 0.5), Tally()
    with torch.no_grad():
        got = velocity(guidance, {"main": routed}, x, t, y, tally=tally)
        want = velocity(guidance, {"main": routed}, x, t, y, share=False)
    assert tally.prefixes["main"] == 4 and tally.forwards == {("main", 0.5): 8}
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_models_without_a_prefix_run_whole_forwards(routed, inputs):
    x, t, y = inputs
    model, tally = Recorder(routed), Tally()
    with torch.no_grad():
        got = velocity(make_guidance("sg", 2.0, 0.25, 0.5), {"main": model}, x, t, y, tally=tally)
        want = velocity(make_guidance("sg", 2.0, 0.25, 0.5), {"main": routed}, x, t, y)
    assert [c[:2] for c in model.calls] == [(4, 0.25), (4, 0.5)] and tally.prefixes["main"] == 8
    assert torch.equal(got, want)
