"""TR-DiT: RoPE follows a routed token, γ = 0 is dense, prefix/rest, text padding and masks, size, FLOPs, configs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import randomize
from torch.utils.flop_counter import FlopCounterMode

from sparseguidance.checkpoints import load_model, save_model
from sparseguidance.conditions import TextCondition, pad
from sparseguidance.config import from_dict
from sparseguidance.diagnostics import as_json, branch_gaps, format_inspection, inspect_model, make_probe
from sparseguidance.errors import CheckpointError, ConfigError
from sparseguidance.flops import forward_flops, prefix_flops, rest_flops
from sparseguidance.guidance import make_guidance
from sparseguidance.guidance.evaluate import guided_velocity
from sparseguidance.models import MODEL_NAMES, MaskDecoderConfig, TRDiT, TRDiTConfig, create_model, model_config
from sparseguidance.models.layers import unpatchify
from sparseguidance.models.trdit import TRDiTPrefix, apply_rope, rope_rotation, swiglu_hidden
from sparseguidance.sampling.sampler import generate
from sparseguidance.sparsity import gather_tokens, kept_count, scatter_tokens

# 3×8×8 inputs, patch 2: a 4×4 grid of 16 tokens; heads of width 16 (4 RoPE pairs per axis); text width 24.
TINY = TRDiTConfig(
    input_size=8, in_channels=3, patch_size=2, hidden_size=32, depth=4, num_heads=2, text_width=24,
    routes=((1, 2),), train_gamma=0.5,
)  # fmt: skip
TRDIT_2_5B_PARAMETERS = 2_446_508_032  # printed by test_2_5b_parameter_count


def tiny_trdit(seed: int = 0, **overrides: object) -> TRDiT:
    """A randomised tiny TR-DiT (every weight N(0, 0.1²), so no zero gate hides a bug)."""
    return randomize(create_model(dataclasses.replace(TINY, **overrides)), seed)


def prompts(batch: int = 3, length: int = 5, lengths: tuple[int, ...] = (5, 2, 4), seed: int = 2) -> TextCondition:
    """Random text states (B, L, 24) whose row b has `lengths[b]` real tokens, and a 2-token empty prompt."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, length, TINY.text_width, generator=gen)
    mask = torch.arange(length)[None] < torch.tensor(lengths)[:, None]
    empty = torch.randn(1, 2, TINY.text_width, generator=gen)
    return TextCondition(states, mask, empty, torch.ones(1, 2, dtype=torch.bool))


def inputs(batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, TextCondition]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, TINY.in_channels, TINY.input_size, TINY.input_size, generator=gen)
    return x, torch.rand(batch, generator=gen), prompts(batch)


@pytest.fixture
def model() -> TRDiT:
    return tiny_trdit()


KEEP = torch.tensor([[0, 3, 5, 9, 10, 15], [1, 2, 3, 4, 5, 6], [2, 7, 8, 11, 12, 14]])


# ------------------------------------------------------------------------------------------------ RoPE
def test_rope_turns_the_first_pairs_with_the_row_and_the_rest_with_the_column():
    head_dim, grid = 8, 4  # 2 pairs per axis, frequencies θ^0 = 1 and θ^(-1/2) = 0.01
    x = torch.randn(1, 1, 1, head_dim)
    for index in (0, 1, 6, 15):
        row, col = divmod(index, grid)
        out = apply_rope(x, rope_rotation(torch.tensor([[index]]), grid, head_dim))
        z = torch.view_as_complex(x.reshape(4, 2).contiguous())  # the pairs as complex numbers
        angles = torch.tensor([row * 1.0, row * 0.01, col * 1.0, col * 0.01])
        expected = torch.view_as_real(z * torch.polar(torch.ones(4), angles)).reshape(1, 1, 1, head_dim)
        torch.testing.assert_close(out, expected)


def test_rope_scores_depend_on_the_offset_between_positions_only():
    q, k = torch.randn(2, 1, 1, 1, 16).unbind(0)
    rotate = lambda v, i: apply_rope(v, rope_rotation(torch.tensor([[i]]), 4, 16))  # noqa: E731
    score = lambda i, j: (rotate(q, i) * rotate(k, j)).sum()  # noqa: E731
    torch.testing.assert_close(score(5, 6), score(9, 10))  # (1, 1)→(1, 2) and (2, 1)→(2, 2): one column apart
    assert not torch.allclose(score(5, 6), score(5, 9))


# --------------------------------------------------------------------------------------------- routing
def test_routed_forward_equals_a_hand_built_reference_and_rope_follows_the_token(model):
    x, t, y = inputs()
    head_dim, grid = TINY.hidden_size // TINY.num_heads, TINY.input_size // TINY.patch_size

    def by_hand(positions: torch.Tensor) -> torch.Tensor:
        p = model.prefix(x, t, y)  # embeddings, connector, block 0
        assert p.start == 1
        kept = gather_tokens(p.tokens, KEEP)  # (B, K, D)
        for i in (1, 2):
            kept = model.blocks[i](kept, p.mod, p.text, p.text_mask, rope_rotation(positions, grid, head_dim))
        tokens = scatter_tokens(p.tokens, kept, KEEP)  # (B, T, D)
        tokens = model.blocks[3](tokens, p.mod, p.text, p.text_mask, rope_rotation(torch.arange(16)[None], grid, 16))
        return unpatchify(model.final_layer(tokens, p.c), TINY.patch_size, TINY.in_channels)

    with torch.no_grad():
        ours = model(x, t, y, keep=KEEP)
        reference = by_hand(KEEP)  # kept tokens rotate at their original positions
        wrong = by_hand(torch.arange(KEEP.shape[1]).expand_as(KEEP))  # as if they sat at 0..K−1
    assert torch.equal(ours, reference)
    assert (ours - wrong).abs().max() > 1e-3


def test_gamma_zero_is_the_dense_forward_bit_for_bit(model):
    x, t, y = inputs()
    with torch.no_grad():
        dense = model(x, t, y)
        zero = model(x, t, y, gamma=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(dense, zero)


def test_keeping_every_token_equals_dense(model):
    x, t, y = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, keep=torch.arange(16).expand(3, 16)), model(x, t, y))


def test_routed_tokens_skip_the_span_and_kept_tokens_see_only_each_other(model):
    x, t, y = inputs()
    captured = {}

    def capture(name):
        def hook(module, args):
            captured[name] = args[0]

        return hook

    model.blocks[1].register_forward_pre_hook(capture("start"))
    model.blocks[3].register_forward_pre_hook(capture("after"))
    with torch.no_grad():
        model(x, t, y, keep=KEEP)
        before = model.prefix(x, t, y).tokens
    assert captured["start"].shape == (3, 6, 32)  # the span saw only the K kept tokens
    dropped = torch.ones(3, 16, dtype=torch.bool).scatter(1, KEEP, False)
    assert torch.equal(captured["after"][dropped], before[dropped])  # routed tokens come out untouched


def test_prefix_then_rest_is_forward_and_seeds_decide_the_subset(model):
    x, t, y = inputs()
    with torch.no_grad():
        whole = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(7))
        split = model.rest(model.prefix(x, t, y), gamma=0.5, generator=torch.Generator().manual_seed(7))
        other = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(8))
        assert torch.equal(model(x, t, y, keep=KEEP), model.rest(model.prefix(x, t, y), keep=KEEP))
    assert torch.equal(whole, split)
    assert not torch.allclose(whole, other)


def test_per_sample_generators_make_a_sample_independent_of_its_batch(model):
    x, t, y = inputs()
    with torch.no_grad():
        gens = [torch.Generator().manual_seed(s) for s in (10, 11, 12)]
        whole = model(x, t, y, gamma=0.5, generator=gens)
        alone = model(x[1:2], t[1:2], y[1:2], gamma=0.5, generator=[torch.Generator().manual_seed(11)])
    torch.testing.assert_close(whole[1:2], alone)


def test_prefix_cat_and_chunk_round_trip_across_text_lengths(model):
    x, t, y = inputs()
    short = TextCondition(y.states[:, :3], y.mask[:, :3], y.empty_states, y.empty_mask)
    with torch.no_grad():
        a, b = model.prefix(x, t, y), model.prefix(x, t, short)  # 1 + 5 and 1 + 3 text tokens
        both = TRDiTPrefix.cat([a, b])
        assert both.text.shape == (6, 6, 32) and TRDiTPrefix.cat([a]) is a
        back_a, back_b = both.chunk(2)
        for original, back in ((a, back_a), (b, back_b)):
            n = original.text.shape[1]
            for name in ("tokens", "c", "mod"):
                assert torch.equal(getattr(back, name), getattr(original, name))
            assert torch.equal(back.text[:, :n], original.text) and torch.equal(
                back.text_mask[:, :n], original.text_mask
            )
            assert not back.text_mask[:, n:].any()  # the padding is masked out
        together = model.rest(both, keep=torch.cat([KEEP, KEEP]))
        torch.testing.assert_close(together[:3], model.rest(a, keep=KEEP))
        torch.testing.assert_close(together[3:], model.rest(b, keep=KEEP))
    with pytest.raises(ValueError, match="different blocks"):
        TRDiTPrefix.cat([a, model.prefix(x, t, y, routes=[(2, 3)])])


def test_text_padding_does_not_change_the_output(model):
    x, t, y = inputs()
    longer = pad(y, 9)
    noisy = TextCondition(
        torch.where(longer.mask[..., None], longer.states, 1e3), longer.mask, y.empty_states, y.empty_mask
    )
    with torch.no_grad():
        base = model(x, t, y, keep=KEEP)
        torch.testing.assert_close(model(x, t, longer, keep=KEEP), base)
        torch.testing.assert_close(model(x, t, noisy, keep=KEEP), base)  # padded states are never read
        assert not torch.allclose(model(x, t, prompts(seed=5), keep=KEEP), base)  # real tokens are


def test_a_prompt_with_no_real_token_gives_a_finite_output_through_the_register(model):
    x, t, y = inputs()
    silent = TextCondition(y.states, y.mask & torch.tensor([True, False, True])[:, None], y.empty_states, y.empty_mask)
    nothing = TextCondition(y.states[1:2, :0], y.mask[1:2, :0], y.empty_states, y.empty_mask)  # L = 0
    with torch.no_grad():
        out = model(x, t, silent, gamma=0.5, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all()
        alone = model(x[1:2], t[1:2], nothing)
        torch.testing.assert_close(model(x, t, silent)[1:2], alone)  # all-False mask = no text at all


def test_a_new_model_is_zero_and_its_blocks_are_the_identity():
    model = create_model(TINY).eval()
    x, t, y = inputs()
    seen = []
    model.blocks[2].register_forward_hook(lambda m, args, out: seen.append(torch.equal(out, args[0])) and None)
    with torch.no_grad():
        assert torch.equal(model(x, t, y), torch.zeros_like(x))
    assert seen == [True]


def test_gradients_reach_every_parameter_in_a_routed_forward(model):
    x, t, y = inputs()
    model.train()
    model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(0)).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")  # CPU rms_norm under autocast
def test_bf16_autocast_and_bf16_weights_track_float32(model):
    x, t, y = inputs()
    with torch.no_grad():
        reference = model(x, t, y, keep=KEEP)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(x, t, y, keep=KEEP)
        half = model.to(torch.bfloat16)(x.bfloat16(), t, y, keep=KEEP)  # RoPE turns in float32 either way
    for out in (autocast, half):
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


@pytest.mark.parametrize("method", ["sg", "cfg", "cfg+sg"])
def test_guidance_runs_tr_dit_and_a_shared_prefix_changes_nothing(model, method):
    x, _, y = inputs()
    guidance = make_guidance(method, 2.0, *((0.25, 0.75) if "sg" in method else (None, None)))

    def velocity(share: bool) -> torch.Tensor:
        generators = [torch.Generator().manual_seed(s) for s in range(3)]
        models = {"main": model}
        return guided_velocity(
            x, 0.5, 0, guidance=guidance, models=models, labels=y, num_steps=4, generators=generators, share=share
        )

    with torch.no_grad():
        torch.testing.assert_close(velocity(True), velocity(False))


def test_generate_samples_prompts_with_tr_dit_batch_independently(model):
    _, _, y = inputs()
    guidance = make_guidance("cfg+sg", 2.0, 0.25, 0.75)
    whole, single = (generate(guidance, {"main": model}, y, seed=1, steps=2, batch_size=b) for b in (3, 1))
    assert whole.images.shape == (3, 3, 8, 8) and torch.isfinite(whole.images).all()
    torch.testing.assert_close(whole.images, single.images)


# ----------------------------------------------------------------------------------- registry, configs
def test_2_5b_parameter_count():
    with torch.device("meta"):
        model = create_model("TR-DiT-2.5B")
    count = sum(p.numel() for p in model.parameters())
    print(f"TR-DiT-2.5B parameters: {count:,}")
    assert count == TRDIT_2_5B_PARAMETERS
    assert 2.3e9 < count < 2.7e9  # PAPER.md §5: 2.5B
    cfg = model.config
    assert (cfg.depth, cfg.hidden_size, cfg.num_heads, cfg.routes, cfg.train_gamma) == (34, 2048, 16, ((2, 30),), 0.5)
    assert (cfg.num_tokens, cfg.input_size * 8, cfg.mlp_hidden) == (1024, 512, 5504)


def test_swiglu_hidden_is_8_3_rounded_up_to_64():
    assert [swiglu_hidden(w) for w in (64, 192, 1152, 2048, 4096)] == [192, 512, 3072, 5504, 10944]


def test_registry_dispatches_on_the_config_and_keeps_dit_names():
    assert isinstance(create_model("TR-DiT-XS"), TRDiT)
    assert "TR-DiT-2.5B" not in MODEL_NAMES  # DiT/SiT's names (the sample and train commands' choices) unchanged
    assert model_config("TR-DiT-S", input_size=28, patch_size=4, in_channels=1).num_tokens == 49
    with pytest.raises(ConfigError, match="unknown model setting.*num_classes"):
        model_config("TR-DiT-S", num_classes=10)
    with pytest.raises(ConfigError, match="TR-DiT-2.5B"):
        model_config("TR-DiT-3B")


@pytest.mark.parametrize(
    "make",
    [
        lambda: TRDiTConfig(decoder=MaskDecoderConfig()),
        lambda: model_config("TR-DiT-S", decoder=MaskDecoderConfig(2, 128, 4)),
        lambda: from_dict(TRDiTConfig, {"decoder": {"depth": 2, "width": 128, "heads": 4}}),
    ],
)
def test_masking_is_refused(make):
    with pytest.raises(ConfigError, match="TR-DiT supports routing only"):
        make()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"text_width": 0}, "text_width must be a positive integer"),
        ({"text_width": 2.5}, "text_width must be a whole number"),
        ({"hidden_size": 30, "num_heads": 3}, "width divisible by 4"),
        ({"routes": ((2, 4),)}, "outside the model's depth 4"),
        ({"connector_depth": -1}, "connector_depth"),
        ({"family": "dit"}, "family"),
    ],
)
def test_bad_configs_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **overrides)


def test_bad_inputs_are_clear_errors(model):
    x, t, y = inputs()
    wide = TextCondition(
        torch.zeros(3, 2, 16), torch.ones(3, 2, dtype=torch.bool), torch.zeros(1, 1, 16), y.empty_mask[:, :1]
    )
    with pytest.raises(ConfigError, match="width 16, but the model's text_width is 24"):
        model(x, t, wide)
    with pytest.raises(ConfigError, match="TextCondition"):
        model(x, t, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="2 prompts for 3 images"):
        model(x, t, y[:2])
    with pytest.raises(ConfigError, match=r"the prefix ran blocks 0..0, but a route starts at 0"):
        model.rest(model.prefix(x, t, y), gamma=0.5, routes=[(0, 1)])


def test_save_and_load_through_model_json_round_trip(tmp_path):
    model = tiny_trdit()
    save_model(model, tmp_path / "m.safetensors", {"step": 3})
    stored = json.loads((tmp_path / "m.json").read_text())
    assert stored["model"]["family"] == "tr-dit" and stored["model"]["routes"] == [[1, 2]]
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    x, t, y = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, t, y, keep=KEEP), model(x, t, y, keep=KEEP))
    stored["model"]["family"] = "unet"
    (tmp_path / "m.json").write_text(json.dumps(stored))
    with pytest.raises(CheckpointError, match="unknown model family 'unet'"):
        load_model(tmp_path / "m.safetensors")


# ----------------------------------------------------------------------------------------------- FLOPs
def counted(config: TRDiTConfig, gamma: float, text_tokens: int, part: str = "forward") -> int:
    """FLOPs torch counts for one sample (meta device) through the whole forward or the prefix alone."""
    with torch.device("meta"):
        model = create_model(config)
        x, t = torch.zeros(1, config.in_channels, config.input_size, config.input_size), torch.zeros(1)
        states, mask = torch.zeros(1, text_tokens, config.text_width), torch.ones(1, text_tokens, dtype=torch.bool)
        y = TextCondition(states, mask, states[:, :1], mask[:, :1])
        keep = torch.arange(kept_count(config.num_tokens, gamma)).unsqueeze(0)
    counter = FlopCounterMode(display=False)
    with counter:
        model.prefix(x, t, y) if part == "prefix" else model(x, t, y, keep=keep if gamma > 0 else None)
    return counter.get_total_flops()


@pytest.mark.parametrize(
    ("name", "overrides", "gamma", "text_tokens"),
    [
        ("TR-DiT-XS", {}, 0.0, 7),
        ("TR-DiT-XS", {}, 0.5, 7),
        ("TR-DiT-S", {"routes": ((0, 2), (4, 6))}, 0.75, 12),
        ("TR-DiT-S", {"input_size": 28, "in_channels": 1, "connector_depth": 0}, 0.3, 0),
        ("TR-DiT-XS", {"routes": ()}, 0.0, 3),
    ],
)
def test_full_convention_equals_torch_flop_counter(name, overrides, gamma, text_tokens):
    config = model_config(name, **overrides)
    assert forward_flops(config, gamma, text_tokens=text_tokens).full == counted(config, gamma, text_tokens)
    assert prefix_flops(config, text_tokens=text_tokens).full == counted(config, 0.0, text_tokens, "prefix")
    parts = prefix_flops(config, text_tokens=text_tokens) + rest_flops(config, gamma, text_tokens=text_tokens)
    assert forward_flops(config, gamma, text_tokens=text_tokens) == parts


def test_2_5b_flops_at_512px():
    """TR-DiT-2.5B at 512×512 (1024 tokens), 128 prompt tokens, route 2→30, GFLOPs per sample (paper / full)."""
    config = model_config("TR-DiT-2.5B")
    dense, sg_strong, sg_weak = (forward_flops(config, g) for g in (0.0, 0.1, 0.8))
    prefix = prefix_flops(config)
    assert (round(dense.paper / 1e9, 1), round(dense.full / 1e9, 1)) == (2103.9, 4536.9)
    assert (round(sg_strong.paper / 1e9, 1), round(sg_weak.paper / 1e9, 1)) == (1929.4, 703.0)
    assert round(prefix.paper / 1e9, 1) == 136.5  # counted once for SG's two branches
    shared_sg = (sg_strong + sg_weak).paper - prefix.paper
    assert 1.6 < 2 * dense.paper / shared_sg < 1.8  # CFG costs ~1.7× SG(0.1/0.8) per step
    assert math.isclose(forward_flops(config, text_tokens=0).paper, dense.paper, rel_tol=0.03)  # text is cheap


def test_inspect_measures_tr_dit_with_and_without_the_prompt(model):
    x, _, y = inputs()
    inspection = inspect_model(model, make_probe(x, y), [0.5], [0.3, 0.7], [(0.0, 0.5)])
    assert set(inspection.updates_dense) == {str(i) for i in range(TINY.depth)}
    assert all(v > 0 for v in inspection.updates_dense.values())
    row = inspection.gaps[0]
    assert row.sg["0/0.5"] > 0 and row.sg_null["0/0.5"] > 0 and row.cfg > 0
    assert row.sg["0/0.5"] != row.sg_null["0/0.5"]  # the prompt changes what dropping tokens does
    assert "SG∅ 0/0.5" in format_inspection(inspection)
    assert as_json(inspection)["branch_gaps"][0]["sg_empty_prompt"] == row.sg_null


def test_a_tr_dit_whose_route_is_the_identity_has_no_sg_gap(model):
    with torch.no_grad():
        for i in (1, 2):  # the route's blocks: zero output projections make each the identity
            for layer in (model.blocks[i].attn.proj, model.blocks[i].cross.proj, model.blocks[i].mlp.down):
                layer.weight.zero_()
    x, _, y = inputs()
    (row,) = branch_gaps(model, make_probe(x, y), [0.5], [(0.0, 0.5)])
    assert row.cfg > 1e-3  # the prompt still matters through the dense blocks
    assert max(row.sg["0/0.5"], row.sg_null["0/0.5"]) < 1e-4 * row.cfg  # zero up to float rounding
