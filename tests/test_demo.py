"""`sparseguidance demo` on the shipped routing model with a few images: image, table, JSON, seeds, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from sparseguidance.cli import main
from sparseguidance.demo import (
    DIGIT_SHAPE,
    GAP,
    LEFT,
    MARGIN,
    TOP,
    ZOOM,
    DemoSettings,
    load_demo_model,
    run_demo,
    save_comparison,
)

TINY = ["--classes", "3,7", "--steps", "2", "--threads", "1", "--no-progress"]
SETTINGS = DemoSettings(classes=(3, 7), steps=2, num_images=2)


@pytest.fixture(scope="module")
def model():
    return load_demo_model("mnist-routing")


def test_demo_writes_one_row_per_method_and_a_table(tmp_path, capsys):
    out, summary = tmp_path / "demo.png", tmp_path / "demo.json"
    assert main(["demo", *TINY, "--num-images", "4", "--out", str(out), "--json", str(summary)]) == 0
    cell = ZOOM * DIGIT_SHAPE[1]
    assert Image.open(out).size == (LEFT + 2 * cell + MARGIN, TOP + 3 * cell + 2 * GAP + MARGIN)  # 2 columns, 3 rows
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[1:5]] == ["no", "CFG", "SG", "real"]
    rows = {row["method"]: row for row in json.loads(summary.read_text())["rows"]}
    assert list(rows) == ["none", "cfg", "sg"] and all(row["images"] == 4 for row in rows.values())
    gflops = {name: row["gflops_per_image_paper"] for name, row in rows.items()}
    assert gflops["none"] < gflops["cfg"] and gflops["sg"] < gflops["cfg"]
    assert {"fid", "precision", "recall", "accuracy"} <= rows["sg"].keys()


def test_same_seed_same_images_and_the_image_shows_them(model, tmp_path):
    first, again = run_demo(model, SETTINGS), run_demo(model, SETTINGS)
    other = run_demo(model, DemoSettings(classes=(3, 7), steps=2, num_images=2, seed=2))
    for a, b, c in zip(first.runs, again.runs, other.runs, strict=True):
        assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
        assert a.labels.tolist() == [3, 7]
    assert not np.array_equal(first.runs[0].images, first.runs[1].images)  # CFG changes the samples
    save_comparison(tmp_path / "demo.png", first)
    pixels = np.asarray(Image.open(tmp_path / "demo.png").convert("L")).astype(int)
    cell = ZOOM * DIGIT_SHAPE[1]
    for row, run in enumerate(first.runs):  # every ZOOM-th pixel of a row's strip is that method's digits
        top = TOP + row * (cell + GAP)
        strip = pixels[top + ZOOM // 2 : top + cell : ZOOM, LEFT + ZOOM // 2 : LEFT + 2 * cell : ZOOM]
        expected = np.concatenate(list(run.images[..., 0]), axis=1)
        assert np.abs(strip - expected).mean() < 2


def test_a_fixed_image_count_gives_the_same_table_whatever_the_batching(model):
    assert DemoSettings().num_images == 110  # the committed docs/results/demo.json's count
    settings = DemoSettings(classes=(3, 7), steps=2, num_images=5, batch_size=2)
    first, again = run_demo(model, settings), run_demo(model, dataclasses.replace(settings, batch_size=5))
    assert first.count == 5 and {"precision", "recall"} <= first.runs[0].metrics.keys()
    for a, b in zip(first.runs, again.runs, strict=True):
        # The noise and token subsets of image k depend only on (seed, k); the batch size changes only the float
        # rounding of the matmuls, which can move a pixel by one uint8 level (seed 1: 1 pixel of 5,120).
        diff = np.abs(a.images.astype(int) - b.images.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
        assert a.metrics == pytest.approx(b.metrics, rel=1e-3)
    assert DemoSettings(classes=(3, 7), num_images=2).metrics() == ("fid", "acc")  # too few for precision/recall


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--gamma-strong", "0.8", "--gamma-weak", "0.5"], "gamma_strong < gamma_weak"),
        (["--gamma-weak", "1"], "must lie in [0, 1)"),
        (["--gamma-strong", "-0.1"], "must lie in [0, 1)"),
        (["--cfg-scale", "0.5"], "ω ≥ 1"),
        (["--sg-scale", "nan"], "sg_scale must be a finite number"),
        (["--num-images", "1"], "num_images must be at least 2"),
        (["--steps", "0"], "steps must be at least 1"),
        (["--model", "mnist-nope"], "neither a file nor a shipped model; did you mean mnist-dense?"),
        (["--model", "mnist-dense"], "is dense"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_bad_options_fail_in_one_line(options, message, tmp_path, capsys):
    assert main(["demo", *TINY, *options, "--out", str(tmp_path / "demo.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sparseguidance demo: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "demo.png").exists()


def test_random_classes_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--classes", "random"])
    assert exit_info.value.code == 2 and "fixed classes" in capsys.readouterr().err


def test_the_verdict_line_compares_each_guided_row_with_no_guidance():
    from sparseguidance.demo import verdict

    rows = [
        {"method": "none", "fid": 50.0, "gflops_per_image_paper": 4.0},
        {"method": "cfg", "fid": 25.0, "gflops_per_image_paper": 8.0},
        {"method": "sg", "fid": 40.0, "gflops_per_image_paper": 3.8},
        {"method": "real digits", "fid": 30.0},
    ]
    line = verdict(rows)
    assert line == (
        "Against no guidance (FID 50.0): SG FID 40.0 (-20 %) at 0.95× its GFLOPs; "
        "CFG FID 25.0 (-50 %) at 2.00× its GFLOPs."
    )
