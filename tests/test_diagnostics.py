"""`inspect`'s measurements on tiny models whose answers are known: silent blocks read 0, silent routes give no gap."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config, tiny_inputs, tiny_model

from sparseguidance.checkpoints import save_model
from sparseguidance.cli import main
from sparseguidance.diagnostics import block_updates, branch_gaps, inspect_model, make_probe, rms
from sparseguidance.errors import ConfigError


def silence(model, blocks):
    """Zero the adaLN gates (and shifts, scales) of the given blocks: each becomes the identity."""
    with torch.no_grad():
        for i in blocks:
            model.blocks[i].adaLN_modulation[-1].weight.zero_()
            model.blocks[i].adaLN_modulation[-1].bias.zero_()
    return model


def probe(config, seed=1):
    x, _, y = tiny_inputs(batch=4, seed=seed, config=config)
    return make_probe(x, y.clamp(max=config.num_classes - 1), seed=0)


def test_block_update_equals_a_hand_computation():
    model = tiny_model(routes=((1, 2),), train_gamma=0.5)
    p = probe(model.config)
    t = torch.full((4,), 0.5)
    x_t = 0.5 * p.z + 0.5 * p.x
    h = model.x_embedder(x_t) + model.pos_embed
    c = model.t_embedder(t) + model.y_embedder(p.y)
    expected = rms(model.blocks[0](h, c) - h) / rms(h)
    assert block_updates(model, p, [0.5])["0"] == pytest.approx(expected, rel=1e-6)


def test_a_block_whose_gates_are_zero_reads_zero():
    model = silence(tiny_model(), [2])
    updates = block_updates(model, probe(model.config), [0.25, 0.75])
    assert updates["2"] == 0.0
    assert all(updates[b] > 0 for b in ("0", "1", "3"))


def test_a_silent_route_gives_no_branch_gap_and_a_working_one_does():
    config = tiny_config(routes=((1, 2),), train_gamma=0.5)
    silent = silence(tiny_model(routes=((1, 2),), train_gamma=0.5), [1, 2])
    rows = branch_gaps(silent, probe(config), [0.3, 0.7], [(0.0, 0.5), (0.25, 0.75)])
    assert all(value == 0.0 for row in rows for value in row.sg.values())
    assert all(row.cfg > 0 for row in rows)  # the labels still matter
    rows = branch_gaps(tiny_model(routes=((1, 2),), train_gamma=0.5), probe(config), [0.3, 0.7], [(0.0, 0.5)])
    assert all(row.sg["0/0.5"] > 0 for row in rows) and rows[0].ag is None


def test_training_gamma_updates_differ_from_dense_on_a_working_route():
    model = tiny_model(routes=((1, 2),), train_gamma=0.5)
    p = probe(model.config)
    dense, sparse = block_updates(model, p, [0.5]), block_updates(model, p, [0.5], gamma=0.5)
    assert dense["0"] == sparse["0"]  # before the route: the same tokens
    assert dense["3"] != sparse["3"]  # after it: half the tokens skipped blocks 1..2


def test_ag_gap_is_zero_against_the_same_weights_and_summary_ratios():
    model = tiny_model(routes=((1, 2),), train_gamma=0.5)
    reference = tiny_model(seed=3)
    inspection = inspect_model(model, probe(model.config), [0.5], [0.5], [(0.0, 0.5)], model, reference)
    assert inspection.gaps[0].ag == 0.0
    expected = sum(inspection.updates_dense[b] / inspection.reference_updates[b] for b in "12") / 2
    assert inspection.routed_update_ratio() == pytest.approx(expected)
    assert inspection.gap_ratios()["0/0.5"] == pytest.approx(inspection.gaps[0].sg["0/0.5"] / inspection.gaps[0].cfg)


def test_sg_gap_of_a_dense_model_or_a_bad_pair_is_refused():
    config = tiny_config()
    with pytest.raises(ConfigError, match="dense"):
        branch_gaps(tiny_model(), probe(config), [0.5], [(0.0, 0.5)])
    with pytest.raises(ConfigError, match="γ_strong < γ_weak"):
        branch_gaps(tiny_model(routes=((1, 2),)), probe(config), [0.5], [(0.5, 0.5)])


@pytest.fixture(scope="module")
def mnist_sized(tmp_path_factory):
    """A tiny routed model that takes MNIST-shaped input, saved as our checkpoint."""
    path = tmp_path_factory.mktemp("inspect") / "tiny.safetensors"
    model = tiny_model(in_channels=1, input_size=32, patch_size=8, num_classes=10, routes=((1, 2),), train_gamma=0.5)
    save_model(model, path)
    return path


def test_inspect_command_prints_tables_and_writes_plot_and_json(mnist_sized, tmp_path, capsys):
    out_json, out_png = tmp_path / "inspect.json", tmp_path / "inspect.png"
    argv = ["inspect", str(mnist_sized), "--num-images", "8", "--gap-times", "0.5", "--pairs", "0:0.5"]
    assert main([*argv, "--reference", str(mnist_sized), "--json", str(out_json), "--plot", str(out_png)]) == 0
    printed = capsys.readouterr().out
    assert "relative update" in printed and "SG 0/0.5" in printed
    report = json.loads(out_json.read_text())
    assert report["routed_update_ratio"] == pytest.approx(1.0)  # the model against itself
    assert report["routed_blocks"] == ["1", "2"] and len(report["branch_gaps"]) == 1
    assert out_png.stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--times", "1.0"], "times must lie in"),
        (["--num-images", "0"], "--num-images"),
        (["--pairs", "0.9:0.5"], "γ_strong < γ_weak"),
    ],
)
def test_inspect_bad_input_is_one_line(mnist_sized, capsys, extra, message):
    assert main(["inspect", str(mnist_sized), "--num-images", "4", *extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_an_eps_network_is_inspected_through_its_adapter():
    from sparseguidance.models.prediction import DDPMEpsilon, as_velocity

    network = tiny_model(routes=((1, 2),), train_gamma=0.5)
    wrapped = as_velocity(network, DDPMEpsilon())
    p = probe(network.config)
    assert block_updates(wrapped, p, [0.5]).keys() == {"0", "1", "2", "3"}
    assert branch_gaps(wrapped, p, [0.5], [(0.0, 0.5)])[0].sg["0/0.5"] > 0
