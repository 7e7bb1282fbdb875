"""benchmarks/gpu_check.py --tiny: the GPU check runs end to end on the CPU (its figures are not asserted)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_gpu_check_tiny_runs_every_part_and_writes_its_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu.json"
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--tiny", "--no-compile", "--out", str(out)])
    runpy.run_path(str(BENCHMARKS / "gpu_check.py"), run_name="__main__")
    results = json.loads(out.read_text())
    assert results["mode"].startswith("tiny") and results["batch"] == 2 and results["precision"] == "bf16"
    assert [r["gamma"] for r in results["forward"]] == [0.0, 0.5, 0.9]
    rows = {r["method"]: r for r in results["sampling"]["rows"]}
    assert set(rows) == {"none", "cfg", "sg", "sg_unshared", "cfg+sg"}
    assert rows["sg"]["flops_ratio_vs_cfg"] > rows["sg_unshared"]["flops_ratio_vs_cfg"] > 1  # the prefix, once
    assert results["training"]["flops_ratio"] > 1 and "machine" in results and "commit" in results
    assert f"wrote {out}" in capsys.readouterr().out
