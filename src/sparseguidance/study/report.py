"""The study's outputs: tables as Markdown and JSON (`summary.json`), and the figures, all from StudyResults.

Nothing here is typed in: every number comes from the run's cells. FLOPs are reported in the paper convention
(linear layers, one per multiply-add, attention matmuls not counted; flops.py), as PAPER.md Table 2 counts them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FormatStrFormatter

from sparseguidance.files import atomic_write
from sparseguidance.guidance import GammaSchedule
from sparseguidance.metrics.scores import is_warning, parts_text
from sparseguidance.provenance import write_json
from sparseguidance.study.cells import REFERENCE, describe_guidance
from sparseguidance.study.finetune import LR_FACTOR
from sparseguidance.study.presets import SPARSITIES, TUNING_SEED, StudyPreset
from sparseguidance.study.runner import Point, Row, StudyResults, at_edge

TABLE1_GUIDANCE = ("none", "cfg", "sg")  # per sparsity; the paper's Table 1 compares the last two
TABLE2_NAMES = {  # row on the routing model -> (summary key, label as in PAPER.md Table 2)
    "none": ("none", "no guidance"),
    "cfg": ("cfg", "+ CFG"),
    "ag": ("ag", "+ AutoGuidance"),
    "icg": ("icg", "+ ICG"),
    "sg_flops": ("sg_flops", "+ SG_FLOPS (same checkpoint)"),
    "sg": ("sg", "+ SG (best FID, same checkpoint)"),
    "ag+sg": ("sg_fid", "+ SG_FID (AG + SG, cosine γ)"),
}
SG_FLOPS_COST_GOAL = 0.85  # PAPER.md Table 2: SG_FLOPS 97.67 GFLOPs/step against no guidance's 114.42
PAPER_SG_FLOPS_COST = "97.67 / 114.42 = 0.854"
MASKING_FLOOR = 1.2  # SG may trail CFG by a fifth on the masking model before we call it failed
NO_FLOPS = "no SG setting on the grid costs less per image than no guidance"
WIDE = 5.0  # an FID axis or colour scale turns logarithmic when its largest value is this many times its smallest
HEAT_ACROSS = 3  # heat-map panels (one per ω) side by side
VARIANT_LABELS = {"sg": "SG", "cfg": "CFG", "dense-ft+cfg": "dense fine-tune + CFG"}
CONVENTION = "paper convention: linear layers, one FLOP per multiply-add, attention matmuls not counted"
COLOURS = {"none": "black", "cfg": "tab:blue", "ag": "tab:purple", "icg": "tab:brown", "sg": "tab:orange"}
COLOURS |= {"ag+sg": "tab:red", "sg_flops": "tab:olive", "dense-ft+cfg": "tab:green"}


# ---------------------------------------------------------------------------------------------- pieces
def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices, by cost, of the points (cost, error) that no other point beats (≤ in both, < in one); of equal
    points only the first is listed."""
    order = sorted(range(len(points)), key=lambda i: points[i])
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:  # cheaper points all have a higher error: nothing dominates this one
            front.append(i)
            best = points[i][1]
    return front


def gamma_json(value: float | GammaSchedule | None) -> float | dict[str, Any] | None:
    """A γ as plain data: the number, or {start, end, kind} for a schedule."""
    if not isinstance(value, GammaSchedule):
        return value
    if value.is_constant:
        return value.start
    return {"start": value.start, "end": value.end, "kind": value.kind}


def point_numbers(point: Point) -> dict[str, Any]:
    """One cell's setting, metrics and cost."""
    method = point.method
    return {
        "sparsity": method.sparsity,
        "guidance": method.guidance,
        "setting": method.setting(point.scale),
        "gammas": method.gammas,
        "scale": point.scale,
        "gamma_strong": gamma_json(method.gamma_strong),
        "gamma_weak": gamma_json(method.gamma_weak),
        **point.result.metrics,
        "gflops_per_image": point.gflops_per_image,
        "images": point.cell.count,
        "seed": point.cell.seed,
    }


def row_numbers(row: Row, steps: int) -> dict[str, Any]:
    """A reported row: its setting, every metric's mean over the seed sets, the FID spread, the cost."""
    first = point_numbers(row.points[0])
    metrics = {name: row.mean(name) for name in row.points[0].result.metrics}
    return {
        **{k: first[k] for k in ("setting", "scale", "gamma_strong", "gamma_weak")},
        **metrics,
        "fid_std": row.std("fid"),
        "fid_per_seed": row.values("fid").tolist(),
        "gflops_per_image": first["gflops_per_image"],
        "gflops_per_step": first["gflops_per_image"] / steps,
        "images_per_seed": row.points[0].cell.count,
        "seeds": [p.cell.seed for p in row.points],
    }


def paired_delta(row: Row, base: Row, name: str) -> dict[str, Any]:
    """FID(row) − FID(base), paired by seed set: mean, std, and whether it exceeds both rows' seed spread."""
    if row is base:
        return {name: None, f"{name}_std": None, f"{name}_beyond_spread": None}
    diffs = row.values("fid") - base.values("fid")
    mean = float(diffs.mean())
    return {
        name: mean,
        f"{name}_std": float(diffs.std(ddof=1)),
        f"{name}_beyond_spread": abs(mean) > max(row.std("fid"), base.std("fid")),
    }


def rows_by_name(results: StudyResults) -> dict[tuple[str, str], Row]:
    """Reported rows by (sparsity, row name)."""
    return {(r.method.sparsity, r.name): r for r in results.rows}


def chosen_for(results: StudyResults) -> dict[Point, list[str]]:
    """The tuning points some row chose, with the names of those rows."""
    found: dict[Point, list[str]] = {}
    for (_, name), point in results.selected.items():
        if point is not None:
            found.setdefault(point, []).append(name)
    return found


# ---------------------------------------------------------------------------------------------- tables
def table1(results: StudyResults, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """Table 1 analogue: none, CFG and SG (best FID) on the routing and the masking model, with SG − CFG paired;
    each IS with the reason it is biased (`is_warning`, None where its parts are large enough), from `evaluation`."""
    rows, steps = rows_by_name(results), results.preset.steps
    table = []
    for sparsity in SPARSITIES:
        cfg = rows[(sparsity, "cfg")]
        for guidance in TABLE1_GUIDANCE:
            row = rows[(sparsity, guidance)]
            numbers = row_numbers(row, steps)
            caveat = is_warning(
                numbers["images_per_seed"], evaluation["label_classes"], evaluation["conventions"]["is"]
            )
            table.append(
                {
                    "sparsity": sparsity,
                    "guidance": guidance,
                    **numbers,
                    **paired_delta(row, cfg, "delta_fid_vs_cfg"),
                    "is_warning": caveat,
                }
            )
    return table


def table2(results: StudyResults) -> list[dict[str, Any]]:
    """Table 2 analogue: every method on the routing model, Δ FID and Δ GFLOPs per step against no guidance; an
    SG_FLOPS line without numbers (and a note) when no SG setting was cheaper than no guidance."""
    rows, steps = rows_by_name(results), results.preset.steps
    none = rows[("routing", "none")]
    base_cost = row_numbers(none, steps)["gflops_per_step"]
    table = []
    for name, (key, label) in TABLE2_NAMES.items():
        row = rows.get(("routing", name))
        if row is None:
            table.append({"method": key, "label": label, "guidance": "sg", "fid": None, "note": NO_FLOPS})
            continue
        numbers = row_numbers(row, steps)
        table.append(
            {
                "method": key,
                "label": label,
                "guidance": row.method.guidance,
                **numbers,
                **paired_delta(row, none, "delta_fid"),
                "delta_gflops_per_step": numbers["gflops_per_step"] - base_cost,
            }
        )
    return table


def target(measure: str, value: float | None, floor: float | None, goal: float, paper: str) -> dict[str, Any]:
    """One target line: the measure's value, its floor and goal (both upper bounds) and whether each is met."""
    met = value is not None and value <= goal
    return {
        "measure": measure,
        "value": value,
        "floor": floor,
        "floor_met": None if floor is None else value is not None and value <= floor,
        "goal": goal,
        "goal_met": met,
        "paper": paper,
    }


def targets(table1_rows: list[dict[str, Any]], table2_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What SG is held to, read off Tables 1 and 2 (means over the reported seed sets): SG_FLOPS cheaper than no
    guidance and at least halfway to CFG in FID, SG at most CFG's FID (masking: a floor of 1.2 × CFG)."""
    t2 = {r["method"]: r for r in table2_rows}
    none, cfg, flops = t2["none"], t2["cfg"], t2["sg_flops"]
    cost = None if flops["fid"] is None else flops["gflops_per_step"] / none["gflops_per_step"]
    lines = [
        target("SG_FLOPS GFLOPs/step ÷ no guidance's", cost, 1.0, SG_FLOPS_COST_GOAL, PAPER_SG_FLOPS_COST),
        target(
            "SG_FLOPS FID (floor: halfway from no guidance to CFG; goal: CFG's)",
            flops["fid"],
            (none["fid"] + cfg["fid"]) / 2,
            cfg["fid"],
            "2.14 vs CFG 2.57",
        ),
    ]
    t1 = {(r["sparsity"], r["guidance"]): r for r in table1_rows}
    for sparsity, floor, paper in (("routing", None, "2.07 vs 2.95"), ("masking", MASKING_FLOOR, "5.73 vs 5.82")):
        ratio = t1[(sparsity, "sg")]["fid"] / t1[(sparsity, "cfg")]["fid"]
        lines.append(target(f"Table 1, {sparsity}: SG FID ÷ CFG FID", ratio, floor, 1.0, paper))
    return lines


def tuning_table(results: StudyResults) -> list[dict[str, Any]]:
    """Every setting tried on the tuning seed set, with the rows that chose it and whether its ω is a sweep's edge."""
    chosen = chosen_for(results)
    return [
        {
            **point_numbers(p),
            "chosen_for": chosen.get(p, []),
            "at_edge": at_edge(p.method, p.scale, results.preset),
        }
        for p in results.tuning
    ]


def heat_table(tuning: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The heat maps' cells: SG's lines of the tuning table, FID at each (ω, γ_strong, γ_weak) of the grid."""
    return [r for r in tuning if r["guidance"] == "sg"]


def diversity_table(results: StudyResults) -> list[dict[str, Any]]:
    """Distances of guided samples to the unguided conditional samples of the same noise (mean ± std over seeds)."""
    return [
        {
            "sparsity": d.row.method.sparsity,
            "guidance": d.row.name,
            "setting": d.row.method.setting(d.row.scale),
            "pixel_rms": float(np.mean(d.pixel)),
            "pixel_rms_std": float(np.std(d.pixel, ddof=1)),
            "feature_l2": float(np.mean(d.feature)),
            "feature_l2_std": float(np.std(d.feature, ddof=1)),
        }
        for d in results.diversity
    ]


def pareto_table(results: StudyResults) -> list[dict[str, Any]]:
    """Every distinct setting on the tuning seed set with cost, FID, front membership and whether a row chose it."""
    points: dict[str, Point] = {}
    for p in results.tuning:
        points.setdefault(json.dumps([p.method.sparsity, describe_guidance(p.cell.guidance)]), p)
    chosen = chosen_for(results)
    table = []
    for sparsity in SPARSITIES:
        mine = [p for p in points.values() if p.method.sparsity == sparsity]
        front = set(pareto_front([(p.gflops_per_image, p.fid) for p in mine]))
        for i, p in enumerate(mine):
            table.append({**point_numbers(p), "on_front": i in front, "selected": p in chosen})
    return table


def training_table(results: StudyResults) -> list[dict[str, Any]]:
    """Fig. 5: FID of SG, CFG and dense fine-tune + CFG at each training point of the routing run."""
    return [
        {
            "step": t.step,
            "variant": t.variant,
            "model": t.row.points[0].cell.model,
            "setting": t.row.method.setting(t.row.scale),
            "fid": t.row.mean("fid"),
            "fid_std": t.row.std("fid") if len(t.row.points) > 1 else None,
            "fid_per_seed": t.row.values("fid").tolist(),
            "gflops_per_image": t.row.points[0].gflops_per_image,
            "images_per_seed": t.row.points[0].cell.count,
            "seeds": [p.cell.seed for p in t.row.points],
        }
        for t in results.training
    ]


# ---------------------------------------------------------------------------------------------- Markdown
def markdown(header: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(rows + ["| " + " | ".join(line) + " |" for line in lines]) + "\n"


def num(value: float | None, digits: int = 2) -> str:
    """A number for a table ('—' for none)."""
    return "—" if value is None else f"{value:.{digits}f}"


def pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    """`mean ± std` (the mean alone without a std)."""
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def delta_text(row: dict[str, Any], name: str) -> str:
    """A paired Δ with its std, starred when it exceeds the seed-to-seed spread."""
    if row[name] is None:
        return "—"
    return f"{row[name]:+.2f} ± {row[f'{name}_std']:.2f}{' *' if row[f'{name}_beyond_spread'] else ''}"


def table1_markdown(rows: list[dict[str, Any]]) -> str:
    """Table 1 as Markdown; an IS that its sample count biases is marked †, the reason under the table."""
    header = ("model", "guidance", "setting", "FID", "Δ FID vs CFG", "Precision", "Recall", "IS", "Accuracy")
    lines = [
        (
            r["sparsity"],
            r["guidance"],
            r["setting"] or "—",
            pm(r["fid"], r["fid_std"]),
            delta_text(r, "delta_fid_vs_cfg"),
            num(r.get("precision"), 3),
            num(r.get("recall"), 3),
            num(r.get("is")) + (" †" if r["is_warning"] else ""),
            num(r.get("accuracy"), 3),
        )
        for r in rows
    ]
    caveats = sorted({r["is_warning"] for r in rows if r["is_warning"]})
    return markdown(header, lines) + "".join(f"\n† {caveat}.\n" for caveat in caveats)


def table2_markdown(rows: list[dict[str, Any]]) -> str:
    """Table 2 as Markdown (a row without numbers carries its note)."""
    header = ("method", "setting", "FID", "Δ FID", "GFLOPs/step", "Δ GFLOPs/step", "Precision", "Recall")
    lines = [
        (r["label"], r["note"], *("—",) * 6)
        if r["fid"] is None
        else (
            r["label"],
            r["setting"] or "—",
            pm(r["fid"], r["fid_std"]),
            delta_text(r, "delta_fid"),
            num(r["gflops_per_step"], 3),
            f"{r['delta_gflops_per_step']:+.3f}",
            num(r.get("precision"), 3),
            num(r.get("recall"), 3),
        )
        for r in rows
    ]
    return markdown(header, lines)


def targets_markdown(rows: list[dict[str, Any]]) -> str:
    """The targets as Markdown: value, floor and goal (upper bounds) with whether each is met."""
    header = ("measure", "value", "floor", "floor met", "goal", "goal met", "paper")

    def verdict(met: bool | None) -> str:
        return "—" if met is None else "yes" if met else "**no**"

    lines = [
        (r["measure"], num(r["value"]), num(r["floor"]), verdict(r["floor_met"]))
        + (num(r["goal"]), verdict(r["goal_met"]), r["paper"])
        for r in rows
    ]
    return markdown(header, lines)


def tuning_markdown(rows: list[dict[str, Any]]) -> str:
    """FID on the tuning seed set over ω for each chosen setting (SG: its γ pair; the whole grid is in heatmaps.md),
    the chosen ω in bold, and the rows that chose it."""
    groups: dict[tuple[str, str, str], dict[float, dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["sparsity"], r["guidance"], r["gammas"]), {})[r["scale"]] = r
    chosen = [(key, r) for key, by_scale in groups.items() for r in by_scale.values() if r["chosen_for"]]
    scales = sorted({s for key, _ in chosen for s in groups[key]})
    lines = []
    for (sparsity, guidance, gammas), pick in chosen:
        by_scale = groups[(sparsity, guidance, gammas)]
        fids = [num(by_scale[s]["fid"]) if s in by_scale else "—" for s in scales]
        cells = [f"**{f}**" if s == pick["scale"] else f for s, f in zip(scales, fids, strict=True)]
        edge = " (edge of the sweep)" if pick["at_edge"] else ""
        lines.append(
            (sparsity, guidance, gammas or "—", *cells, f"{pick['scale']:g}{edge}", ", ".join(pick["chosen_for"]))
        )
    header = ("model", "guidance", "γ", *(f"ω {s:g}" for s in scales), "chosen ω", "row")
    return markdown(header, lines)


def heat_markdown(rows: list[dict[str, Any]], preset: StudyPreset) -> str:
    """One γ_strong × γ_weak FID table per model and ω (each model on its own grid); chosen settings in bold."""
    parts = []
    for sparsity in SPARSITIES:
        strong, weak = preset.grid(sparsity)
        for scale in sorted({r["scale"] for r in rows if r["sparsity"] == sparsity}):
            fid = {
                (r["gamma_strong"], r["gamma_weak"]): f"**{num(r['fid'])}**" if r["chosen_for"] else num(r["fid"])
                for r in rows
                if (r["sparsity"], r["scale"]) == (sparsity, scale)
            }
            lines = [(f"γ_strong {s:g}", *(fid.get((s, w), "—") for w in weak)) for s in strong]
            parts.append(f"**{sparsity}, ω {scale:g}**\n\n" + markdown(("", *(f"γ_weak {w:g}" for w in weak)), lines))
    return "\n".join(parts)


def training_markdown(rows: list[dict[str, Any]], finetune_steps: int) -> str:
    """Fig. 5 as a table: FID of each variant (columns) at each training step (lines), and how they were run."""
    fid = {(r["step"], r["variant"]): pm(r["fid"], r["fid_std"]) for r in rows}
    steps = sorted({r["step"] for r in rows})
    lines = [(f"{step:,}", *(fid.get((step, v), "—") for v in VARIANT_LABELS)) for step in steps]
    settings = {r["variant"]: r["setting"] for r in rows}
    note = ", ".join(f"{VARIANT_LABELS[v]} {settings[v]}" for v in VARIANT_LABELS if v in settings)
    how = (
        f"\nSettings, chosen on the final model: {note}. Dense fine-tune: {finetune_steps} steps from each training "
        f"point with every step dense (γ 0), at {LR_FACTOR:g} × the run's learning rate.\n"
    )
    return markdown(("training step", *VARIANT_LABELS.values()), lines) + how


def diversity_markdown(rows: list[dict[str, Any]]) -> str:
    """Distances to the unguided samples of the same noise."""
    header = ("model", "guidance", "setting", "pixel RMS to unguided", "feature distance to unguided")
    lines = [
        (
            r["sparsity"],
            r["guidance"],
            r["setting"],
            pm(r["pixel_rms"], r["pixel_rms_std"], 4),
            pm(r["feature_l2"], r["feature_l2_std"]),
        )
        for r in rows
    ]
    return markdown(header, lines)


def footer(summary: dict[str, Any]) -> str:
    """The lines under every table: how the numbers were made and by which command on which machine."""
    preset, evaluation = summary["settings"], summary["evaluation"]
    is_convention = evaluation["conventions"]["is"]
    return (
        f"\nFID, precision, recall, IS and accuracy on the MNIST classifier's features against {REFERENCE} "
        f"(1,000 digits). IS in {is_convention} ({parts_text(preset['final_images'], is_convention)} per seed set) "
        f"over the classifier's {evaluation['label_classes']} classes: not on the scale of ImageNet IS. "
        f"Precision/recall: k = 3, {evaluation['conventions']['pr']} distances. "
        f"Reported rows: mean ± std over {preset['final_seed_sets']} seed sets of "
        f"{preset['final_images']} images (seeds {summary['seeds']['final']}). Δ: paired by seed set, negative = "
        "lower FID than the baseline, * where it exceeds both rows' seed-to-seed std. "
        f"Settings chosen on seed set {TUNING_SEED} ({preset['tune_images']} images per cell): each method's ω; SG's "
        "(γ_strong, γ_weak, ω) jointly over the γ grid × its ω sweep; SG_FLOPS: the best SG setting that costs "
        "less per image than no guidance. "
        f"{preset['steps']} {preset['sampler']} steps. GFLOPs: {CONVENTION}.\n\n"
        f"`{summary['command']}`: {summary['machine']}, torch {summary['torch']}, {summary['threads']} thread(s), "
        f"commit {summary['commit']}, {summary['minutes']:.1f} min{cached_text(summary.get('cells'))}.\n"
    )


def cached_text(cells: dict[str, Any] | None) -> str:
    """How much of the run came from the cache, and what those cells had cost ('' when none did)."""
    if not cells or not cells["cached"]:
        return ""
    took = f"sampling and scoring every cell took {cells['compute_minutes']:.1f} min"
    return f" ({cells['cached']} cells from the cache; {took})"


# ---------------------------------------------------------------------------------------------- figures
def save_figure(fig: Figure, path: Path) -> None:
    """Write a figure as PNG, atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def wide(values: Iterable[float]) -> bool:
    """Whether FIDs span a wide range (largest ≥ WIDE × smallest, all positive): then they are drawn on a log scale."""
    finite = np.array([v for v in values if math.isfinite(v)])
    return len(finite) > 0 and finite.min() > 0 and finite.max() >= WIDE * finite.min()


def log_axis(ax: Axes) -> None:
    """Make the y axis logarithmic, its ticks plain numbers."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))


def fid_axis(ax: Axes, values: Iterable[float]) -> None:
    """Label an FID axis; logarithmic where the range is wide."""
    values = list(values)
    ax.set_ylabel("FID (log scale)" if wide(values) else "FID")
    if wide(values):
        log_axis(ax)


def plot_heatmaps(
    rows: list[dict[str, Any]], sparsity: str, strong: Sequence[float], weak: Sequence[float], path: Path
) -> None:
    """FID over (γ_strong, γ_weak), one panel per ω (three to a line), one colour scale, logarithmic where the range
    is wide (Figs. 6/8 analogue); the chosen settings' cells are framed."""
    mine = [r for r in rows if r["sparsity"] == sparsity]
    scales = sorted({r["scale"] for r in mine})
    grids = {s: np.full((len(strong), len(weak)), np.nan) for s in scales}
    for r in mine:
        grids[r["scale"]][strong.index(r["gamma_strong"]), weak.index(r["gamma_weak"])] = r["fid"]
    values = np.concatenate([g[np.isfinite(g)] for g in grids.values()])
    norm = (LogNorm if wide(values) else Normalize)(vmin=values.min(), vmax=values.max())
    lines, across = math.ceil(len(scales) / HEAT_ACROSS), min(len(scales), HEAT_ACROSS)
    fig = Figure(figsize=(3.4 * across + 1, 3.4 * lines), dpi=110, layout="constrained")
    axes = np.atleast_1d(fig.subplots(lines, across)).ravel()
    for ax in axes[len(scales) :]:
        ax.set_axis_off()
    for ax, scale in zip(axes, scales, strict=False):
        image = ax.imshow(grids[scale], cmap="viridis", norm=norm, origin="lower")
        for (i, j), fid in np.ndenumerate(grids[scale]):
            if np.isfinite(fid):  # dark text on the bright (high-FID) end of viridis; the panel's best in bold
                weight = "bold" if fid == np.nanmin(grids[scale]) else "normal"
                colour = "black" if norm(fid) > 0.6 else "white"
                ax.text(j, i, f"{fid:.1f}", ha="center", va="center", fontsize=8, color=colour, weight=weight)
        for r in mine:
            if r["scale"] == scale and r["chosen_for"]:
                xy = (weak.index(r["gamma_weak"]) - 0.5, strong.index(r["gamma_strong"]) - 0.5)
                ax.add_patch(Rectangle(xy, 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set(xticks=range(len(weak)), xticklabels=[f"{w:g}" for w in weak], yticks=range(len(strong)))
        ax.set(yticklabels=[f"{s:g}" for s in strong], xlabel="γ_weak", ylabel="γ_strong", title=f"ω = {scale:g}")
    scale_note = ", log scale" if isinstance(norm, LogNorm) else ""
    fig.colorbar(image, ax=list(axes), label=f"FID (lower is better{scale_note})")
    fig.suptitle(f"SG on the {sparsity} model: FID@{mine[0]['images']} (tuning seed set; framed: chosen settings)")
    save_figure(fig, path)


def plot_tuning(rows: list[dict[str, Any]], path: Path) -> None:
    """FID against ω on the tuning seed set for each chosen setting's sweep (SG: at its chosen γ pair)."""
    fig = Figure(figsize=(11, 4.5), dpi=110, layout="constrained")
    for ax, sparsity in zip(fig.subplots(1, len(SPARSITIES)), SPARSITIES, strict=True):
        mine = [r for r in rows if r["sparsity"] == sparsity and r["guidance"] != "none"]
        for pick in (r for r in mine if r["chosen_for"]):
            curve = sorted(
                (r["scale"], r["fid"])
                for r in mine
                if (r["guidance"], r["gammas"]) == (pick["guidance"], pick["gammas"])
            )
            colour = COLOURS.get(pick["chosen_for"][0], "gray")
            label = f"{', '.join(pick['chosen_for'])}" + (f" (γ {pick['gammas']})" if pick["gammas"] else "")
            ax.plot(*zip(*curve, strict=True), marker="o", color=colour, label=label)
            ax.scatter([pick["scale"]], [pick["fid"]], s=90, facecolors="none", edgecolors="black")
        for r in rows:
            if r["sparsity"] == sparsity and r["guidance"] == "none":
                ax.axhline(r["fid"], color="black", linestyle="--", linewidth=1, label="no guidance")
        fid_axis(ax, [r["fid"] for r in rows if r["sparsity"] == sparsity])
        ax.set(xlabel="ω", title=f"{sparsity} model")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Tuning seed set: FID against ω of each chosen setting (circled: chosen ω)")
    save_figure(fig, path)


def plot_training(rows: list[dict[str, Any]], path: Path) -> None:
    """Fig. 5 analogue: FID (log scale) against the training step of SG, CFG and dense fine-tune + CFG."""
    fig = Figure(figsize=(6, 4.5), dpi=110, layout="constrained")
    ax = fig.subplots()
    for variant, label in VARIANT_LABELS.items():
        curve = sorted((r["step"], r["fid"]) for r in rows if r["variant"] == variant)
        ax.plot(*zip(*curve, strict=True), marker="o", color=COLOURS.get(variant, "gray"), label=label)
    log_axis(ax)
    ax.set(xlabel="training step of the routing run", ylabel="FID (log scale)", title="Along training (Fig. 5)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> None:
    """FID against GFLOPs per image for every setting on the tuning seed set, with the Pareto front."""
    fig = Figure(figsize=(11, 4.5), dpi=110, layout="constrained")
    for ax, sparsity in zip(fig.subplots(1, len(SPARSITIES)), SPARSITIES, strict=True):
        mine = [r for r in rows if r["sparsity"] == sparsity]
        for guidance in dict.fromkeys(r["guidance"] for r in mine):
            group = [r for r in mine if r["guidance"] == guidance]
            xs, ys = [r["gflops_per_image"] for r in group], [r["fid"] for r in group]
            ax.scatter(xs, ys, s=22, color=COLOURS.get(guidance, "gray"), label=guidance, alpha=0.8)
            chosen = [r for r in group if r["selected"]]
            ax.scatter(
                [r["gflops_per_image"] for r in chosen],
                [r["fid"] for r in chosen],
                s=90,
                facecolors="none",
                edgecolors="black",
            )
        front = sorted((r["gflops_per_image"], r["fid"]) for r in mine if r["on_front"])
        ax.step(*zip(*front, strict=True), where="post", color="black", linewidth=1, label="Pareto front")
        ax.set(xlabel="GFLOPs per image (paper convention)", title=f"{sparsity} model")
        fid_axis(ax, [r["fid"] for r in mine])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Quality against compute, every setting on the tuning seed set (circled: chosen settings)")
    save_figure(fig, path)


def mosaic(images: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of uint8 (N, H, W, 1) images side by side, stacked into one grey image."""
    return np.concatenate([np.concatenate(list(row[..., 0]), axis=1) for row in images], axis=0)


def plot_diversity(results: StudyResults, rows: list[dict[str, Any]], path: Path, count: int = 10) -> None:
    """Distances to the unguided samples (bars), and none / CFG / SG samples from the same noise (Fig. 7 analogue)."""
    fig = Figure(figsize=(11, 6), dpi=110, layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 2))
    for col, (key, label) in enumerate((("pixel_rms", "pixel RMS"), ("feature_l2", "feature distance"))):
        ax = fig.add_subplot(grid[0, col])
        names = [f"{r['sparsity']}\n{r['guidance']}" for r in rows]
        colours = [COLOURS.get(r["guidance"], "gray") for r in rows]
        ax.bar(names, [r[key] for r in rows], yerr=[r[f"{key}_std"] for r in rows], color=colours, capsize=3)
        ax.set(ylabel=f"{label} to unguided", title=f"{label} to the unguided sample of the same noise")
        ax.tick_params(axis="x", labelsize=7)
    by_method = rows_by_name(results)
    for col, sparsity in enumerate(SPARSITIES):
        ax = fig.add_subplot(grid[1, col])
        strips = [by_method[(sparsity, g)].points[0].result.images[:count] for g in TABLE1_GUIDANCE]
        ax.imshow(mosaic(strips), cmap="gray", vmin=0, vmax=255)
        height = strips[0].shape[1]
        ax.set(yticks=[height * (i + 0.5) for i in range(len(strips))], yticklabels=TABLE1_GUIDANCE, xticks=[])
        ax.set_title(f"{sparsity} model: same noise per column")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------- all
def write_report(results: StudyResults, out: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write summary.json, the Markdown tables and the figures to `out`; return the summary."""
    preset = results.preset
    summary = {
        "table1": table1(results, meta["evaluation"]),
        "table2": table2(results),
        **meta,
        "seeds": {"tuning": TUNING_SEED, "final": preset.final_seeds},
        "gflops_convention": CONVENTION,
        "spread": {
            "fid_std_median": float(np.median([r.std("fid") for r in results.rows])),
            "fid_std_max": float(max(r.std("fid") for r in results.rows)),
        },
        "tuning": tuning_table(results),
        "pareto": pareto_table(results),
        "diversity": diversity_table(results),
        "fig5": training_table(results),
    }
    summary["heatmaps"] = heat_table(summary["tuning"])
    summary["targets"] = targets(summary["table1"], summary["table2"])
    write_json(out / "summary.json", summary)
    note = footer(summary)
    texts = {
        "table1.md": table1_markdown(summary["table1"]),
        "table2.md": table2_markdown(summary["table2"]),
        "targets.md": targets_markdown(summary["targets"]),
        "tuning.md": tuning_markdown(summary["tuning"]),
        "heatmaps.md": heat_markdown(summary["heatmaps"], preset),
        "diversity.md": diversity_markdown(summary["diversity"]),
        "fig5.md": training_markdown(summary["fig5"], preset.finetune_steps),
    }
    for name, text in texts.items():
        atomic_write(out / name, lambda tmp, text=text: Path(tmp).write_text(text + note))
    for sparsity in SPARSITIES:
        plot_heatmaps(summary["heatmaps"], sparsity, *preset.grid(sparsity), out / f"heatmaps-{sparsity}.png")
    plot_tuning(summary["tuning"], out / "tuning.png")
    plot_pareto(summary["pareto"], out / "pareto.png")
    plot_training(summary["fig5"], out / "fig5.png")
    plot_diversity(results, summary["diversity"], out / "diversity.png")
    return summary
