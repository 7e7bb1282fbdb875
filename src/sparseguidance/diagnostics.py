"""Diagnostics to run before a sweep: does a sparse model's route carry work, and do SG's branches differ?

Two measurements on real data, x_t = (1 − t)·z + t·x with fixed noise z:
- block updates: for each transformer block, RMS(block(h) − h) / RMS(h) over the tokens the block sees,
  read through forward hooks during an ordinary forward (dense, or at the model's training γ). A route
  whose blocks read near zero has learned to do nothing, so dropping its tokens changes nothing;
- branch gaps: RMS(D(c; γ_strong) − D(c; γ_weak)), the signal Sparse Guidance scales, beside
  RMS(D(c) − D(∅)), the signal CFG scales, and RMS(D_main(c) − D_aux(c)) for AutoGuidance. D is the
  predicted velocity; the gaps of the denoised image x_t + (1 − t)·v are the same up to the factor (1 − t).
  For a text-to-image model c is the probe's prompts, and SG's gap is also measured without them (the
  empty prompt in both branches): how much of SG's signal the prompt carries.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from sparseguidance.checkpoints import atomic_write
from sparseguidance.conditions import Condition, TextCondition, null_condition
from sparseguidance.data import CAPTION_SOURCES, DataConfig, build_dataset, check_dataset
from sparseguidance.errors import ConfigError
from sparseguidance.models.prediction import unwrap
from sparseguidance.sampling.seeds import sample_generators
from sparseguidance.text import TextConfig, caption_table

PROBE_STREAM = 100  # token-subset streams of the probe, apart from sampling's streams


def rms(x: torch.Tensor) -> float:
    """Root mean square over every element."""
    return x.float().pow(2).mean().sqrt().item()


def named_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The transformer blocks in order: `0`, `1`, … then the mask decoder's `dec0`, `dec1`, …"""
    network = unwrap(model)[0]  # an ε or EDM network seen as a velocity model: its blocks are the network's
    blocks = [(str(i), block) for i, block in enumerate(network.blocks)]
    decoder = getattr(network, "decoder", None)
    return blocks + [(f"dec{i}", block) for i, block in enumerate(decoder.blocks)] if decoder is not None else blocks


@contextmanager
def recorded_updates(model: nn.Module) -> Iterator[dict[str, list[float]]]:
    """Record RMS(out − in) / RMS(in) of every block on every forward inside the context."""
    updates: dict[str, list[float]] = {name: [] for name, _ in named_blocks(model)}

    def hook(name: str):  # noqa: ANN202 - a forward hook's fixed signature
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            updates[name].append(rms(output - inputs[0]) / max(rms(inputs[0]), 1e-12))

        return record

    handles = [block.register_forward_hook(hook(name)) for name, block in named_blocks(model)]
    try:
        yield updates
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class Probe:
    """A fixed batch to measure on: clean samples x, their labels or prompts y, noise z and per-sample seeds."""

    x: torch.Tensor
    y: Condition
    z: torch.Tensor
    seed: int

    def x_t(self, t: float) -> torch.Tensor:
        """The point of the straight path at time t: (1 − t)·z + t·x."""
        return (1 - t) * self.z + t * self.x

    def generators(self, salt: int) -> list[torch.Generator]:
        """Per-sample token-subset generators, the same for every call with the same salt."""
        return sample_generators(self.seed, range(len(self.y)), stream=PROBE_STREAM + salt)


def probe_data(
    spec: str | None, model: nn.Module, count: int, text: TextConfig | None = None
) -> tuple[torch.Tensor, Condition]:
    """`count` samples spread over the data `spec` names (every class appears), checked against the model; a text
    model's captions come encoded by `text`'s encoder."""
    config = model.config
    text_model = getattr(config, "text_width", None) is not None
    if spec is None:
        if (config.in_channels, config.input_size, getattr(config, "num_classes", 10)) != (1, 32, 10):
            raise ConfigError("give --data (latents:DIR or folder:DIR): only MNIST-sized models default to mnist5k")
        spec = "mnist5k-captions:heldout" if text_model else "mnist5k:heldout"
    source, _, rest = spec.partition(":")
    if source in ("mnist5k", "mnist5k-captions"):
        data = DataConfig(source=source, split=rest or "heldout")
    elif source in ("folder", "captions"):
        data = DataConfig(source=source, path=rest, image_size=config.input_size, channels=config.in_channels)
    else:
        data = DataConfig(source=source, path=rest or None)
    if text_model != (data.source in CAPTION_SOURCES):
        need = f"captions ({', '.join(CAPTION_SOURCES)})" if text_model else "class labels, not captions"
        raise ConfigError(f"--data {spec}: this model needs {need}")
    dataset = build_dataset(data)
    check_dataset(
        dataset, (config.in_channels, config.input_size, config.input_size), getattr(config, "num_classes", None)
    )
    if not 1 <= count <= len(dataset):
        raise ConfigError(f"--num-images must lie in [1, {len(dataset)}] for this data, got {count}")
    # Spread the probe over the data set (every k-th sample), so that every class appears.
    x, y = dataset.load(list(range(0, len(dataset), len(dataset) // count))[:count])
    if text_model:
        y = caption_table([dataset.captions[i] for i in y.tolist()], text or TextConfig(), config.text_width, x.device)
    return x, y


def make_probe(x: torch.Tensor, y: Condition, seed: int = 0) -> Probe:
    """A probe of the given samples, with noise drawn from `seed`."""
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device)
    return Probe(x, y, z, seed)


def predict(
    net: nn.Module, probe: Probe, t: float, gamma: float = 0.0, salt: int = 0, labels: Condition | None = None
) -> torch.Tensor:
    """D(x_t, t, c; γ) on the probe, token subsets from the probe's stream `salt`; c = the probe's labels."""
    tt = torch.full((len(probe.y),), float(t), device=probe.x.device)
    labels = probe.y if labels is None else labels
    return net(probe.x_t(t), tt, labels, gamma=gamma, generator=probe.generators(salt) if gamma else None)


@torch.no_grad()
def block_updates(model: nn.Module, probe: Probe, times: Sequence[float], gamma: float = 0.0) -> dict[str, float]:
    """Mean relative update of each block over `times`, at token sparsity γ (0: the dense forward)."""
    with recorded_updates(model) as updates:
        for i, t in enumerate(times):
            predict(model, probe, t, gamma, salt=i)
    return {name: sum(values) / len(values) for name, values in updates.items() if values}


@dataclass(frozen=True)
class GapRow:
    """Branch gaps at one t: SG's for each (γ_strong, γ_weak) pair, CFG's, and AutoGuidance's if measured."""

    t: float
    sg: dict[str, float]
    cfg: float
    ag: float | None
    sg_null: dict[str, float] | None = None  # text models: SG's gap with the empty prompt in both branches


def pair_name(gamma_strong: float, gamma_weak: float) -> str:
    """`0.5/0.9`: how a (γ_strong, γ_weak) pair is written in tables and JSON."""
    return f"{gamma_strong:g}/{gamma_weak:g}"


@torch.no_grad()
def branch_gaps(
    model: nn.Module,
    probe: Probe,
    times: Sequence[float],
    pairs: Sequence[tuple[float, float]],
    weak_model: nn.Module | None = None,
) -> list[GapRow]:
    """For each t: RMS(D(c; γs) − D(c; γw)) per pair, RMS(D(c) − D(∅)), RMS(D_main(c) − D_aux(c))."""
    for gamma_strong, gamma_weak in pairs:
        if not 0 <= gamma_strong < gamma_weak < 1:
            raise ConfigError(f"a branch pair needs 0 ≤ γ_strong < γ_weak < 1, got {gamma_strong}/{gamma_weak}")
    if pairs and model.config.sparsity == "dense":
        raise ConfigError("this model is dense: SG's branch gap needs a routing or masking model")
    null = null_condition(probe.y, getattr(model, "null_class", None))

    def sg_gaps(t: float, labels: Condition) -> dict[str, float]:
        return {
            pair_name(gs, gw): rms(
                predict(model, probe, t, gs, 2 * k + 1, labels) - predict(model, probe, t, gw, 2 * k + 2, labels)
            )
            for k, (gs, gw) in enumerate(pairs)
        }

    rows = []
    for t in times:
        dense = predict(model, probe, t)
        ag = rms(dense - predict(weak_model, probe, t)) if weak_model is not None else None
        sg_null = sg_gaps(t, null) if isinstance(probe.y, TextCondition) else None
        rows.append(
            GapRow(float(t), sg_gaps(t, probe.y), rms(dense - predict(model, probe, t, labels=null)), ag, sg_null)
        )
    return rows


# -------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Inspection:
    """Everything `sparseguidance inspect` measures on one model (plain data, ready for JSON)."""

    sparsity: str
    train_gamma: float
    routed_blocks: list[str]
    updates_dense: dict[str, float]
    updates_train_gamma: dict[str, float] | None
    reference_updates: dict[str, float] | None
    gaps: list[GapRow]

    def update_series(self) -> list[tuple[str, dict[str, float]]]:
        """(label, updates per block): dense, at the training γ and the reference's, where measured."""
        series = [("dense", self.updates_dense)]
        if self.updates_train_gamma is not None:
            series.append((f"γ {self.train_gamma:g}", self.updates_train_gamma))
        if self.reference_updates is not None:
            series.append(("reference", self.reference_updates))
        return series

    def routed_update_ratio(self) -> float | None:
        """Mean over routed blocks of (this model's update ÷ the dense reference's same block), dense forwards."""
        if self.reference_updates is None or not self.routed_blocks:
            return None
        ratios = [self.updates_dense[b] / max(self.reference_updates[b], 1e-12) for b in self.routed_blocks]
        return sum(ratios) / len(ratios)

    def gap_ratios(self) -> dict[str, float]:
        """Mean over t of each SG gap ÷ the CFG gap at the same t: how strong SG's signal is next to CFG's."""
        if not self.gaps:
            return {}
        return {
            pair: sum(row.sg[pair] / max(row.cfg, 1e-12) for row in self.gaps) / len(self.gaps)
            for pair in self.gaps[0].sg
        }


def routed_block_names(model: nn.Module) -> list[str]:
    """Names of the blocks inside the model's routes (none for dense and masking models)."""
    return [str(i) for start, end in model.config.routes for i in range(start, end + 1)]


def inspect_model(
    model: nn.Module,
    probe: Probe,
    update_times: Sequence[float],
    gap_times: Sequence[float],
    pairs: Sequence[tuple[float, float]],
    weak_model: nn.Module | None = None,
    reference: nn.Module | None = None,
) -> Inspection:
    """Block updates (dense and at the training γ, and of a dense reference model) and branch gaps over t."""
    config = model.config
    if reference is not None and reference.config.depth != config.depth:
        raise ConfigError(f"the reference model has {reference.config.depth} blocks, this one {config.depth}")
    sparse = config.sparsity != "dense" and config.train_gamma > 0
    return Inspection(
        sparsity=config.sparsity,
        train_gamma=config.train_gamma,
        routed_blocks=routed_block_names(model),
        updates_dense=block_updates(model, probe, update_times),
        updates_train_gamma=block_updates(model, probe, update_times, config.train_gamma) if sparse else None,
        reference_updates=block_updates(reference, probe, update_times) if reference is not None else None,
        gaps=branch_gaps(model, probe, gap_times, pairs, weak_model),
    )


def as_json(inspection: Inspection) -> dict[str, object]:
    """The inspection as plain data, with the two summary ratios."""
    return {
        "sparsity": inspection.sparsity,
        "train_gamma": inspection.train_gamma,
        "routed_blocks": inspection.routed_blocks,
        "block_updates": {
            "dense": inspection.updates_dense,
            "train_gamma": inspection.updates_train_gamma,
            "reference_dense": inspection.reference_updates,
        },
        "routed_update_ratio": inspection.routed_update_ratio(),
        "branch_gaps": [
            {"t": r.t, "sg": r.sg, "cfg": r.cfg, "ag": r.ag, **({"sg_empty_prompt": r.sg_null} if r.sg_null else {})}
            for r in inspection.gaps
        ],
        "sg_gap_over_cfg_gap": inspection.gap_ratios(),
    }


def format_inspection(inspection: Inspection) -> str:
    """Two text tables (block updates; branch gaps over t) and the summary lines."""
    blocks, rows = list(inspection.updates_dense), inspection.update_series()
    routed = set(inspection.routed_blocks)
    header = "block        " + " ".join(f"{b + ('*' if b in routed else ''):>6}" for b in blocks)
    lines = ["relative update RMS(block(h) − h) / RMS(h)  (* routed)", header]
    lines += [
        f"{label:<12} " + " ".join(f"{values.get(b, float('nan')):6.3f}" for b in blocks) for label, values in rows
    ]
    ratio = inspection.routed_update_ratio()
    if ratio is not None:
        lines.append(f"routed blocks ÷ reference's same blocks (dense forwards): {ratio:.2f}")
    if inspection.gaps:
        pairs = list(inspection.gaps[0].sg)
        has_ag, has_null = inspection.gaps[0].ag is not None, inspection.gaps[0].sg_null is not None
        lines += ["", "branch gap RMS(D(c; γs) − D(c; γw)) beside RMS(D(c) − D(∅))" + (" and AG's" if has_ag else "")]
        if has_null:
            lines.append("(SG∅: the same SG gap with the empty prompt in both branches)")
        columns = [f"SG {p}" for p in pairs] + ([f"SG∅ {p}" for p in pairs] if has_null else [])
        columns += ["CFG"] + (["AG"] if has_ag else [])
        lines.append("t      " + " ".join(f"{c:>10}" for c in columns))
        for row in inspection.gaps:
            values = [row.sg[p] for p in pairs] + ([row.sg_null[p] for p in pairs] if has_null else [])
            values += [row.cfg] + ([row.ag] if has_ag else [])
            lines.append(f"{row.t:<6.2f} " + " ".join(f"{v:10.4f}" for v in values))
        ratios = inspection.gap_ratios()
        if ratios:
            lines.append("SG gap ÷ CFG gap, mean over t: " + ", ".join(f"{p} {r:.3f}" for p, r in ratios.items()))
    return "\n".join(lines)


def plot_inspection(inspection: Inspection, path: str, title: str) -> None:
    """Block updates as bars (routed blocks marked) and branch gaps over t as lines, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    blocks, series = list(inspection.updates_dense), inspection.update_series()
    width = 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        left.bar([i + k * width for i in range(len(blocks))], [values.get(b, 0.0) for b in blocks], width, label=label)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(blocks))])
    left.set_xticklabels([b + ("*" if b in inspection.routed_blocks else "") for b in blocks])
    left.set(xlabel="block (* routed)", ylabel="RMS(block(h) − h) / RMS(h)", title="block updates")
    left.legend(fontsize=8)
    if inspection.gaps:
        ts = [row.t for row in inspection.gaps]
        for pair in inspection.gaps[0].sg:
            right.plot(ts, [row.sg[pair] for row in inspection.gaps], marker="o", label=f"SG {pair}")
            if inspection.gaps[0].sg_null is not None:
                right.plot(ts, [row.sg_null[pair] for row in inspection.gaps], ":", marker="x", label=f"SG∅ {pair}")
        right.plot(ts, [row.cfg for row in inspection.gaps], "k--", label="CFG: D(c) − D(∅)")
        if inspection.gaps[0].ag is not None:
            right.plot(ts, [row.ag for row in inspection.gaps], "k:", label="AG: main − aux")
        right.set(xlabel="t (0 noise, 1 data)", ylabel="RMS of the branch difference", title="branch gaps")
        right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
