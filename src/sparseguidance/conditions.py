"""Text conditions: a batch of prompts as a frozen encoder's per-token states, with the empty prompt beside them.

Class-conditional models take labels (B,) and know their own null class ∅; a text-conditioned model takes a
`TextCondition`, which carries the embedding of the empty prompt "" so that CFG's unconditional branch (and
CFG+SG's weak one) needs nothing else. Batches of different prompt lengths stack by padding; the mask says
which positions are real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from sparseguidance.errors import ConfigError


@dataclass(frozen=True)
class TextCondition:
    """Prompts as text-encoder states (B, L, E) with a token mask (B, L), and the empty prompt's (1, L0, E)."""

    states: torch.Tensor  # (B, L, E) float
    mask: torch.Tensor  # (B, L) bool, True at real tokens
    empty_states: torch.Tensor  # (1, L0, E): the encoder's states for ""
    empty_mask: torch.Tensor  # (1, L0) bool

    def __post_init__(self) -> None:
        B, L = self.mask.shape if self.mask.dim() == 2 else (-1, -1)
        if self.states.dim() != 3 or self.states.shape[:2] != (B, L) or self.mask.dtype != torch.bool:
            raise ConfigError(
                f"text condition needs states (B, L, E) and a bool mask (B, L), got {tuple(self.states.shape)} "
                f"and {tuple(self.mask.shape)} {self.mask.dtype}"
            )
        if self.empty_states.shape[0] != 1 or self.empty_states.shape[2:] != self.states.shape[2:]:
            raise ConfigError(
                f"the empty prompt's states must be (1, L0, {self.states.shape[2]}), "
                f"got {tuple(self.empty_states.shape)}"
            )
        if self.empty_mask.shape != self.empty_states.shape[:2] or self.empty_mask.dtype != torch.bool:
            raise ConfigError("the empty prompt's mask must be a bool (1, L0) tensor")

    def __len__(self) -> int:
        return self.states.shape[0]

    @property
    def width(self) -> int:
        """E, the text encoder's state width."""
        return self.states.shape[2]

    def null(self) -> TextCondition:
        """The same batch size, every row the empty prompt (CFG's ∅)."""
        B, (L0, E) = len(self), self.empty_states.shape[1:]
        states, mask = self.empty_states.expand(B, L0, E), self.empty_mask.expand(B, L0)
        return TextCondition(states, mask, self.empty_states, self.empty_mask)

    def __getitem__(self, rows: slice | torch.Tensor) -> TextCondition:
        """Rows picked by a slice, an index tensor or a bool tensor (e.g. one batch of a run)."""
        return TextCondition(self.states[rows], self.mask[rows], self.empty_states, self.empty_mask)

    def where(self, drop: torch.Tensor) -> TextCondition:
        """Rows with drop (B,) True replaced by the empty prompt: condition dropout for CFG training."""
        null = self.null()
        L = max(self.states.shape[1], null.states.shape[1])
        a, b = pad(self, L), pad(null, L)
        states = torch.where(drop[:, None, None], b.states, a.states)
        mask = torch.where(drop[:, None], b.mask, a.mask)
        return TextCondition(states, mask, self.empty_states, self.empty_mask)

    def chunk(self, n: int) -> list[TextCondition]:
        """Split into n equal batches."""
        pairs = zip(self.states.chunk(n), self.mask.chunk(n), strict=True)
        return [TextCondition(s, m, self.empty_states, self.empty_mask) for s, m in pairs]

    def to(self, device: torch.device | str) -> TextCondition:
        """The same condition on another device."""
        move = [x.to(device) for x in (self.states, self.mask, self.empty_states, self.empty_mask)]
        return TextCondition(*move)

    def cpu(self) -> TextCondition:
        """The same condition on the CPU."""
        return self.to("cpu")

    @staticmethod
    def cat(conditions: Sequence[TextCondition]) -> TextCondition:
        """Several batches as one, padded to the longest prompt."""
        if len(conditions) == 1:
            return conditions[0]
        L = max(c.states.shape[1] for c in conditions)
        padded = [pad(c, L) for c in conditions]
        first = conditions[0]
        states, mask = torch.cat([p.states for p in padded]), torch.cat([p.mask for p in padded])
        return TextCondition(states, mask, first.empty_states, first.empty_mask)


def pad(condition: TextCondition, length: int) -> TextCondition:
    """Pad a condition's token axis to `length` with zero states and False mask."""
    B, L, E = condition.states.shape
    if L == length:
        return condition
    states = torch.cat([condition.states, condition.states.new_zeros(B, length - L, E)], dim=1)
    mask = torch.cat([condition.mask, condition.mask.new_zeros(B, length - L)], dim=1)
    return TextCondition(states, mask, condition.empty_states, condition.empty_mask)


Condition = torch.Tensor | TextCondition  # class labels (B,) or prompts


def cat_conditions(conditions: Sequence[Condition]) -> Condition:
    """Stack several batches' conditions (labels or prompts) into one batch."""
    if isinstance(conditions[0], TextCondition):
        return TextCondition.cat(conditions)
    return torch.cat(list(conditions))


def null_condition(condition: Condition, null_class: int | None) -> Condition:
    """CFG's ∅ for a batch: every row the empty prompt, or the null class label."""
    if isinstance(condition, TextCondition):
        return condition.null()
    return torch.full_like(condition, null_class)
