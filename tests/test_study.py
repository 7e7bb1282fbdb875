"""`sparseguidance study`: Pareto front, joint selection, SG_FLOPS, Fig. 5 and fine-tuning, cache and resume, the
plan, bad options, a quick run."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import sparseguidance.study.cells as cells_module
import sparseguidance.study.finetune as finetune_module
from sparseguidance.cli import main
from sparseguidance.config import to_dict
from sparseguidance.errors import ConfigError
from sparseguidance.flops import euler_step_flops
from sparseguidance.guidance import Guidance, make_guidance
from sparseguidance.pretrained import load_shipped, shipped_dir, shipped_file, shipped_snapshots
from sparseguidance.study import (
    Cell,
    CellCache,
    CellResult,
    Method,
    StudyPreset,
    best,
    cell_key,
    get_preset,
    methods,
    pareto_front,
    run_study,
    write_report,
)
from sparseguidance.study.cells import DENSE_FT, FINAL, shipped_training_points, weak_snapshot
from sparseguidance.study.finetune import LR_FACTOR, finetune_config, finetuned, run_name
from sparseguidance.study.report import wide
from sparseguidance.study.runner import Point, forwards_per_image, log_plan, training_points
from sparseguidance.training.config import load_train_config
from sparseguidance.training.runlog import read_log
from sparseguidance.training.trainer import Trainer, train

TINY = StudyPreset(
    steps=2,
    tune_images=4,
    final_images=3,
    final_seed_sets=2,
    scales=(1.5, 2.0, 3.0),
    sg_scales=(2.0, 4.0, 8.0),
    heat_strong=(0.0, 0.5),
    heat_weak=(0.5, 0.9),
    masking_heat_strong=(0.0, 0.5),
    masking_heat_weak=(0.5, 0.9),
    snapshots=1,
    finetune_steps=1,
)
POINTS = {"step-1": 1, "step-2": 2, "step-3": 3, FINAL: 4}  # the fake run's training points


def fake_fid(cell: Cell) -> float:
    """On the tuning seed: |ω − 2| for dense-branch methods, |ω − 4| + 10 |γ_weak − 0.9| + 5 γ_strong for SG (best:
    0 / 0.9 at ω 4); on the others |ω − 3| (SG: |ω − 8|) + seed. Earlier weights add 10 / step; fine-tuning
    halves that."""
    guidance, scale = cell.guidance, cell.guidance.scale
    if guidance.name == "sg":
        strong, weak = guidance.gamma_strong.start, guidance.gamma_weak.start
        fid = abs(scale - 4.0) + 10 * abs(weak - 0.9) + 5 * strong if cell.seed == 0 else abs(scale - 8.0) + cell.seed
    else:
        fid = abs(scale - 2.0) if cell.seed == 0 else abs(scale - 3.0) + cell.seed
    base, tuned, _ = cell.model.partition(DENSE_FT)
    return fid + 10 / POINTS[base] / (2 if tuned else 1)


def fake_gflops(guidance: Guidance, steps: int) -> float:
    """0.1 GFLOPs per forward times the fraction of tokens it keeps: SG at 0.5 / 0.9 costs 0.6 of no guidance."""
    if guidance.scale == 1.0:  # the weak branch is skipped
        return 0.1 * steps
    return 0.1 * sum(1 - b.gamma.at(i, steps) for i in range(steps) for b in guidance.branches(i / steps))


class FakeSource:
    """Cells without models, their FID `fake_fid`, their cost `fake_gflops`; counts its calls."""

    def __init__(self, steps: int = 2, stop_at: int | None = None) -> None:
        self.steps, self.stop_at, self.calls = steps, stop_at, 0

    def describe(self, cell: Cell) -> dict[str, Any]:
        return {"steps": self.steps, "model": cell.model}

    def training_points(self) -> dict[str, int]:
        return POINTS

    def __call__(self, cell: Cell) -> CellResult:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt  # killed while this cell was being sampled
        gen = np.random.default_rng(cell.seed)
        forwards = forwards_per_image(cell.guidance, self.steps)
        return CellResult(
            metrics={"fid": fake_fid(cell), "is": 1.0, "precision": 0.5, "recall": 0.5, "accuracy": 0.9},
            cost={
                "nfe": self.steps,
                "forwards": forwards,
                "gflops_per_image_paper": fake_gflops(cell.guidance, self.steps),
            },
            seconds=0.01,
            images=gen.integers(0, 256, (cell.count, 8, 8, 1), dtype=np.uint8),
            features=gen.normal(size=(cell.count, 4)),
        )


def test_pareto_front_keeps_points_nothing_beats_in_both():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (2.0, 6.0), (4.0, 1.0), (5.0, 1.0), (0.5, 9.0)]
    assert pareto_front(points) == [6, 0, 1, 4]  # by cost; (5, 1) ties (4, 1) on FID at a higher cost
    assert pareto_front([]) == []


def point(fid: float, scale: float, gflops: float = 1.0) -> Point:
    """A tuning point of routing SG with a given FID, ω and cost."""
    result = CellResult({"fid": fid}, {"gflops_per_image_paper": gflops}, 0.0, np.zeros(0), np.zeros(0))
    method = Method("routing", "sg", 0.0, 0.5)
    return Point(method, scale, Cell("routing", method.at(scale), 0, 1), result)


def test_best_takes_the_lowest_fid_the_smaller_scale_on_a_tie_and_skips_nan():
    assert best([point(4.0, 1.5), point(3.0, 2.0), point(3.5, 3.0)]).scale == 2.0
    assert best([point(3.0, 2.0), point(3.0, 1.5)]).scale == 1.5
    assert best([point(math.nan, 1.5), point(9.0, 2.0)]).scale == 2.0
    assert best([point(math.nan, 1.5)]) is None and best([]) is None


def test_sg_chooses_both_gammas_and_scale_jointly_on_the_tuning_seeds_only(tmp_path):
    results = run_study(TINY, CellCache(tmp_path, FakeSource()))
    grid = [p for p in results.tuning if p.method.sparsity == "routing" and p.method.guidance == "sg"]
    assert len(grid) == len(TINY.heat_pairs("routing")) * len(TINY.sg_scales) == 9  # the heat maps are the search
    sg = results.selected[("routing", "sg")]
    assert (sg.method.gamma_strong, sg.method.gamma_weak, sg.scale) == (0.0, 0.9, 4.0)  # fake_fid's argmin
    rows = {(r.method.sparsity, r.name): r for r in results.rows}
    reported = rows[("masking", "sg")]
    assert (reported.method.gamma_weak, reported.scale) == (0.9, 4.0)  # ω 8 would have won on the reported seeds
    assert [p.cell.seed for p in reported.points] == TINY.final_seeds == [1, 2]
    assert reported.values("fid").tolist() == [4 + 1 + 2.5, 4 + 2 + 2.5]  # |4 − 8| + seed + 10 / 4 (final weights)
    cfg = rows[("routing", "cfg")]
    assert cfg.scale == 2.0 and rows[("routing", "none")].scale == 1.0
    assert all(p.cell.seed == 0 and p.cell.count == TINY.tune_images for p in results.tuning)


def test_each_sparse_model_is_searched_on_its_own_gamma_grid():
    preset = replace(TINY, masking_heat_strong=(0.0, 0.1), masking_heat_weak=(0.3,))
    masking = {(m.gamma_strong, m.gamma_weak) for m, _ in Method("masking", "sg").candidates(preset)}
    routing = {(m.gamma_strong, m.gamma_weak) for m, _ in Method("routing", "sg").candidates(preset)}
    assert masking == {(0.0, 0.3), (0.1, 0.3)} and routing == {(0.0, 0.5), (0.0, 0.9), (0.5, 0.9)}
    with pytest.raises(ConfigError, match="masking γ grid needs a cell"):
        replace(TINY, masking_heat_strong=(0.5,), masking_heat_weak=(0.3,))


def test_sg_flops_is_the_best_sg_setting_cheaper_than_no_guidance(tmp_path):
    results = run_study(TINY, CellCache(tmp_path, FakeSource()))
    flops = results.selected[("routing", "sg_flops")]
    none = results.selected[("routing", "none")]
    assert (flops.method.gamma_strong, flops.method.gamma_weak, flops.scale) == (0.5, 0.9, 4.0)  # 0.6 × none's cost
    assert flops.gflops_per_image < none.gflops_per_image < results.selected[("routing", "sg")].gflops_per_image
    assert ("masking", "sg_flops") not in results.selected  # Table 2 is the routing model's
    assert "sg_flops" in [r.name for r in results.rows]


def test_without_a_cheaper_sg_setting_the_report_says_so(tmp_path):
    dense_strong = replace(TINY, heat_strong=(0.0,))  # SG at γ_strong 0 costs more than no guidance
    results = run_study(dense_strong, CellCache(tmp_path / "cache", FakeSource()))
    assert results.selected[("routing", "sg_flops")] is None
    summary = write_report(results, tmp_path, {**META, "settings": to_dict(dense_strong)})
    row = next(r for r in summary["table2"] if r["method"] == "sg_flops")
    assert row["fid"] is None and "no SG setting" in row["note"]
    assert "no SG setting" in (tmp_path / "table2.md").read_text()
    cost, fid = summary["targets"][:2]
    assert cost["value"] is None and cost["floor_met"] is False and fid["goal_met"] is False


def test_training_points_run_sg_cfg_and_dense_finetune_at_the_final_models_settings(tmp_path):
    results = run_study(TINY, CellCache(tmp_path, FakeSource()))
    assert training_points(POINTS, 1) == {"step-1": 1, FINAL: 4}
    assert training_points(POINTS, 2) == {"step-1": 1, "step-3": 3, FINAL: 4}
    assert training_points(POINTS, 9) == POINTS and training_points(POINTS, 0) == {FINAL: 4}
    found = {(t.step, t.variant): t.row for t in results.training}
    assert set(found) == {(step, v) for step in (1, 4) for v in ("sg", "cfg", "dense-ft+cfg")}
    sg = results.selected[("routing", "sg")]
    assert all(found[(step, "sg")].method == sg.method and found[(step, "sg")].scale == 4.0 for step in (1, 4))
    assert [p.cell.model for p in found[(1, "dense-ft+cfg")].points] == ["step-1" + DENSE_FT]
    assert [p.cell.seed for p in found[(1, "cfg")].points] == TINY.final_seeds[: TINY.snapshot_seed_sets]
    assert found[(1, "cfg")].mean("fid") == 1 + 1 + 10 and found[(1, "dense-ft+cfg")].mean("fid") == 2 + 5
    final_cfg = next(r for r in results.rows if r.name == "cfg" and r.method.sparsity == "routing")
    assert found[(4, "cfg")].points[0].result.metrics == final_cfg.points[0].result.metrics  # the same cell


def test_the_cpu_preset_plans_under_two_hours_on_two_cores(caplog):
    preset = get_preset("cpu")
    with caplog.at_level(logging.INFO, logger="sparseguidance.study"):
        plan = log_plan(preset, methods(), training_points(shipped_training_points(), preset.snapshots))
    assert plan.minutes < 120 and plan.training_forwards > 0
    assert max(preset.sg_scales) >= 8
    assert "dense fine-tuning" in caplog.text and "Fig. 5" in caplog.text


META = {
    "machine": "m",
    "torch": "t",
    "threads": 1,
    "commit": "c",
    "command": "sparseguidance study",
    "minutes": 1.0,
    "evaluation": {"conventions": {"is": "chunks-5000", "pr": "float32"}, "label_classes": 10},
}


def test_report_writes_every_table_and_figure_from_the_results(tmp_path):
    results = run_study(TINY, CellCache(tmp_path / "cache", FakeSource()))
    summary = write_report(results, tmp_path, {**META, "settings": to_dict(TINY)})
    assert [(r["sparsity"], r["guidance"]) for r in summary["table1"]] == [
        (s, g) for s in ("routing", "masking") for g in ("none", "cfg", "sg")
    ]
    assert [r["method"] for r in summary["table2"]] == ["none", "cfg", "ag", "icg", "sg_flops", "sg", "sg_fid"]
    cfg = summary["table2"][1]
    assert cfg["delta_fid"] == pytest.approx(cfg["fid"] - summary["table2"][0]["fid"])
    assert cfg["gflops_per_step"] == pytest.approx(2 * summary["table2"][0]["gflops_per_step"])  # two forwards
    assert json.loads((tmp_path / "summary.json").read_text())["table2"] == summary["table2"]
    # IS of 3 images per seed set over 10 classes means little: marked, with the reason under Table 1
    assert all("IS over a part of 3 samples" in r["is_warning"] for r in summary["table1"])
    table = (tmp_path / "table1.md").read_text()
    assert "| 1.00 † |" in table and "\n† IS over a part of 3 samples" in table
    assert "IS in chunks-5000 (1 part of 3 per seed set) over the classifier's 10 classes" in table
    names = ("table1.md", "table2.md", "targets.md", "tuning.md", "heatmaps.md", "diversity.md", "fig5.md")
    for name in (*names, "pareto.png", "diversity.png", "tuning.png", "fig5.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "heatmaps-routing.png").is_file() and (tmp_path / "heatmaps-masking.png").is_file()
    heat = [r for r in summary["heatmaps"] if r["sparsity"] == "routing"]
    assert len(heat) == 9 and [r["chosen_for"] for r in heat if r["chosen_for"]] == [["sg"], ["sg_flops"]]
    assert {(r["step"], r["variant"]) for r in summary["fig5"]} == {
        (step, v) for step in (1, 4) for v in ("sg", "cfg", "dense-ft+cfg")
    }
    assert "| 1 | " in (tmp_path / "fig5.md").read_text()


def test_targets_are_read_off_tables_1_and_2(tmp_path):
    results = run_study(TINY, CellCache(tmp_path / "cache", FakeSource()))
    cells = {"computed": 0, "cached": 5, "compute_minutes": 3.0, "cache": "c"}  # a rerun that read every cell
    summary = write_report(results, tmp_path, {**META, "settings": to_dict(TINY), "cells": cells})
    t2 = {r["method"]: r for r in summary["table2"]}
    t1 = {(r["sparsity"], r["guidance"]): r["fid"] for r in summary["table1"]}
    cost, fid, routing, masking = summary["targets"]
    assert cost["value"] == pytest.approx(t2["sg_flops"]["gflops_per_step"] / t2["none"]["gflops_per_step"])
    assert cost["floor_met"] == (cost["value"] < 1.0) and cost["goal"] == 0.85
    assert fid["floor"] == pytest.approx((t2["none"]["fid"] + t2["cfg"]["fid"]) / 2) and fid["goal"] == t2["cfg"]["fid"]
    assert fid["floor_met"] == (t2["sg_flops"]["fid"] <= fid["floor"])
    assert routing["value"] == pytest.approx(t1[("routing", "sg")] / t1[("routing", "cfg")])
    assert routing["floor"] is None and routing["floor_met"] is None
    assert masking["floor"] == 1.2 and masking["goal_met"] == (masking["value"] <= 1.0)
    table = (tmp_path / "targets.md").read_text()
    assert table.count("\n| SG_FLOPS") == 2 and "Table 1, masking: SG FID ÷ CFG FID" in table
    assert "1.0 min (5 cells from the cache; sampling and scoring every cell took 3.0 min)." in table
    tuning = (tmp_path / "tuning.md").read_text()
    assert "sg_flops" in tuning and "0 / 0.9" in tuning
    front = [p for p in summary["pareto"] if p["on_front"] and p["sparsity"] == "routing"]
    assert front and all(
        not (q["gflops_per_image"] <= p["gflops_per_image"] and q["fid"] < p["fid"])
        for p in front
        for q in summary["pareto"]
        if q["sparsity"] == "routing"
    )


def test_wide_fid_ranges_are_drawn_on_a_log_scale():
    assert wide([2.0, 30.0]) and not wide([20.0, 30.0]) and not wide([math.nan, 3.0]) and not wide([])


def test_a_second_run_reads_every_cell_from_the_cache(tmp_path):
    first = FakeSource()
    run_study(TINY, CellCache(tmp_path, first))
    distinct = len(list(tmp_path.glob("*.npz")))
    assert first.calls == distinct  # Fig. 5's cells on the final model are reported rows' cells: sampled once
    again = FakeSource()
    results = run_study(TINY, CellCache(tmp_path, again))
    assert again.calls == 0 and results.computed == 0 and results.cached > 0


def test_an_interrupted_study_resumes_at_the_first_unfinished_cell(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_study(TINY, CellCache(tmp_path, FakeSource(stop_at=5)))
    assert len(list(tmp_path.glob("*.npz"))) == 4
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written is left
    resumed = FakeSource()
    run_study(TINY, CellCache(tmp_path, resumed))
    assert resumed.calls == len(list(tmp_path.glob("*.npz"))) - 4


def test_a_changed_setting_changes_the_cell_key():
    cell = Cell("routing", make_guidance("sg", 2.0, 0.5, 0.9), seed=1, count=10)
    key = cell_key(cell, FakeSource())
    assert cell_key(Cell("routing", make_guidance("sg", 2.0, 0.5, 0.9), 1, 10), FakeSource()) == key
    changed = [
        Cell("routing", make_guidance("sg", 2.5, 0.5, 0.9), 1, 10),
        Cell("routing", make_guidance("sg", 2.0, 0.4, 0.9), 1, 10),
        Cell("routing", make_guidance("cfg+sg", 2.0, 0.5, 0.9), 1, 10),
        Cell("masking", make_guidance("sg", 2.0, 0.5, 0.9), 1, 10),
        Cell("routing", make_guidance("sg", 2.0, 0.5, 0.9), 2, 10),
        Cell("routing", make_guidance("sg", 2.0, 0.5, 0.9), 1, 11),
        Cell("routing", make_guidance("sg", 2.0, 0.5, 0.9), 1, 10, "step-1"),
        Cell("routing", make_guidance("sg", 2.0, 0.5, 0.9), 1, 10, "final" + DENSE_FT),
    ]
    assert key not in {cell_key(c, FakeSource()) for c in changed}
    assert cell_key(cell, FakeSource(steps=3)) != key  # what the source says decides the images too


def test_weak_model_is_the_snapshot_nearest_the_fraction_of_training():
    steps = sorted(shipped_snapshots("mnist-routing"))
    assert weak_snapshot(0.0) == steps[0]
    assert weak_snapshot(1.0) == steps[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "nosuch=1"], "unknown key(s) nosuch"),
        (["--set", "final_seed_sets=1"], "final_seed_sets must be ≥ 2"),
        (["--set", "heat_strong=[0.9]", "--set", "heat_weak=[0.5]"], "needs a cell with γ_strong < γ_weak"),
        (["--set", "snapshot_seed_sets=3"], "snapshot_seed_sets must be 1..final_seed_sets"),
        (["--set", "sg_scales=[0]"], "sg_scales: every ω must be > 0"),
        (["--set", "scales=[]"], "scales must be a non-empty list"),
        (["--set", "heat_weak=[1.5]"], "must lie in [0, 1)"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--set", "sampler=rk4"], "sampler must be one of"),
    ],
)
def test_bad_options_are_one_line_errors(args, message, tmp_path, capsys):
    assert main(["study", "--preset", "quick", "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_unknown_preset_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "--preset", "huge"])
    assert exit_info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown study preset 'huge'; known: quick, cpu, gpu"):
        get_preset("huge")


def test_quick_preset_runs_end_to_end_and_resumes_from_its_cache(tmp_path, monkeypatch):
    out, cache = tmp_path / "results", tmp_path / "cache"
    command = ["study", "--preset", "quick", "--out", str(out), "--cache", str(cache)]
    assert main(command) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"machine", "minutes", "command", "torch", "commit"} <= set(summary)
    assert len(summary["table1"]) == 6 and len(summary["table2"]) == 7
    for row in summary["table1"]:
        assert {"sparsity", "guidance", "fid", "fid_std", "precision", "recall", "is", "accuracy"} <= set(row)
    conventions = {"fid": "adm", "is": "chunks-5000", "pr": "float32", "acc": "argmax"}
    assert summary["evaluation"]["conventions"] == conventions and summary["evaluation"]["label_classes"] == 10
    # the cost column comes from the sampler's count of forwards; it must agree with the analytic FLOPs
    sg = next(r for r in summary["table2"] if r["method"] == "sg")
    guidance = make_guidance("sg", sg["scale"], sg["gamma_strong"], sg["gamma_weak"])
    config = load_shipped("mnist-routing").config
    expected = euler_step_flops(guidance, config, None, get_preset("quick").steps).paper / 1e9
    assert sg["gflops_per_step"] == pytest.approx(expected)
    for name in ("table1.md", "table2.md", "pareto.png", "heatmaps-routing.png", "fig5.png", "study.log"):
        assert (out / name).stat().st_size > 0
    finetuned = sorted((cache / "finetune").glob("routing-*/model.safetensors"))
    assert len(finetuned) == 2 and len({r["step"] for r in summary["fig5"]}) == 2  # a snapshot and the final model

    def no_sampling(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was sampled again")

    monkeypatch.setattr(cells_module, "generate", no_sampling)
    monkeypatch.setattr(finetune_module, "train", no_sampling)
    assert main(command) == 0
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["cells"]["computed"] == 0 and rerun["table1"] == summary["table1"]
    assert "0 computed" in (out / "study.log").read_text()


def test_dense_finetuning_derives_from_the_shipped_recipe_trains_once_and_is_reused(tmp_path, monkeypatch):
    recipe = shipped_dir("mnist-routing") / "config.yaml"
    start = shipped_file("mnist-routing", min(shipped_snapshots("mnist-routing")))
    config = finetune_config(recipe, start, steps=2, device="cpu")
    shipped = load_train_config(recipe)
    assert config.objective.dense_fraction == 1.0 and config.train.init_from == str(start)
    assert config.train.lr == pytest.approx(shipped.train.lr * LR_FACTOR) and config.train.steps == 2
    assert config.model == shipped.model and config.train.warmup_steps == 0 and config.train.snapshot_every == 0
    assert run_name(config, "a") != run_name(config, "b")  # the starting weights' content names the run
    assert run_name(config, "a") != run_name(replace(config, train=replace(config.train, lr=1e-5)), "a")
    name = run_name(config, "a")
    with monkeypatch.context() as patch:  # a setting added to every config later, at its default: the same run
        plain = finetune_module.to_dict
        patch.setattr(finetune_module, "to_dict", lambda c: plain(c) | {"future": {"setting": 1}})
        assert run_name(config, "a") == name
    weights = finetuned(config, tmp_path / "run")
    assert weights.is_file() and not (tmp_path / "run" / "checkpoints").exists()
    assert read_log(tmp_path / "run" / "log.jsonl")[-1]["step"] == 2

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished fine-tuning was trained again")

    monkeypatch.setattr(finetune_module, "train", no_training)
    assert finetuned(config, tmp_path / "run") == weights


def test_an_interrupted_finetuning_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    recipe = shipped_dir("mnist-routing") / "config.yaml"
    start = shipped_file("mnist-routing", min(shipped_snapshots("mnist-routing")))
    config = finetune_config(recipe, start, steps=2, device="cpu")
    run = tmp_path / "run"
    train(replace(config, train=replace(config.train, steps=1)), run, progress=False)  # stopped after step 1
    (run / "model.safetensors").unlink()
    steps: list[int] = []
    original = Trainer.train_step

    def counted(self: Trainer, *args: Any) -> dict[str, Any]:
        steps.append(self.step)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", counted)
    assert finetuned(config, run).is_file() and steps == [1]  # only the missing step was trained


def test_the_log_counts_each_planned_cell_once(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sparseguidance.study"):
        run_study(TINY, CellCache(tmp_path, FakeSource()))
    done, total = map(int, re.findall(r"\[(\d+)/(\d+)\]", caplog.text)[-1])
    assert done == total and "met before in this run" in caplog.text  # Fig. 5's final-model cells are Table 1's
