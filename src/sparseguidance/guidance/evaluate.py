"""The guided velocity: a Guidance declaration run on its models at (x, t, step), the one place branches run.

Per call: the active branches (`guidance.branches(t)`; the weak one is skipped at ω = 1, where its weight
is 0), each branch's condition (c, ∅, or an independent c′) and its γ at this step; branches that share
model and γ (hence token count) run as one forward over the concatenated batch, the others separately;
then ω·D_strong + (1 − ω)·D_weak (`guidance.combine`).

Shared prefix: a model with `prefix`/`rest` (models.dit.DiT) runs its dense start (embeddings and the
blocks before the first route) once per (model, condition) — the input x is the same for every branch —
and each γ from there on: SG's two conditional branches share it, CFG+SG's (c and ∅) do not. The result is
the unshared one exactly; only the work changes. Models without a prefix (e.g. wrappers) run whole.

Randomness: with one generator per sample, row k of every forward (and its ICG label) draws from sample
k's generator, so a sample's trajectory does not depend on the batch it is in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sparseguidance.conditions import Condition, TextCondition, cat_conditions, null_condition
from sparseguidance.errors import ConfigError
from sparseguidance.guidance.methods import Branch, Guidance, PrefixKey
from sparseguidance.sparsity import Generators

Models = Mapping[str, nn.Module]  # "main" (and "weak" for AutoGuidance) -> model(x, t, y, gamma=, generator=)


@dataclass
class Tally:
    """Work done, counted in samples: velocity evaluations, forwards per (model role, γ), prefixes per role."""

    evaluations: int = 0
    forwards: Counter[tuple[str, float]] = field(default_factory=Counter)  # branch evaluations (rest of a forward)
    prefixes: Counter[str] = field(default_factory=Counter)  # dense prefixes run (one per forward when unshared)


def check_models(guidance: Guidance, models: Models) -> None:
    """Raise ConfigError unless `models` has every model the guidance uses, all on the same inputs and classes."""
    if "main" not in models:
        raise ConfigError("guided sampling needs a main model")
    if guidance.uses_weak_model and "weak" not in models:
        raise ConfigError(f"guidance {guidance.name!r} needs a weak (auxiliary) model, e.g. an early checkpoint")
    main = conditioning(models["main"].config)
    for role, model in models.items():
        if conditioning(model.config) != main:
            raise ConfigError(
                f"the {role} model takes {describe(conditioning(model.config))}; the main model {describe(main)}"
            )


def conditioning(config: Any) -> tuple[int, int, int | None, int | None]:
    """What a model takes: input channels, input size, class count (class models), text width (text models)."""
    return (
        config.in_channels,
        config.input_size,
        getattr(config, "num_classes", None),
        getattr(config, "text_width", None),
    )


def describe(conditioning: tuple[int, int, int | None, int | None]) -> str:
    """'C×S² inputs and N classes' or '… and text states of width E'."""
    channels, size, classes, width = conditioning
    condition = f"{classes} classes" if classes is not None else f"text states of width {width}"
    return f"{channels}×{size}² inputs and {condition}"


def independent_labels(num_classes: int, batch: int, generators: Generators, device: torch.device) -> torch.Tensor:
    """ICG's c′: a class drawn uniformly per sample, independently of the sample's own class."""
    if isinstance(generators, Sequence):
        drawn = [torch.randint(num_classes, (), generator=g, device=g.device) for g in generators]
        return torch.stack(drawn).to(device)
    gen_device = generators.device if generators is not None else device
    return torch.randint(num_classes, (batch,), generator=generators, device=gen_device).to(device)


def branch_labels(branch: Branch, labels: Condition, model: nn.Module, generators: Generators) -> Condition:
    """The condition of a branch: the sample's class or prompt c, the null class or empty prompt ∅, or a class c′."""
    if branch.condition == "class":
        return labels
    if branch.condition == "null":
        return null_condition(labels, getattr(model, "null_class", None))
    if isinstance(labels, TextCondition):
        raise ConfigError("icg draws an independent class c′, so it needs class labels; prompts take the other methods")
    return independent_labels(model.config.num_classes, labels.shape[0], generators, labels.device)


def repeat(x: torch.Tensor, times: int) -> torch.Tensor:
    """`times` copies of a batch stacked along dim 0 (x itself for one)."""
    return x if times == 1 else torch.cat([x] * times)


def repeat_generators(generators: Generators, times: int) -> Generators:
    """Generators for `times` copies of the batch stacked along dim 0 (one list per copy, in order)."""
    return list(generators) * times if isinstance(generators, Sequence) else generators


def guided_velocity(
    x: torch.Tensor,
    t: float,
    step: int,
    *,
    guidance: Guidance,
    models: Models,
    labels: Condition,
    num_steps: int,
    generators: Generators = None,
    tally: Tally | None = None,
    share: bool = True,
) -> torch.Tensor:
    """The guided velocity at x, time t and sampling step `step` of `num_steps` (γ schedules read the step).

    guidance:   the method (branches, ω, interval);    models:  role -> model ("main", "weak");
    labels:     the samples' classes (B,) or prompts;   generators: one torch.Generator, or one per sample;
    tally:      where to count evaluations and forwards (optional);
    share:      run a prefix once for branches of one model and condition (False: every branch whole).
    """
    branches = guidance.branches(t)
    if guidance.scale == 1.0:
        branches = branches[:1]  # lerp with weight 1 is exactly D_strong: the weak forward would be wasted
    gammas = [b.gamma.at(step, num_steps) for b in branches]
    conditions: dict[PrefixKey, torch.Tensor] = {}
    for b in branches:  # in branch order, so ICG's c′ is drawn before any token subset
        if b.prefix_key not in conditions:
            conditions[b.prefix_key] = branch_labels(b, labels, models[b.model], generators)
    groups: dict[tuple[str, float], list[int]] = {}
    for i, (branch, gamma) in enumerate(zip(branches, gammas, strict=True)):
        groups.setdefault((branch.model, gamma), []).append(i)  # same model and γ: same token count, one forward
    predictions: dict[int, torch.Tensor] = {}
    prefixes: dict[PrefixKey, Any] = {}  # (model, condition) -> its prefix, run once for every γ
    for (role, gamma), members in groups.items():
        model, n = models[role], len(members)
        keys = [branches[i].prefix_key for i in members]
        generator = repeat_generators(generators, n)  # rest draws in group order, as whole forwards did
        if share and hasattr(model, "prefix"):
            new = [k for k in dict.fromkeys(keys) if k not in prefixes]  # conditions no earlier group has run
            if new:  # one prefix over their batches, as one forward over them would run it
                state = model.prefix(repeat(x, len(new)), t, cat_conditions([conditions[k] for k in new]))
                prefixes.update(zip(new, state.chunk(len(new)), strict=True))
            state = type(prefixes[keys[0]]).cat([prefixes[k] for k in keys])
            out = model.rest(state, gamma=gamma, generator=generator)
            prefix_rows = len(new) * x.shape[0]
        else:
            y = cat_conditions([conditions[k] for k in keys])
            out = model(repeat(x, n), t, y, gamma=gamma, generator=generator)
            prefix_rows = n * x.shape[0]
        for i, chunk in zip(members, out.chunk(n), strict=True):
            predictions[i] = chunk.to(x.dtype)  # autocast's half-precision output: guide in the sampler's dtype
        if tally is not None:
            tally.forwards[(role, gamma)] += n * x.shape[0]
            tally.prefixes[role] += prefix_rows
    if tally is not None:
        tally.evaluations += x.shape[0]
    return guidance.combine(predictions[0], predictions.get(1))
