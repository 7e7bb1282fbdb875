"""`sparseguidance study`: Pareto front, scale selection, cell cache and resume, bad options, a quick run."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

import sparseguidance.study.cells as cells_module
from sparseguidance.cli import main
from sparseguidance.config import to_dict
from sparseguidance.errors import ConfigError
from sparseguidance.flops import euler_step_flops
from sparseguidance.guidance import make_guidance
from sparseguidance.pretrained import load_shipped, shipped_snapshots
from sparseguidance.study import (
    Cell,
    CellCache,
    CellResult,
    StudyPreset,
    cell_key,
    get_preset,
    pareto_front,
    run_study,
    select_scale,
    write_report,
)
from sparseguidance.study.cells import weak_snapshot
from sparseguidance.study.runner import forwards_per_image

TINY = StudyPreset(
    steps=2,
    tune_images=4,
    final_images=3,
    final_seed_sets=2,
    scales=(1.5, 2.0, 3.0),
    heat_scales=(2.0,),
    heat_strong=(0.0, 0.5),
    heat_weak=(0.5, 0.9),
)


class FakeSource:
    """Cells without models: FID |ω − 2| on the tuning seed, |ω − 3| + seed on the others; counts its calls."""

    def __init__(self, steps: int = 2, stop_at: int | None = None) -> None:
        self.steps, self.stop_at, self.calls = steps, stop_at, 0

    def describe(self, cell: Cell) -> dict[str, Any]:
        return {"steps": self.steps}

    def __call__(self, cell: Cell) -> CellResult:
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt  # killed while this cell was being sampled
        scale = cell.guidance.scale
        fid = abs(scale - 2.0) if cell.seed == 0 else abs(scale - 3.0) + cell.seed
        gen = np.random.default_rng(cell.seed)
        forwards = forwards_per_image(cell.guidance, self.steps)
        return CellResult(
            metrics={"fid": fid, "is": 1.0, "precision": 0.5, "recall": 0.5, "accuracy": 0.9},
            cost={"nfe": self.steps, "forwards": forwards, "gflops_per_image_paper": 0.1 * forwards},
            seconds=0.01,
            images=gen.integers(0, 256, (cell.count, 8, 8, 1), dtype=np.uint8),
            features=gen.normal(size=(cell.count, 4)),
        )


def test_pareto_front_keeps_points_nothing_beats_in_both():
    points = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (2.0, 6.0), (4.0, 1.0), (5.0, 1.0), (0.5, 9.0)]
    assert pareto_front(points) == [6, 0, 1, 4]  # by cost; (5, 1) ties (4, 1) on FID at a higher cost
    assert pareto_front([]) == []


def test_select_scale_takes_the_lowest_fid_the_smaller_scale_on_a_tie_and_skips_nan():
    assert select_scale({1.5: 4.0, 2.0: 3.0, 3.0: 3.5}) == 2.0
    assert select_scale({1.5: 3.0, 2.0: 3.0}) == 1.5
    assert select_scale({1.5: math.nan, 2.0: 9.0}) == 2.0


def test_scale_is_tuned_on_the_tuning_seeds_and_reported_on_the_others(tmp_path):
    results = run_study(TINY, CellCache(tmp_path, FakeSource()))
    rows = {(r.method.sparsity, r.method.guidance): r for r in results.rows}
    cfg = rows[("routing", "cfg")]
    assert cfg.scale == 2.0  # best on seed 0; ω 3 would have been best on the reporting seeds
    assert [p.cell.seed for p in cfg.points] == TINY.final_seeds == [1, 2]
    assert cfg.values("fid").tolist() == [2.0, 3.0]  # |2 − 3| + seed, measured on seeds 1 and 2
    assert all(p.cell.seed == 0 and p.cell.count == TINY.tune_images for p in results.tuning)
    assert rows[("routing", "none")].scale == 1.0


def test_report_writes_every_table_and_figure_from_the_results(tmp_path):
    results = run_study(TINY, CellCache(tmp_path / "cache", FakeSource()))
    meta = {
        "machine": "m",
        "torch": "t",
        "threads": 1,
        "commit": "c",
        "command": "sparseguidance study",
        "minutes": 1.0,
    }
    summary = write_report(results, tmp_path, {**meta, "settings": to_dict(TINY)})
    assert [(r["sparsity"], r["guidance"]) for r in summary["table1"]] == [
        (s, g) for s in ("routing", "masking") for g in ("none", "cfg", "sg")
    ]
    assert [r["method"] for r in summary["table2"]] == ["none", "cfg", "ag", "icg", "sg_flops", "sg_fid"]
    cfg = summary["table2"][1]
    assert cfg["delta_fid"] == pytest.approx(cfg["fid"] - summary["table2"][0]["fid"])
    assert cfg["gflops_per_step"] == pytest.approx(2 * summary["table2"][0]["gflops_per_step"])  # two forwards
    assert json.loads((tmp_path / "summary.json").read_text())["table2"] == summary["table2"]
    for name in ("table1.md", "table2.md", "tuning.md", "heatmaps.md", "diversity.md", "pareto.png", "diversity.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "heatmaps-routing.png").is_file() and (tmp_path / "heatmaps-masking.png").is_file()
    front = [p for p in summary["pareto"] if p["on_front"] and p["sparsity"] == "routing"]
    assert front and all(
        not (q["gflops_per_image"] <= p["gflops_per_image"] and q["fid"] < p["fid"])
        for p in front
        for q in summary["pareto"]
        if q["sparsity"] == "routing"
    )


def test_a_second_run_reads_every_cell_from_the_cache(tmp_path):
    first = FakeSource()
    run_study(TINY, CellCache(tmp_path, first))
    distinct = len(list(tmp_path.glob("*.npz")))
    assert first.calls == distinct  # a heat-map cell equal to a tuning cell was sampled once
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
        (["--set", "routing_sg=[0.9,0.5]"], "γ_strong < γ_weak"),
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
    assert len(summary["table1"]) == 6 and len(summary["table2"]) == 6
    for row in summary["table1"]:
        assert {"sparsity", "guidance", "fid", "fid_std", "precision", "recall", "is", "accuracy"} <= set(row)
    # the cost column comes from the sampler's count of forwards; it must agree with the analytic FLOPs
    sg = next(r for r in summary["table2"] if r["method"] == "sg_flops")
    guidance = make_guidance("sg", sg["scale"], sg["gamma_strong"], sg["gamma_weak"])
    config = load_shipped("mnist-routing").config
    expected = euler_step_flops(guidance, config, None, get_preset("quick").steps).paper / 1e9
    assert sg["gflops_per_step"] == pytest.approx(expected)
    for name in ("table1.md", "table2.md", "pareto.png", "heatmaps-routing.png", "heatmaps-masking.png", "study.log"):
        assert (out / name).stat().st_size > 0

    def no_sampling(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished cell was sampled again")

    monkeypatch.setattr(cells_module, "generate", no_sampling)
    assert main(command) == 0
    rerun = json.loads((out / "summary.json").read_text())
    assert rerun["cells"]["computed"] == 0 and rerun["table1"] == summary["table1"]
    assert "0 computed" in (out / "study.log").read_text()
