"""Text conditions: padding, stacking, the empty prompt, condition dropout."""

import pytest
import torch

from sparseguidance.conditions import TextCondition, cat_conditions
from sparseguidance.errors import ConfigError


def condition(batch: int, length: int, width: int = 4, seed: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, width, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, length - 1] = False  # last position is padding
    empty = torch.randn(1, 2, width, generator=g)
    return TextCondition(states, mask, empty, torch.ones(1, 2, dtype=torch.bool))


def test_null_rows_are_the_empty_prompt():
    c = condition(3, 5)
    null = c.null()
    assert len(null) == 3 and null.states.shape == (3, 2, 4)
    assert torch.equal(null.states[2], c.empty_states[0]) and null.mask.all()


def test_cat_pads_to_the_longest_and_chunk_inverts_it():
    a, b = condition(2, 3, seed=1), condition(1, 6, seed=2)
    both = TextCondition.cat([a, b])
    assert both.states.shape == (3, 6, 4)
    assert torch.equal(both.states[:2, :3], a.states) and not both.mask[:2, 3:].any()
    assert torch.equal(both.states[2], b.states[0])
    assert cat_conditions([a, b]).states.shape == (3, 6, 4)
    assert torch.equal(cat_conditions([torch.tensor([1]), torch.tensor([2, 3])]), torch.tensor([1, 2, 3]))
    left, right = TextCondition.cat([a, a]).chunk(2)
    assert torch.equal(left.states, a.states) and torch.equal(right.mask, a.mask)


def test_where_drops_exactly_the_flagged_rows():
    c = condition(3, 4)
    dropped = c.where(torch.tensor([False, True, False]))
    assert torch.equal(dropped.states[0], c.states[0]) and torch.equal(dropped.states[2], c.states[2])
    assert torch.equal(dropped.states[1, :2], c.empty_states[0]) and not dropped.mask[1, 2:].any()
    assert torch.equal(c[torch.tensor([2])].states[0], c.states[2]) and len(c[1:]) == 2


def test_bad_shapes_are_refused():
    with pytest.raises(ConfigError, match="states"):
        TextCondition(
            torch.zeros(2, 3, 4),
            torch.ones(2, 4, dtype=torch.bool),
            torch.zeros(1, 1, 4),
            torch.ones(1, 1, dtype=torch.bool),
        )
    with pytest.raises(ConfigError, match="empty prompt"):
        TextCondition(
            torch.zeros(2, 3, 4),
            torch.ones(2, 3, dtype=torch.bool),
            torch.zeros(1, 1, 5),
            torch.ones(1, 1, dtype=torch.bool),
        )
