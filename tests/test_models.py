"""The backbone: a hand-written reference forward, γ = 0, routing and masking with explicit subsets, seeds."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config, tiny_inputs, tiny_model

from sparseguidance.errors import ConfigError
from sparseguidance.models import MODEL_NAMES, create_model, model_config
from sparseguidance.models.dit import Prefix, sincos_2d
from sparseguidance.sampling.seeds import sample_generators
from sparseguidance.sparsity import gather_tokens


def reference_forward(state: dict[str, torch.Tensor], cfg, x, t, y) -> torch.Tensor:
    """DiT written out with plain tensor ops from the state dict: patchify by reshaping, attention by einsum."""
    B, C, S, _ = x.shape
    p, D, H = cfg.patch_size, cfg.hidden_size, cfg.num_heads
    g = S // p

    def linear(v, name):
        return v @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def layer_norm(v):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + 1e-6)

    def gelu_tanh(v):
        return 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    patches = x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)
    w = state["x_embedder.proj.weight"].reshape(D, C * p * p)
    h = patches @ w.T + state["x_embedder.proj.bias"] + state["pos_embed"]

    freqs = torch.exp(-math.log(10000) * torch.arange(128) / 128)
    tf = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
    temb = linear(torch.nn.functional.silu(linear(tf, "t_embedder.mlp.0")), "t_embedder.mlp.2")
    c = temb + state["y_embedder.embedding_table.weight"][y]
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        mod = linear(torch.nn.functional.silu(c), f"{b}.adaLN_modulation.1")[:, None].chunk(6, -1)
        a = layer_norm(h) * (1 + mod[1]) + mod[0]
        q, k, v = linear(a, f"{b}.attn.qkv").reshape(B, -1, 3, H, D // H).unbind(2)
        att = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(D // H), -1)
        o = torch.einsum("bhnm,bmhd->bnhd", att, v).reshape(B, -1, D)
        h = h + mod[2] * linear(o, f"{b}.attn.proj")
        m = layer_norm(h) * (1 + mod[4]) + mod[3]
        h = h + mod[5] * linear(gelu_tanh(linear(m, f"{b}.mlp.fc1")), f"{b}.mlp.fc2")
    shift, scale = linear(torch.nn.functional.silu(c), "final_layer.adaLN_modulation.1")[:, None].chunk(2, -1)
    out = linear(layer_norm(h) * (1 + scale) + shift, "final_layer.linear")  # (B, T, p·p·C_out)
    Co = cfg.out_channels
    img = out.reshape(B, g, g, p, p, Co).permute(0, 5, 1, 3, 2, 4).reshape(B, Co, S, S)
    return img[:, :C]


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_dense_forward_matches_hand_written_reference(learn_sigma):
    model = tiny_model(learn_sigma=learn_sigma)
    x, t, y = tiny_inputs()
    with torch.no_grad():
        ours = model(x, t, y)
        ref = reference_forward(model.state_dict(), model.config, x, t, y)
    assert ours.shape == x.shape
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_gamma_zero_is_the_dense_forward_bit_for_bit(routed, masked):
    x, t, y = tiny_inputs()
    for model in (routed, masked):
        with torch.no_grad():
            dense = model(x, t, y)
            zero = model(x, t, y, gamma=0.0, generator=torch.Generator().manual_seed(3))
        assert torch.equal(dense, zero)


def test_keeping_every_token_equals_dense(routed, masked):
    x, t, y = tiny_inputs()
    keep = torch.arange(16).expand(3, 16)
    for model in (routed, masked):
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, y, keep=keep), model(x, t, y), rtol=1e-5, atol=1e-6)


def test_routed_tokens_skip_the_span_and_kept_tokens_see_only_each_other(routed):
    x, t, y = tiny_inputs()
    keep = torch.tensor([[0, 3, 5, 9, 10, 15], [1, 2, 3, 4, 5, 6], [15, 14, 7, 0, 8, 2]])
    captured = {}

    def capture(name):
        def hook(module, args):
            captured[name] = args[0]

        return hook

    routed.blocks[1].register_forward_pre_hook(capture("in_start"))
    routed.blocks[3].register_forward_pre_hook(capture("in_after"))
    with torch.no_grad():
        out = routed(x, t, y, keep=keep)
        # The span (blocks 1..2) saw only K tokens.
        assert captured["in_start"].shape == (3, 6, 32)
        # Dense run of the same blocks on the subset, by hand.
        tokens = routed.x_embedder(x) + routed.pos_embed
        c = routed.t_embedder(t) + routed.y_embedder(y)
        before = routed.blocks[0](tokens, c)
        subset = routed.blocks[2](routed.blocks[1](gather_tokens(before, keep), c), c)
    after = captured["in_after"]
    dropped = torch.ones(3, 16, dtype=torch.bool).scatter(1, keep, False)
    assert torch.equal(after[dropped], before[dropped])  # routed tokens come out untouched
    torch.testing.assert_close(gather_tokens(after, keep), subset)  # kept tokens: a dense run on the subset
    assert out.shape == x.shape


def test_several_routes_each_take_their_own_subset():
    model = tiny_model(routes=((0, 0), (2, 3)))
    x, t, y = tiny_inputs()
    a, b = torch.arange(8).expand(3, 8), torch.arange(8, 16).expand(3, 8)
    with torch.no_grad():
        out = model(x, t, y, keep=[a, b])
        tokens = model.x_embedder(x) + model.pos_embed
        c = model.t_embedder(t) + model.y_embedder(y)
        tokens = tokens.clone()
        tokens[:, :8] = model.blocks[0](tokens[:, :8], c)
        tokens = model.blocks[1](tokens, c)
        tokens[:, 8:] = model.blocks[3](model.blocks[2](tokens[:, 8:], c), c)
        ref = model.unpatchify(model.final_layer(tokens, c))[:, :3]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_masking_keeps_dropped_tokens_out_of_the_encoder(masked):
    x, t, y = tiny_inputs()
    keep = torch.tensor([[0, 1, 2, 3, 8, 9, 10, 11]] * 3)
    seen, encoded = [], []
    masked.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]) and None)
    masked.blocks[-1].register_forward_hook(lambda m, args, out: encoded.append(out) and None)
    x2 = x.clone()
    x2[:, :, 2:4, :] = 100.0  # token rows 1 (indices 4..7) are dropped: change their pixels wildly
    with torch.no_grad():
        masked(x, t, y, keep=keep)
        masked(x2, t, y, keep=keep)
    assert seen[0].shape == (3, 8, 32)
    assert torch.equal(encoded[0], encoded[1])  # the encoder never saw the dropped pixels
    with torch.no_grad():
        assert not torch.equal(masked(x, t, y), masked(x2, t, y))  # the dense model does see them


def test_same_seed_same_output_other_seed_other_output(routed, masked):
    x, t, y = tiny_inputs()
    for model in (routed, masked):
        with torch.no_grad():
            a = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(7))
            b = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(7))
            c = model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(8))
        assert torch.equal(a, b)
        assert not torch.allclose(a, c)


def test_per_sample_generators_make_a_sample_independent_of_its_batch(routed):
    x, t, y = tiny_inputs(batch=3)
    with torch.no_grad():
        whole = routed(x, t, y, gamma=0.5, generator=[torch.Generator().manual_seed(s) for s in (10, 11, 12)])
        alone = routed(x[1:2], t[1:2], y[1:2], gamma=0.5, generator=[torch.Generator().manual_seed(11)])
    torch.testing.assert_close(whole[1:2], alone, rtol=1e-5, atol=1e-6)


def test_output_depends_on_label_and_time(routed):
    x, t, y = tiny_inputs()
    with torch.no_grad():
        base = routed(x, t, y)
        assert not torch.allclose(base, routed(x, t, (y + 1) % 5))
        assert not torch.allclose(base, routed(x, t * 0.5, y))


def test_gradients_reach_every_parameter_in_a_sparse_forward(routed, masked):
    x, t, y = tiny_inputs()
    for model in (routed, masked):
        model.train()
        model(x, t, y, gamma=0.5, generator=torch.Generator().manual_seed(0)).square().mean().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_pos_embed_is_dits_2d_sincos():
    pe = sincos_2d(8, 4)  # 4×4 grid, width 8: first half encodes the column, second half the row
    assert pe.shape == (16, 8)
    col1_row0 = pe[1]
    assert torch.allclose(col1_row0[:4], torch.tensor([math.sin(1), math.sin(1e-2), math.cos(1), math.cos(1e-2)]))
    assert torch.allclose(col1_row0[4:], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(pe[4][:4], pe[0][:4]) and not torch.allclose(pe[4][4:], pe[0][4:])  # next row


def test_registry_names_and_sizes():
    assert {"DiT-XL/2", "SiT-XL/2", "SiT-B/4", "DiT-S/8"} <= set(MODEL_NAMES)
    xl = model_config("SiT-XL/2")
    assert (xl.depth, xl.hidden_size, xl.num_heads, xl.patch_size, xl.num_tokens) == (28, 1152, 16, 2, 256)
    with pytest.raises(ConfigError, match="unknown model 'SiT-XXL/2'.*SiT-XL/2"):
        model_config("SiT-XXL/2")
    with pytest.raises(ConfigError, match="unknown model setting"):
        model_config("SiT-S/2", widht=3)


def test_xl_parameter_count_matches_the_released_model():
    with torch.device("meta"):
        model = create_model("DiT-XL/2")
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - 675.1e6) / 675.1e6 < 1e-3  # DiT paper: DiT-XL/2 has 675M parameters


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gamma": 1.0}, r"gamma must lie in \[0, 1\)"),
        ({"gamma": -0.1}, r"gamma must lie in \[0, 1\)"),
        ({"keep": torch.tensor([[0, 0, 1]] * 3)}, "repeat"),
        ({"keep": torch.tensor([[0, 16]] * 3)}, r"lie in \[0, 16\)"),
        ({"keep": torch.tensor([[0, 1]] * 2)}, "shape"),
        ({"gamma": 0.5, "routes": [(1, 4)]}, "outside the model's depth 4"),
        ({"gamma": 0.5, "routes": [(2, 1)]}, "outside the model's depth"),
        ({"gamma": 0.5, "routes": [(0, 2), (2, 3)]}, "overlap"),
    ],
)
def test_bad_sparsity_arguments_are_clear_errors(routed, kwargs, message):
    x, t, y = tiny_inputs()
    with pytest.raises(ConfigError, match=message):
        routed(x, t, y, **kwargs)


def test_dense_model_refuses_gamma_without_routes_but_takes_routes_per_call():
    model = tiny_model()
    x, t, y = tiny_inputs()
    with pytest.raises(ConfigError, match="dense"):
        model(x, t, y, gamma=0.5)
    with torch.no_grad():
        assert model(x, t, y, gamma=0.5, routes=[(1, 2)], generator=torch.Generator()).shape == x.shape


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="outside the model's depth 4"):
        tiny_config(routes=((2, 4),))
    with pytest.raises(ConfigError, match="not divisible"):
        tiny_config(patch_size=3)
    with pytest.raises(ConfigError, match="train_gamma"):
        tiny_config(train_gamma=1.5)
    model = tiny_model()
    with pytest.raises(ConfigError, match=r"expects input \(B, 3, 8, 8\)"):
        model(torch.zeros(2, 1, 8, 8), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="labels"):
        model(torch.zeros(2, 3, 8, 8), torch.zeros(2), torch.zeros(3, dtype=torch.long))


def test_time_scale_multiplies_t_before_the_embedding():
    scaled = tiny_model(time_scale=1000.0)
    plain = tiny_model()  # same seed: same weights
    x, t, y = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(scaled(x, t, y), plain(x, t * 1000, y))
    with pytest.raises(ConfigError, match="time_scale must be positive"):
        tiny_config(time_scale=0.0)


def test_forward_is_the_rest_of_the_prefix_and_one_prefix_serves_every_gamma(routed, masked):
    x, t, y = tiny_inputs()
    for model, start in ((routed, 1), (masked, 0), (tiny_model(), 4)):
        with torch.no_grad():
            prefix = model.prefix(x, t, y)
            assert prefix.start == start and prefix.tokens.shape == (3, 16, 32)
            for gamma in (0.0,) if start == 4 else (0.0, 0.25, 0.75):
                whole = model(x, t, y, gamma=gamma, generator=sample_generators(0, range(3)))
                split = model.rest(prefix, gamma=gamma, generator=sample_generators(0, range(3)))
                assert torch.equal(whole, split)


def test_prefix_stops_at_the_routes_of_the_call_and_rest_refuses_an_earlier_route():
    model = tiny_model()
    x, t, y = tiny_inputs()
    with torch.no_grad():
        prefix = model.prefix(x, t, y, routes=((2, 3),))
        assert prefix.start == 2
        keep = torch.arange(8).expand(3, 8)
        assert torch.equal(model.rest(prefix, keep=keep, routes=((2, 3),)), model(x, t, y, keep=keep, routes=((2, 3),)))
        with pytest.raises(ConfigError, match="route starts at 1"):
            model.rest(prefix, keep=keep, routes=((1, 3),))


def test_prefixes_stack_and_split_along_the_batch(routed):
    x, t, y = tiny_inputs()
    with torch.no_grad():
        a, b = routed.prefix(x, t, y).chunk(3)[:2]
        both = Prefix.cat([a, b])
        assert torch.equal(both.tokens, routed.prefix(x, t, y).tokens[:2]) and both.start == 1
        assert Prefix.cat([a]) is a
