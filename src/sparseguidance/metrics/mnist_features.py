"""The MNIST-5k domain extractor: a small CNN classifier trained by `sparseguidance train-features`.

Its penultimate activations (128 numbers after a ReLU) play the role of Inception's pool features for
FID and precision / recall; its 10 logits serve IS and the accuracy on the requested labels. The
shipped weights (`assets/mnist-features.safetensors`) sit beside a JSON file with the config, the
held-out accuracy and the command that made them; the tag names the weights by their hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from sparseguidance.checkpoints import check_finite, config_path
from sparseguidance.config import MAX_SEED, check_types, from_dict, to_dict
from sparseguidance.data import mnist5k
from sparseguidance.errors import CheckpointError, ConfigError, DataError
from sparseguidance.files import atomic_write
from sparseguidance.images import from_uint8
from sparseguidance.metrics.features import FeatureExtractor, as_nhwc

SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "mnist-features.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the classifier: three stages of two 3×3 convolutions and a 2×2 max pool, then two linears."""

    widths: tuple[int, ...] = (16, 32, 64)  # channels of each stage
    feature_dim: int = 128  # the penultimate layer: the features FID and P/R use
    num_classes: int = 10
    image_size: int = 32  # MNIST-5k digits are zero-padded to 32×32

    def __post_init__(self) -> None:
        check_types(self, "classifier: ")
        if not self.widths or min(self.widths) < 1 or self.feature_dim < 1 or self.num_classes < 2:
            raise ConfigError(f"classifier: widths, feature_dim ≥ 1 and num_classes ≥ 2 needed, got {self}")
        if self.image_size % 2 ** len(self.widths):
            raise ConfigError(f"classifier: image_size {self.image_size} must be divisible by 2^{len(self.widths)}")


@dataclass(frozen=True)
class TrainConfig:
    """How `train-features` trains the classifier on the MNIST-5k `train` split."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 2e-3  # AdamW, cosine-decayed to 0 over the run
    weight_decay: float = 1e-4
    shift: int = 2  # augmentation: random translations of up to this many pixels
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self, "train-features: ")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0 or self.shift < 0:
            raise ConfigError(f"train-features: epochs, batch_size ≥ 1, lr > 0, weight_decay, shift ≥ 0; got {self}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"train-features: seed must be from 0 to 2**64 − 1, got {self.seed}")


class MnistClassifier(FeatureExtractor):
    """uint8 grey 32×32 digits -> pool (N, 128) and logits (N, 10)."""

    outputs = ("pool", "logits")

    def __init__(self, config: ClassifierConfig = ClassifierConfig(), tag: str = "mnist-untrained") -> None:
        super().__init__()
        self.config, self.tag, self.label_classes = config, tag, config.num_classes
        layers: list[nn.Module] = []
        cin = 1
        for width in config.widths:
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1)]
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            cin = width
        side = config.image_size // 2 ** len(config.widths)
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(cin * side * side, config.feature_dim), nn.ReLU())
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, K), features (N, F)) of float images in [−1, 1], (N, 1, 32, 32)."""
        features = self.body(x)
        return self.head(features), features

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """pool and logits of uint8 digits (N, 32, 32[, 1])."""
        images = as_nhwc(images)
        size = self.config.image_size
        if images.shape[1:] != (size, size, 1):
            raise DataError(f"the MNIST classifier takes grey {size}×{size} digits, got {tuple(images.shape[1:])}")
        logits, features = self.logits_and_features(images.permute(0, 3, 1, 2).float() / 127.5 - 1)
        return {"pool": features, "logits": logits}


# -------------------------------------------------------------------------------------------- training
def shifted(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by its own random offset in [−shift, shift]², background (−1) filling the gap."""
    if shift == 0:
        return x
    padded = F.pad(x, (shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * shift + 1, (len(x), 2), generator=generator).tolist()
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


@torch.inference_mode()
def heldout_accuracy(model: MnistClassifier, batch_size: int = 500) -> float:
    """Accuracy on the MNIST-5k held-out split (1,000 digits)."""
    images, labels = mnist5k("heldout")
    x, y = from_uint8(images), torch.from_numpy(labels)
    correct = sum(
        int((model.logits_and_features(x[i : i + batch_size])[0].argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(y), batch_size)
    )
    return correct / len(y)


def train_classifier(
    train: TrainConfig = TrainConfig(), config: ClassifierConfig = ClassifierConfig(), progress: bool = True
) -> MnistClassifier:
    """Train the classifier on the MNIST-5k `train` split (AdamW, cross-entropy, random shifts), seeded."""
    torch.manual_seed(train.seed)
    generator = torch.Generator().manual_seed(train.seed)
    images, labels = mnist5k("train")
    x, y = from_uint8(images), torch.from_numpy(labels)
    model = MnistClassifier(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    steps_per_epoch = -(-len(y) // train.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs * steps_per_epoch)
    model.train()
    for epoch in range(train.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        starts = range(0, len(y), train.batch_size)
        for start in tqdm(starts, desc=f"epoch {epoch + 1}", disable=not progress, leave=False):
            batch = order[start : start + train.batch_size]
            loss = F.cross_entropy(model.logits_and_features(shifted(x[batch], train.shift, generator))[0], y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        if progress:
            print(f"epoch {epoch + 1}/{train.epochs}: training loss {total / len(y):.4f}")
    return model.eval()


# ------------------------------------------------------------------------------------------------ files
def save_classifier(model: MnistClassifier, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write the weights (.safetensors) and, beside them, a JSON with the config and `metadata`, atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"classifier weights are saved as .safetensors, got {path}")
    document = {"classifier": to_dict(model.config), **metadata}
    atomic_write(config_path(path), lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"))
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_classifier(path: str | Path | None = None) -> MnistClassifier:
    """The classifier saved at `path` (default: the shipped weights), tagged `mnist-<hash of the weights>`."""
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file() or not config_path(path).is_file():
        raise CheckpointError(f"classifier weights {path} or their JSON config {config_path(path).name} are missing")
    try:
        document = json.loads(config_path(path).read_text())
        config = from_dict(ClassifierConfig, document["classifier"], where=f"{config_path(path).name}: classifier")
        state = load_file(path)
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError, SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read the classifier at {path} ({e})") from None
    model = MnistClassifier(config, tag=f"mnist-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    check_finite(state, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit its config ({e})") from None
    return model.eval()
