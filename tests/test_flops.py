"""FLOPs: the analytic count against torch's FlopCounterMode (meta device) and against PAPER.md Table 2."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sparseguidance.cli import main
from sparseguidance.errors import ConfigError
from sparseguidance.flops import euler_step_flops, forward_flops, prefix_flops, rest_flops
from sparseguidance.guidance import GammaSchedule, make_guidance
from sparseguidance.models import MaskDecoderConfig, create_model, model_config
from sparseguidance.sparsity import kept_count

SIT_ROUTED = model_config("SiT-XL/2", routes=((2, 24),))
SG_TRDIT = ["--guidance", "sg", "--gamma-strong", "0.1", "--gamma-weak", "0.8"]  # PAPER.md §5's HPSv3 setting
SG_FLOPS = [
    "--model",
    "SiT-XL/2",
    "--route",
    "2-24",
    "--guidance",
    "sg",
    "--gamma-strong",
    "0.5",
    "--gamma-weak",
    "0.9",
]


def counted_flops(config, gamma: float) -> int:
    """FLOPs that torch counts for one forward of one sample on the meta device (where SDPA is counted)."""
    with torch.device("meta"):
        model = create_model(config)
        x = torch.zeros(1, config.in_channels, config.input_size, config.input_size)
        t, y = torch.zeros(1), torch.zeros(1, dtype=torch.long)
        keep = torch.arange(kept_count(config.num_tokens, gamma)).unsqueeze(0)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x, t, y, keep=keep if gamma > 0 else None)
    return counter.get_total_flops()


@pytest.mark.parametrize(
    ("name", "overrides", "gamma"),
    [
        ("DiT-B/2", {}, 0.0),
        ("DiT-B/2", {"routes": ((2, 8),)}, 0.5),
        ("SiT-S/4", {"routes": ((0, 3), (6, 10)), "learn_sigma": False}, 0.75),
        ("SiT-S/2", {"decoder": MaskDecoderConfig(2, 128, 4)}, 0.5),
        ("SiT-S/2", {"decoder": MaskDecoderConfig(2, 128, 4)}, 0.0),
        ("SiT-S/8", {"in_channels": 1, "num_classes": 10, "routes": ((1, 9),)}, 0.9),
    ],
)
def test_full_convention_equals_torch_flop_counter(name, overrides, gamma):
    config = model_config(name, **overrides)
    assert forward_flops(config, gamma).full == counted_flops(config, gamma)


def test_paper_table2_flops():
    """PAPER.md Table 2 (GFLOPs per sampling step): our count within 0.2 % (0.5 % for the scheduled AG+SG)."""
    cosine_down, cosine_up = GammaSchedule(0.6, 0.0, "cosine"), GammaSchedule(0.0, 0.6, "cosine")
    cases = [
        (make_guidance("none"), 114.42, 0.002),
        (make_guidance("cfg"), 228.84, 0.002),
        (make_guidance("ag"), 228.84, 0.002),
        (make_guidance("icg"), 228.84, 0.002),
        (make_guidance("sg", 1.5, 0.5, 0.9), 97.67, 0.002),
        (make_guidance("ag+sg", 1.5, cosine_up, cosine_down), 173.16, 0.005),
    ]
    for guidance, paper, tolerance in cases:
        ours = euler_step_flops(guidance, SIT_ROUTED, SIT_ROUTED, 40, share=False).paper / 1e9  # the paper's count
        assert abs(ours - paper) / paper < tolerance, (guidance.name, ours, paper)


def test_dit_xl_full_is_twice_dits_118_6_gflops():
    assert abs(forward_flops(model_config("DiT-XL/2")).full / 1e9 - 237.2) / 237.2 < 0.002


def test_routing_and_masking_reduce_flops_monotonically():
    masked = model_config("SiT-XL/2", decoder=MaskDecoderConfig())
    for config in (SIT_ROUTED, masked):
        costs = [forward_flops(config, g).paper for g in (0.0, 0.25, 0.5, 0.75, 0.9)]
        assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]


def test_interval_runs_one_forward_outside():
    guidance = make_guidance("cfg", 1.5, interval=(0.5, 1.0))
    per_step = euler_step_flops(guidance, SIT_ROUTED, None, 40).paper
    dense = forward_flops(SIT_ROUTED).paper
    assert per_step == pytest.approx(dense * (20 * 2 + 20) / 40)  # t_i = i/40 ≥ 0.5 for i = 20..39


def test_gamma_on_a_dense_model_is_refused():
    with pytest.raises(ConfigError, match="dense model"):
        forward_flops(model_config("SiT-XL/2"), 0.5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "SiT-XL/2", "--route", "2-24", "--guidance", "none"], 114.42),
        (["--model", "SiT-XL/2", "--route", "2-24", "--guidance", "cfg"], 228.84),
        (
            [*SG_FLOPS, "--no-share"],
            97.67,
        ),
        (SG_FLOPS, 89.48),
        (
            [
                "--model",
                "SiT-XL/2",
                "--route",
                "2-24",
                "--guidance",
                "ag+sg",
                "--gamma-strong",
                "0.0:0.6",
                "--gamma-weak",
                "0.6:0.0",
                "--gamma-schedule",
                "cosine",
                "--steps",
                "40",
            ],
            173.16,
        ),
        (["--model", "DiT-XL/2", "--guidance", "none"], 114.42),
    ],
)
def test_flops_command_json(capsys, args, expected):
    assert main(["flops", *args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert abs(summary["gflops_paper"] - expected) / expected < 0.005
    assert summary["gflops_full"] > summary["gflops_paper"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "SiT-XXL/2"], "invalid choice: 'SiT-XXL/2'"),
        (["--model", "SiT-XL/2", "--route", "2-30"], "route 2-30 lies outside the model's depth 28"),
        (
            ["--model", "SiT-XL/2", "--route", "2-24", "--guidance", "sg", "--gamma-strong", "1.0"],
            "--gamma-strong must lie in [0, 1)",
        ),
        (["--model", "SiT-XL/2", "--guidance", "cfg", "--gamma-weak", "0.5"], "takes no γ"),
        (["--model", "SiT-XL/2", "--route", "two-24"], "expected START-END"),
        (["--model", "SiT-XL/2", "--decoder", "8x512"], "expected DEPTHxWIDTHxHEADS"),
        (["--model", "TR-DiT-2.5B", "--decoder", "8x512x16"], "TR-DiT supports routing only"),
        (["--model", "TR-DiT-2.5B", "--text-tokens", "-1"], "expected a whole number ≥ 0"),
    ],
)
def test_flops_command_errors_are_one_line(capsys, args, message):
    try:
        code = main(["flops", *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err


def test_a_shared_prefix_is_counted_once_for_sg_only():
    """SiT-XL/2 2→24 at 0.5/0.9: 89.48 GFLOPs/step with the prefix (embeddings, blocks 0–1) once, 97.66 without."""
    sg = make_guidance("sg", 1.5, 0.5, 0.9)
    shared, whole = (euler_step_flops(sg, SIT_ROUTED, None, 40, share=s) for s in (True, False))
    assert round(shared.paper / 1e9, 2) == 89.48 and round(whole.paper / 1e9, 2) == 97.66
    assert whole.paper - shared.paper == prefix_flops(SIT_ROUTED).paper
    for other in (make_guidance("cfg", 1.5), make_guidance("cfg+sg", 1.5, 0.5, 0.9), make_guidance("none")):
        assert euler_step_flops(other, SIT_ROUTED, None, 40) == euler_step_flops(
            other, SIT_ROUTED, None, 40, share=False
        )


@pytest.mark.parametrize(
    ("overrides", "depth"),
    [({"routes": ((2, 8),)}, 2), ({"decoder": MaskDecoderConfig(2, 128, 4)}, 0), ({}, 12)],
)
def test_prefix_and_rest_add_up_and_the_prefix_is_what_torch_counts(overrides, depth):
    config = model_config("DiT-B/2", **overrides)
    assert config.prefix_depth() == depth
    gamma = 0.5 if config.sparsity != "dense" else 0.0
    assert forward_flops(config, gamma) == prefix_flops(config) + rest_flops(config, gamma)
    with torch.device("meta"):
        model = create_model(config)
        x, t, y = torch.zeros(1, 4, 32, 32), torch.zeros(1), torch.zeros(1, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        model.prefix(x, t, y)
    assert prefix_flops(config).full == counter.get_total_flops()


def test_flops_command_says_whether_the_prefix_is_shared(capsys):
    args = ["flops", *SG_FLOPS]
    assert main(args) == 0
    assert "shared prefix: counted once" in capsys.readouterr().out
    assert main([*args, "--no-share"]) == 0
    assert "the paper's count" in capsys.readouterr().out


def test_flops_command_counts_tr_dit(capsys):
    """TR-DiT-2.5B at 512×512 with its own route 2→30: CFG is two dense forwards, SG(0.1/0.8) far less."""

    def summary(*args: str) -> dict:
        assert main(["flops", "--model", "TR-DiT-2.5B", *args, "--steps", "50", "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    none, cfg, sg = summary(), summary("--guidance", "cfg"), summary(*SG_TRDIT)
    dense = forward_flops(model_config("TR-DiT-2.5B"))
    assert none["routes"] == [[2, 30]] and none["text_tokens"] == 128 and "text encoder" in none["convention"]["text"]
    assert none["gflops_paper"] == pytest.approx(dense.paper / 1e9) == pytest.approx(2103.9, abs=0.05)
    assert cfg["gflops_paper"] == pytest.approx(2 * none["gflops_paper"])
    assert sg["gflops_paper"] == pytest.approx(2495.9, abs=0.05) and sg["gflops_full"] > sg["gflops_paper"]
    assert summary("--text-tokens", "0")["gflops_paper"] < none["gflops_paper"]
    assert main(["flops", "--model", "TR-DiT-2.5B", *SG_TRDIT]) == 0
    assert "text: 128 prompt tokens per sample" in capsys.readouterr().out
