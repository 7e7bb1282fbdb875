"""Prompt following of a text-to-image model trained on captioned MNIST: CFG vs SG vs CFG+SG, with a grid.

    python benchmarks/t2i_prompts.py RUN/model.safetensors [--per-prompt 4] [--steps 20] [--threads 1]
                                    [--grid docs/images/t2i.png] [--out benchmarks/results/t2i-prompts.json]

Prompts: for every digit, "the digit D", "a thick, right-slanted WORD" and "a thin, left-slanted WORD" (30 in
all). For each generated image the shipped MNIST classifier reads the digit (digit accuracy: it equals the
prompt's), and the digit's stroke thickness and slant are measured and cut into its class's thirds as the
captions were (attribute accuracy: the asked-for third, over the attributes a prompt names). Each method's ω is
chosen on the tuning seed (0) by digit accuracy, then attribute accuracy; the reported rows are a second seed
(1) at that ω, beside GFLOPs per image. The grid shows six prompts (rows) under each method (columns of three
samples) on the reported seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from sparseguidance.captions import ATTRIBUTES, DIGIT_WORDS, attribute_buckets, digit_attributes, render
from sparseguidance.checkpoints import load_model
from sparseguidance.guidance import Guidance, make_guidance
from sparseguidance.images import to_uint8
from sparseguidance.metrics.mnist_features import load_classifier
from sparseguidance.provenance import provenance, write_json
from sparseguidance.sampling import generate
from sparseguidance.text import load_text_encoder, stored_text_config

RESULTS = Path(__file__).parent / "results" / "t2i-prompts.json"
TUNING_SEED, REPORT_SEED = 0, 1
SWEEPS = {  # method -> (γ_strong, γ_weak) and the ω tried; SG's and CFG+SG's γ are PAPER.md §5's
    "none": (None, None, (1.0,)),
    "cfg": (None, None, (1.5, 3.0, 5.0)),
    "sg": (0.1, 0.8, (1.8, 3.0, 5.0)),
    "cfg+sg": (0.2, 0.7, (1.5, 2.5, 4.0)),
}
ASKED = {"thick, right-slanted": (2, 2), "thin, left-slanted": (0, 0)}  # words -> (thickness, slant) third
GRID_PROMPTS = (0, 10, 21, 7, 17, 28)  # indices into prompts(): a mix of digits and phrasings


def prompts() -> list[tuple[str, int, tuple[int, int] | None]]:
    """(prompt, digit, asked (thickness, slant) third or None) for every digit and phrasing."""
    rows: list[tuple[str, int, tuple[int, int] | None]] = []
    for digit in range(10):
        rows.append((render(digit, [None, None, None], 2, False), digit, None))  # the digit 3
        for words, (thick, slant) in ASKED.items():
            rows.append((f"{'an' if words[0] in 'aeiou' else 'a'} {words} {DIGIT_WORDS[digit]}", digit, (thick, slant)))
    return rows


def guidance(method: str, scale: float) -> Guidance:
    """The method at ω = `scale` with its sweep's γ pair."""
    strong, weak, _ = SWEEPS[method]
    return make_guidance(method, scale, strong, weak) if strong is not None else make_guidance(method, scale)


def score(images: np.ndarray, table: list[tuple[str, int, tuple[int, int] | None]], per: int) -> dict[str, float]:
    """Digit accuracy and attribute accuracy of uint8 images (N, 32, 32, 1), image k made for prompt k // per."""
    digits = np.array([table[k // per][1] for k in range(len(images))])
    logits = load_classifier()(torch.from_numpy(images))["logits"].detach().numpy()
    buckets = attribute_buckets(digit_attributes(images[..., 0]), digits)  # (N, 3): thickness, slant, width
    hits = [
        buckets[k, ATTRIBUTES.index(name)] == third
        for k in range(len(images))
        if (asked := table[k // per][2]) is not None
        for name, third in zip(("thickness", "slant"), asked, strict=True)
    ]
    return {"digit_accuracy": float((logits.argmax(1) == digits).mean()), "attribute_accuracy": float(np.mean(hits))}


def main() -> None:
    """Tune ω per method on seed 0, report on seed 1, draw the grid, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--per-prompt", type=int, default=4, help="images per prompt and cell")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--grid", type=Path, default=Path("docs/images/t2i.png"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    table = prompts()
    states = load_text_encoder(stored_text_config(args.checkpoint)).encode([p for p, _, _ in table])
    conditions = states[torch.arange(len(table) * args.per_prompt) // args.per_prompt]

    def cell(method: str, scale: float, seed: int) -> tuple[dict[str, float], np.ndarray]:
        samples = generate(guidance(method, scale), {"main": model}, conditions, seed=seed, steps=args.steps)
        images = to_uint8(samples.images)
        result = {**score(images, table, args.per_prompt), "gflops_per_image": samples.cost.flops.paper / 1e9}
        print(f"{method:7} ω {scale:g} seed {seed}: {result}", flush=True)
        return result, images

    tuning, rows, shown = [], [], {}
    for method, (_, _, scales) in SWEEPS.items():
        tried = [(scale, cell(method, scale, TUNING_SEED)[0]) for scale in scales]
        tuning += [{"method": method, "scale": s, **r} for s, r in tried]
        scale = max(tried, key=lambda sr: (sr[1]["digit_accuracy"], sr[1]["attribute_accuracy"], -sr[0]))[0]
        result, images = cell(method, scale, REPORT_SEED)
        rows.append({"method": method, "scale": scale, "gammas": SWEEPS[method][:2], **result})
        shown[f"{method} ω {scale:g}"] = images
    draw_grid(args.grid, table, shown, args.per_prompt)
    write_json(
        args.out,
        {
            **provenance(),
            "checkpoint": str(args.checkpoint),
            "steps": args.steps,
            "per_prompt": args.per_prompt,
            "prompts": [p for p, _, _ in table],
            "tuning_seed": TUNING_SEED,
            "report_seed": REPORT_SEED,
            "tuning": tuning,
            "rows": rows,
            "grid": str(args.grid),
        },
    )


def draw_grid(path: Path, table: list, shown: dict[str, np.ndarray], per: int, samples: int = 3) -> None:
    """Rows: GRID_PROMPTS; columns: each method's first `samples` images of that prompt."""
    fig = Figure(figsize=(1.1 * samples * len(shown) + 2.2, 1.15 * len(GRID_PROMPTS) + 0.4), dpi=100)
    axes = fig.subplots(len(GRID_PROMPTS), len(shown))
    for r, index in enumerate(GRID_PROMPTS):
        for c, (name, images) in enumerate(shown.items()):
            strip = np.concatenate(list(images[index * per : index * per + samples, ..., 0]), axis=1)
            ax = axes[r, c]
            ax.imshow(strip, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(table[index][0], fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.2, right=0.99, top=0.93, bottom=0.01, wspace=0.05, hspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    main()
