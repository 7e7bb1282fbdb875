"""Devices: the default and its checks, one-line errors in every command that runs a network, autocast, compile."""

from __future__ import annotations

import pytest
import torch
from conftest import randomize, tiny_inputs, tiny_model

from sparseguidance.cli import main
from sparseguidance.conditions import TextCondition
from sparseguidance.devices import autocast, compile_model, resolve_device, use_device
from sparseguidance.errors import ConfigError
from sparseguidance.metrics.evaluate import EvalConfig
from sparseguidance.models import create_model
from sparseguidance.sampling.seeds import sample_generators

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")


def test_the_default_device_is_cuda_when_present_else_cpu():
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert use_device("cpu") == torch.device("cpu")


@NO_CUDA
@pytest.mark.parametrize(("name", "message"), [("cuda", "CUDA is not available"), ("gpu0", "unknown device 'gpu0'")])
def test_absent_or_unknown_devices_are_config_errors(name, message):
    with pytest.raises(ConfigError, match=message):
        resolve_device(name)


@NO_CUDA
@pytest.mark.parametrize(
    "command",
    [
        ["sample", "mnist-routing", "--out", "x.png"],
        ["eval", "mnist5k:heldout", "--ref", "mnist5k:heldout"],
        ["ref-stats", "mnist5k:heldout", "--out", "x.npz"],
        ["demo"],
        ["encode", "images", "latents", "--vae", "vae"],
    ],
)
def test_every_command_that_runs_a_network_says_cuda_is_absent_in_one_line(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_fp32_autocast_is_no_autocast_at_all():
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(ConfigError, match="unknown precision"):
        autocast("cpu", "fp64")
    with pytest.raises(ConfigError, match="unknown precision"):
        EvalConfig(precision="fp64")  # the feature extractor's, refused before any feature is extracted


@pytest.mark.parametrize("mode", ["auto", "dynamic", "static"])
def test_compiled_blocks_keep_the_model_s_outputs_names_and_methods(mode):
    model = tiny_model(routes=((1, 2),))
    x, t, y = tiny_inputs()
    names = set(model.state_dict())
    with torch.no_grad():
        want = [model(x, t, y, gamma=g, generator=sample_generators(0, range(3))) for g in (0.0, 0.25, 0.75)]
        compile_model(model, mode, backend="eager")  # traces with dynamo, runs the captured graphs eagerly
        got = [model(x, t, y, gamma=g, generator=sample_generators(0, range(3))) for g in (0.0, 0.25, 0.75)]
        prefix = model.prefix(x, t, y)
    assert set(model.state_dict()) == names and prefix.start == 1
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="unknown compile mode"):
        compile_model(model, "fast")


def test_a_tr_dit_compiles_per_block_and_keeps_its_outputs():
    model = randomize(create_model("TR-DiT-XS", input_size=8, in_channels=1, patch_size=2, text_width=8))
    x, t = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0.3, 0.7])
    states = torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(1))
    y = TextCondition(states, torch.ones(2, 3, dtype=torch.bool), states[:1, :1], torch.ones(1, 1, dtype=torch.bool))
    with torch.no_grad():
        want = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(2))
        compile_model(model, "auto", backend="eager")
        got = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(2))
    compiled = [m for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    assert len(compiled) == 4 + 1 + 1  # blocks, the connector's block, the final layer
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
