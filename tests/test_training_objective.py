"""The training objective against hand computations: path, target, label dropout, masking's two terms."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config, tiny_inputs, tiny_model

from sparseguidance.conditions import TextCondition
from sparseguidance.errors import ConfigError
from sparseguidance.models import MaskDecoderConfig
from sparseguidance.sparsity import draw_keep, dropped_mask
from sparseguidance.training.config import TrainConfig
from sparseguidance.training.objective import (
    ObjectiveConfig,
    drop_labels,
    flow_matching_loss,
    masked_loss_terms,
    pixel_mask,
    sample_time,
)


class Recorder(torch.nn.Module):
    """Stand-in model: v = 0.5·x_t, and it remembers what it was called with."""

    def forward(self, x_t, t, y, **kwargs):
        self.x_t, self.t, self.y, self.kwargs = x_t, t, y, kwargs
        return 0.5 * x_t


def test_dense_loss_equals_hand_computation():
    config = tiny_config(in_channels=1, input_size=2, patch_size=1)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[-1.0, 0.0], [0.5, 2.0]]]])  # (2, 1, 2, 2)
    y = torch.tensor([1, 2])
    objective = ObjectiveConfig(label_dropout=0.0)
    model = Recorder()
    loss = flow_matching_loss(model, config, x, y, objective, torch.Generator().manual_seed(3))["loss"]

    # The same draws in the same order: label dropout, t, z.
    g = torch.Generator().manual_seed(3)
    torch.rand(2, generator=g)
    t = torch.rand(2, generator=g)
    z = torch.randn(2, 1, 2, 2, generator=g)
    total = 0.0
    for b in range(2):
        for i in range(2):
            for j in range(2):
                x_t = (1 - t[b]) * z[b, 0, i, j] + t[b] * x[b, 0, i, j]
                v_star = x[b, 0, i, j] - z[b, 0, i, j]
                total += float(0.5 * x_t - v_star) ** 2
    assert loss.item() == pytest.approx(total / 8, rel=1e-6)
    assert torch.allclose(model.x_t, (1 - t.view(-1, 1, 1, 1)) * z + t.view(-1, 1, 1, 1) * x)
    assert torch.equal(model.y, y) and model.kwargs["gamma"] == 0.0


def test_routing_trains_at_the_models_ratio():
    config = tiny_config(routes=((1, 2),), train_gamma=0.5)
    x, _, y = tiny_inputs(config=config)
    model = Recorder()
    generator = torch.Generator().manual_seed(0)
    terms = flow_matching_loss(model, config, x, y.clamp(max=4), ObjectiveConfig(), generator)
    assert terms.keys() == {"loss"}  # no auxiliary loss
    assert model.kwargs == {"gamma": 0.5, "generator": generator}


def test_label_dropout_rate():
    y = torch.zeros(200_000, dtype=torch.long)
    dropped = drop_labels(y, 0.1, null_class=10, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.1, abs=0.003)
    assert torch.equal(drop_labels(y, 0.0, 10, torch.Generator()), y)
    assert (drop_labels(y[:100], 1.0, 10, torch.Generator()) == 10).all()


def test_prompt_dropout_draws_as_label_dropout_and_gives_the_empty_prompt():
    states = torch.arange(6 * 2 * 3, dtype=torch.float32).view(6, 2, 3) + 1
    empty = torch.zeros(1, 1, 3)
    prompts = TextCondition(states, torch.ones(6, 2, dtype=torch.bool), empty, torch.ones(1, 1, dtype=torch.bool))
    dropped = drop_labels(prompts, 0.5, None, torch.Generator().manual_seed(1))
    labels = drop_labels(torch.zeros(6, dtype=torch.long), 0.5, 10, torch.Generator().manual_seed(1))
    for row, label in enumerate(labels.tolist()):  # the same draw decides the same rows
        if label == 10:
            assert not dropped.states[row].any() and dropped.mask[row].tolist() == [True, False]
        else:
            assert torch.equal(dropped.states[row], states[row])
    assert 0 < (labels == 10).sum() < 6


def test_label_dropout_reaches_the_model():
    config = tiny_config(in_channels=1, input_size=2, patch_size=1, num_classes=3)
    model = Recorder()
    x, y = torch.zeros(20_000, 1, 2, 2), torch.ones(20_000, dtype=torch.long)
    flow_matching_loss(model, config, x, y, ObjectiveConfig(label_dropout=0.25), torch.Generator().manual_seed(1))
    assert (model.y == 3).float().mean().item() == pytest.approx(0.25, abs=0.01)  # ∅ is label num_classes


def test_time_sampling():
    g = torch.Generator().manual_seed(0)
    uniform = sample_time(100_000, ObjectiveConfig(), g)
    assert 0 <= uniform.min() and uniform.max() < 1 and uniform.mean().item() == pytest.approx(0.5, abs=0.01)
    logit = sample_time(100_000, ObjectiveConfig(time_sampling="logit_normal", logit_mean=1.0), g)
    assert 0 < logit.min() and logit.max() < 1
    assert torch.logit(logit).mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.logit(logit).std().item() == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ConfigError, match="time_sampling"):
        ObjectiveConfig(time_sampling="cosine")
    with pytest.raises(ConfigError, match="label_dropout"):
        ObjectiveConfig(label_dropout=1.5)


def test_pixel_mask_follows_the_patch_layout():
    config = tiny_config(in_channels=1, input_size=8, patch_size=2)  # 4×4 grid of 2×2 patches
    model = tiny_model(in_channels=1, input_size=8, patch_size=2)
    dropped = torch.rand(3, config.num_tokens, generator=torch.Generator().manual_seed(0)) < 0.5
    # unpatchify of "token value = dropped" puts each token's flag on its patch: the same layout as the model's.
    tokens = dropped.float()[..., None].expand(-1, -1, config.patch_size**2 * config.out_channels)
    assert torch.equal(pixel_mask(dropped, config).float(), model.unpatchify(tokens))


def test_masked_terms_by_hand():
    # One 1×4×4 image, patch 2: tokens 0 1 / 2 3 are the four 2×2 quadrants; tokens 1 and 2 dropped.
    config = tiny_config(in_channels=1, input_size=4, patch_size=2)
    error = torch.arange(16.0).view(1, 1, 4, 4)
    dropped = pixel_mask(torch.tensor([[False, True, True, False]]), config)
    t = torch.tensor([0.25])
    visible, masked = masked_loss_terms(error, dropped, t)
    top_left, bottom_right = [0, 1, 4, 5], [10, 11, 14, 15]
    top_right, bottom_left = [2, 3, 6, 7], [8, 9, 12, 13]
    assert visible.item() == pytest.approx(sum(top_left + bottom_right) / 8)
    assert masked.item() == pytest.approx(0.75**2 * sum(top_right + bottom_left) / 8)
    nothing_dropped = torch.zeros_like(dropped)
    assert masked_loss_terms(error, nothing_dropped, t)[1].item() == 0.0


def test_masking_loss_combines_both_terms():
    config = tiny_config(decoder=MaskDecoderConfig(depth=1, width=16, heads=2), train_gamma=0.5)
    model = tiny_model(decoder=config.decoder, train_gamma=0.5)
    x, _, y = tiny_inputs(config=config)
    objective = ObjectiveConfig(mask_weight=0.3, label_dropout=0.0)
    terms = flow_matching_loss(model, config, x, y, objective, torch.Generator().manual_seed(7))
    assert terms["loss"].item() == pytest.approx(terms["visible"].item() + 0.3 * terms["masked"].item(), rel=1e-6)

    g = torch.Generator().manual_seed(7)  # replay: label dropout, t, z, kept tokens
    torch.rand(3, generator=g)
    t = torch.rand(3, generator=g)
    z = torch.randn(x.shape, generator=g)
    keep = draw_keep(3, config.num_tokens, 0.5, g)
    x_t = (1 - t.view(-1, 1, 1, 1)) * z + t.view(-1, 1, 1, 1) * x
    error = (model(x_t, t, y, keep=keep) - (x - z)) ** 2
    dropped = pixel_mask(dropped_mask(keep, config.num_tokens), config).expand_as(error)
    assert dropped.float().mean().item() == 0.5
    assert terms["visible"].item() == pytest.approx(error[~dropped].mean().item(), rel=1e-5)
    weight = ((1 - t) ** 2).view(-1, 1, 1, 1).expand_as(error)
    assert terms["masked"].item() == pytest.approx((weight * error)[dropped].mean().item(), rel=1e-5)


def test_dense_fraction_mixes_dense_steps_into_sparse_training():
    config = tiny_config(routes=((1, 2),), train_gamma=0.5)
    x, _, y = tiny_inputs(config=config)
    gammas = []
    for seed in range(40):
        model = Recorder()
        objective = ObjectiveConfig(dense_fraction=0.5)
        flow_matching_loss(model, config, x, y.clamp(max=4), objective, torch.Generator().manual_seed(seed))
        gammas.append(model.kwargs["gamma"])
    assert set(gammas) == {0.0, 0.5} and 8 < gammas.count(0.0) < 32
    model = Recorder()
    flow_matching_loss(model, config, x, y, ObjectiveConfig(dense_fraction=1.0), torch.Generator().manual_seed(0))
    assert model.kwargs["gamma"] == 0.0


def test_unmasked_fine_tuning_keeps_every_token_and_drops_the_reconstruction_term():
    config = tiny_config(decoder=MaskDecoderConfig(depth=1, width=16, heads=2), train_gamma=0.5)
    x, _, y = tiny_inputs(config=config)
    model = Recorder()
    objective = ObjectiveConfig(dense_fraction=1.0, mask_weight=0.1)
    terms = flow_matching_loss(model, config, x, y, objective, torch.Generator().manual_seed(0))
    assert torch.equal(model.kwargs["keep"], torch.arange(config.num_tokens).expand(x.shape[0], -1))
    assert terms["masked"].item() == 0.0 and terms["loss"].item() == terms["visible"].item()


def test_sparse_gammas_draw_each_sparse_step_from_the_list():
    config = tiny_config(routes=((1, 2),), train_gamma=0.25)
    objective = ObjectiveConfig(dense_fraction=0.5, sparse_gammas=(0.25, 0.5))
    gammas = []
    for seed in range(60):
        model = Recorder()
        x, _, y = tiny_inputs(config=config)
        flow_matching_loss(model, config, x, y.clamp(max=4), objective, torch.Generator().manual_seed(seed))
        gammas.append(model.kwargs["gamma"])
    assert set(gammas) == {0.0, 0.25, 0.5}
    assert 10 < gammas.count(0.0) < 50 and gammas.count(0.25) > 5 and gammas.count(0.5) > 5
    model = Recorder()  # without dense steps every step is sparse, at one of the listed ratios
    flow_matching_loss(model, config, x, y, ObjectiveConfig(sparse_gammas=(0.75,)), torch.Generator().manual_seed(0))
    assert model.kwargs["gamma"] == 0.75


def test_sparse_gammas_out_of_range_or_on_a_dense_model_are_refused():
    with pytest.raises(ConfigError, match="objective.sparse_gammas must lie in"):
        ObjectiveConfig(sparse_gammas=(0.5, 1.0))
    with pytest.raises(ConfigError, match="sparse_gammas needs a routing or masking model"):
        TrainConfig(model=tiny_config(), objective=ObjectiveConfig(sparse_gammas=(0.5,)))


def test_dense_fraction_out_of_range_is_refused():
    with pytest.raises(ConfigError, match="dense_fraction"):
        ObjectiveConfig(dense_fraction=1.5)
