"""Token selection: the kept count, draws from generators, gather then scatter is the identity."""

from __future__ import annotations

import pytest
import torch

from sparseguidance.errors import ConfigError
from sparseguidance.sparsity import draw_keep, dropped_mask, gather_tokens, kept_count, scatter_tokens


@pytest.mark.parametrize(
    ("T", "gamma", "kept"),
    [(256, 0.0, 256), (256, 0.5, 128), (256, 0.9, 26), (256, 0.75, 64), (64, 0.3, 45), (16, 0.99, 1), (10, 0.25, 8)],
)
def test_kept_count_is_T_minus_floor_T_gamma(T, gamma, kept):
    assert kept_count(T, gamma) == kept


def test_draws_are_sorted_distinct_and_reproducible():
    keep = draw_keep(4, 64, 0.5, torch.Generator().manual_seed(0))
    assert keep.shape == (4, 32)
    assert (keep.diff(dim=1) > 0).all()  # sorted and distinct
    assert torch.equal(keep, draw_keep(4, 64, 0.5, torch.Generator().manual_seed(0)))
    assert not torch.equal(keep, draw_keep(4, 64, 0.5, torch.Generator().manual_seed(1)))
    assert len({tuple(row.tolist()) for row in keep}) == 4  # each sample draws its own subset


def test_per_sample_generators_draw_independently_of_the_batch():
    gens = lambda: [torch.Generator().manual_seed(s) for s in (5, 6, 7)]  # noqa: E731
    batch = draw_keep(3, 64, 0.75, gens())
    alone = draw_keep(1, 64, 0.75, [gens()[1]])
    assert torch.equal(batch[1:2], alone)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        draw_keep(3, 64, 0.5, gens()[:2])


def test_subsets_are_uniform():
    counts = torch.zeros(16)
    for seed in range(400):
        counts += dropped_mask(draw_keep(1, 16, 0.25, torch.Generator().manual_seed(seed)), 16)[0].float()
    # each token is dropped with probability 4/16: 100 expected per token, binomial sd ≈ 8.7
    assert counts.sum() == 400 * 4
    assert (counts - 100).abs().max() < 40


def test_gather_then_scatter_restores_the_tokens():
    x = torch.randn(2, 10, 3)
    keep = torch.tensor([[1, 4, 7], [0, 2, 9]])
    kept = gather_tokens(x, keep)
    assert torch.equal(kept[1, 2], x[1, 9])
    assert torch.equal(scatter_tokens(x, kept, keep), x)
    changed = scatter_tokens(x, kept + 1, keep)
    mask = dropped_mask(keep, 10)
    assert torch.equal(changed[mask], x[mask]) and torch.equal(changed[~mask], x[~mask] + 1)


@pytest.mark.parametrize("gamma", [1.0, -0.01, 1.5, float("nan")])
def test_gamma_outside_unit_interval_is_refused(gamma):
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        kept_count(16, gamma)
