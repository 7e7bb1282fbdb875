"""Captioned images for text-to-image: MNIST-5k with captions from measured attributes, and caption folders.

Both datasets have `LabeledDataset`'s shape: `load(indices)` gives images (B, C, H, W) in [−1, 1] and caption ids
(B,) that index the dataset's `captions`, the list of its distinct captions, so a trainer can encode each caption
once (`TextEncoder.encode(dataset.captions)`) and pick rows of that table by id.

Captioned MNIST describes each digit by its label and three attributes measured on its pixels: stroke thickness,
slant and width, each cut into thirds by its class's terciles on the training split (a "wide 1" is wide for a 1).
Width stands in for size: MNIST scaled every digit to fit a 20-pixel box, so nine in ten are 20 pixels tall and only
the width varies; it is measured from moments (not the bounding box, whose whole-pixel values tie at the cuts and
leave the thirds uneven). The attribute values stay on the dataset (`attributes`) as ground truth for evaluating
samples: measure a generated digit with `digit_attributes` and bucket it with `attribute_buckets`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from sparseguidance.data import IMAGE_SUFFIXES, MNIST_SPLITS, ImageFiles, LabeledDataset, mnist5k
from sparseguidance.errors import ConfigError, DataError
from sparseguidance.images import from_uint8

INK = 128  # a pixel is ink from half intensity up

# ------------------------------------------------------------------------------------------ attributes
ATTRIBUTES = ("thickness", "slant", "width")


@dataclass(frozen=True)
class DigitAttributes:
    """Measured attributes of N digits; each field is (N,) float, lengths in pixels."""

    thickness: np.ndarray  # stroke width, from the ink's depth along its centre line
    slant: np.ndarray  # how far the ink leans right per pixel of height (negative: leans left)
    width: np.ndarray  # √12 · the horizontal standard deviation of the ink once the slant is undone
    box_width: np.ndarray  # ink bounding box
    box_height: np.ndarray
    area: np.ndarray  # ink pixel count

    def table(self) -> np.ndarray:
        """The captioned attributes as columns (N, 3), in ATTRIBUTES order."""
        return np.stack([getattr(self, name) for name in ATTRIBUTES], axis=1)


def digit_attributes(images: np.ndarray) -> DigitAttributes:
    """Attributes of uint8 greyscale digits (N, H, W), white ink on black."""
    ink = np.asarray(images) >= INK
    slant, width = shear_and_width(np.asarray(images, dtype=np.float64))
    return DigitAttributes(
        thickness=np.array([stroke_thickness(i) for i in np.asarray(images)]),
        slant=slant,
        width=width,
        box_width=extent(ink.any(axis=1)),
        box_height=extent(ink.any(axis=2)),
        area=ink.sum(axis=(1, 2)).astype(np.float64),
    )


def stroke_thickness(image: np.ndarray, zoom: int = 4) -> float:
    """Stroke width in pixels of one greyscale digit (H, W): twice the mean depth of the ink's centre line, minus one.

    Measured on the image enlarged `zoom` times (bilinear) so that a slanted stroke's staircase edge does not read
    thinner than an upright one: depth is the distance to the nearest background pixel, the centre line is the ink
    whose depth is the largest in its 3×3 neighbourhood. A bar w pixels wide reads about w at any angle.
    """
    big = ndimage.zoom(image.astype(np.float64), zoom, order=1, grid_mode=True, mode="grid-constant")
    ink = big >= INK
    depth = ndimage.distance_transform_edt(ink)
    ridge = ink & (depth >= ndimage.maximum_filter(depth, size=3))
    return float(2 * depth[ridge].mean() - 1) / zoom if ridge.any() else 0.0


def shear_and_width(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slant and width (N,) each, from the intensity-weighted second moments of the ink (y pointing down).

    Slant s = −cov(x, y) / var(y) fits x = x0 − s·y: the pixels the top leans right of the bottom per pixel of
    height (a "/" stroke is positive, "\\" negative, upright 0). Width = √(12 · (var(x) − cov²/var(y))), the
    horizontal spread left once that lean is undone, scaled so that a w-pixel-wide block reads about w.
    """
    total = np.maximum(images.sum(axis=(1, 2)), 1e-12)[:, None, None]
    y, x = np.indices(images.shape[1:], dtype=np.float64)
    weight = images / total
    dy = y - (weight * y).sum(axis=(1, 2))[:, None, None]
    dx = x - (weight * x).sum(axis=(1, 2))[:, None, None]
    var_x, var_y, cov = ((weight * a * b).sum(axis=(1, 2)) for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    upright = var_y > 1e-12
    shear = np.where(upright, -cov / np.where(upright, var_y, 1.0), 0.0)
    residual = var_x - np.where(upright, cov * cov / np.where(upright, var_y, 1.0), 0.0)
    return shear, np.sqrt(12 * np.maximum(residual, 0.0))


def extent(occupied: np.ndarray) -> np.ndarray:
    """Span from the first to the last True of each row (N, K), in pixels; 0 for an empty row."""
    index = np.arange(occupied.shape[1])
    first = np.where(occupied, index, occupied.shape[1]).min(axis=1)
    last = np.where(occupied, index, -1).max(axis=1)
    return np.maximum(last - first + 1, 0).astype(np.float64)


@lru_cache(maxsize=len(MNIST_SPLITS))
def mnist_attributes(split: str) -> DigitAttributes:
    """The attributes of an MNIST-5k split (measured once per process)."""
    return digit_attributes(mnist5k(split)[0])


@lru_cache(maxsize=1)
def tercile_cuts() -> np.ndarray:
    """(10, 3, 2): per digit class and attribute, the 1/3 and 2/3 quantiles on MNIST-5k's training split."""
    table, labels = mnist_attributes("train").table(), mnist5k("train")[1]
    return np.stack([np.quantile(table[labels == c], [1 / 3, 2 / 3], axis=0).T for c in range(10)])


def attribute_buckets(attributes: DigitAttributes, labels: np.ndarray) -> np.ndarray:
    """(N, 3) int: per attribute 0 (low third of its class), 1 (middle) or 2 (high third)."""
    cuts = tercile_cuts()[np.asarray(labels)]  # (N, 3, 2)
    table = attributes.table()[:, :, None]
    return (table > cuts).sum(axis=2)


# -------------------------------------------------------------------------------------------- captions
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Per attribute, the words for its low, middle and high third; None: not worth saying (the middle of a scale).
ADJECTIVES = (("thin", None, "thick"), ("left-slanted", "upright", "right-slanted"), ("narrow", None, "wide"))
PHRASES = (
    ("in thin strokes", None, "in thick strokes"),
    ("slanted to the left", "standing upright", "slanted to the right"),
    ("written narrow", None, "written wide"),
)
TEMPLATES = 5  # see render


def render(label: int, mentioned: Sequence[int | None], template: int, spelled: bool) -> str:
    """One caption: the digit (a numeral or spelled), with the attribute buckets in `mentioned` (None: left out)."""
    digit = DIGIT_WORDS[label] if spelled else str(label)
    adjectives = [ADJECTIVES[a][b] for a, b in enumerate(mentioned) if b is not None]
    phrases = [PHRASES[a][b] for a, b in enumerate(mentioned) if b is not None]
    tail = f", {and_join(phrases)}" if phrases else ""
    lead = ", ".join(adjectives) + " " if adjectives else ""
    if template == 0:
        return with_article(f"{lead}{digit}")  # a thick, right-slanted seven
    if template == 1:
        return with_article(f"{lead}handwritten {digit}")  # an upright handwritten 4
    if template == 2:
        return f"the digit {label}{tail}"  # the digit 3, in thin strokes and written wide
    if template == 3:
        return f"the number {DIGIT_WORDS[label]}{tail}"  # the number eight, slanted to the left
    return f"a handwritten {digit}{tail}"  # a handwritten 2, standing upright


def and_join(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def with_article(noun: str) -> str:
    """The noun phrase after 'a' or 'an', as it is spoken ('an 8', 'an upright', 'a one')."""
    first = noun.split(" ")[0].rstrip(",")
    vowel = (first[0] in "aeiou" and first != "one") or first == "8"
    return f"{'an' if vowel else 'a'} {noun}"


def digit_caption(label: int, buckets: Sequence[int], rng: np.random.Generator) -> str:
    """A caption drawn for one digit: numeral or word, one of the templates, each sayable attribute with p = 1/2."""
    spelled, template, says = rng.random() < 0.5, int(rng.integers(TEMPLATES)), rng.random(len(buckets)) < 0.5
    mentioned = [
        b if say and ADJECTIVES[a][b] is not None else None
        for a, (b, say) in enumerate(zip(buckets, says, strict=True))
    ]
    return render(label, mentioned, template, spelled)


@lru_cache(maxsize=1)
def mnist_captions() -> tuple[str, ...]:
    """Every caption `digit_caption` can write, sorted: the table of caption ids."""
    choices = [[None, *(b for b in range(3) if words[b] is not None)] for words in ADJECTIVES]
    captions = {
        render(label, mentioned, template, spelled)
        for label, template, spelled in product(range(10), range(TEMPLATES), (False, True))
        for mentioned in product(*choices)
    }
    return tuple(sorted(captions))


class CaptionedMNIST(LabeledDataset):
    """MNIST-5k digits (1×32×32) with captions; labels are ids into `captions` (all of `mnist_captions()`).

    The rule: sample j is digit j mod N of the split with caption draw j // N, so the dataset holds `draws` copies
    of the split and one epoch shows every digit `draws` times, each time with its own caption. Draw d of digit i
    comes from a generator seeded with (seed, i, d): a caption is a function of the sample index alone, the same in
    every DataLoader worker, every process and every resumed run.
    """

    def __init__(self, split: str = "train", draws: int = 8, seed: int = 0) -> None:
        if draws < 1 or seed < 0:
            raise ConfigError(f"captioned MNIST needs draws >= 1 and seed >= 0, got {draws}, {seed}")
        images, labels = mnist5k(split)
        self.images, self.labels, self.draws, self.seed = from_uint8(images), labels, draws, seed
        self.attributes = mnist_attributes(split)
        self.buckets = attribute_buckets(self.attributes, labels)  # (N, 3) in ATTRIBUTES order
        self.captions = list(mnist_captions())
        self.ids = {caption: i for i, caption in enumerate(self.captions)}
        self.num_classes = len(self.captions)
        self.sample_shape = tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels) * self.draws

    def caption(self, j: int) -> str:
        """The caption of sample j."""
        digit, draw = j % len(self.labels), j // len(self.labels)
        rng = np.random.default_rng((self.seed, digit, draw))
        return digit_caption(int(self.labels[digit]), self.buckets[digit].tolist(), rng)

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        digits = torch.as_tensor([j % len(self.labels) for j in indices], dtype=torch.long)
        ids = torch.tensor([self.ids[self.caption(j)] for j in indices], dtype=torch.long)
        return self.images[digits], ids


# ------------------------------------------------------------------------------------- caption folders
class CaptionFolder(ImageFiles):
    """`root/NAME.png|jpg…` each with `root/NAME.txt`: images center-cropped and resized, in [−1, 1], with ids
    into `captions` (the folder's distinct captions, sorted). Only files directly in `root` are read.

    A caption's whitespace (line breaks included) is collapsed to single spaces. An image without its caption, an
    empty caption and two images sharing one caption file are errors; a caption without an image is only a
    warning, since folders often carry other text files (a README, a licence) that are not captions.
    """

    def __init__(self, root: str | Path, image_size: int, channels: int) -> None:
        if channels not in (1, 3) or image_size < 1:
            raise ConfigError(
                f"a caption folder needs channels 1 or 3 and image_size >= 1, got {channels}, {image_size}"
            )
        self.root, self.image_size, self.mode = Path(root), image_size, "L" if channels == 1 else "RGB"
        if not self.root.is_dir():
            raise DataError(f"caption folder {self.root} does not exist")
        visible = sorted(p for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))
        self.files = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.files:
            raise DataError(f"{self.root} holds no images ({', '.join(IMAGE_SUFFIXES)}) directly inside it")
        by_stem: dict[str, Path] = {}
        for p in self.files:
            if p.stem in by_stem:
                raise DataError(f"{by_stem[p.stem].name} and {p.name} in {self.root} would share {p.stem}.txt")
            by_stem[p.stem] = p
        texts = [read_caption(p.with_suffix(".txt"), p) for p in self.files]
        orphans = [p.name for p in visible if p.suffix == ".txt" and p.stem not in by_stem]
        if orphans:
            warnings.warn(
                f"{len(orphans)} caption(s) in {self.root} have no image and are ignored: {orphans[0]}…", stacklevel=2
            )
        self.captions = sorted(set(texts))
        ids = {caption: i for i, caption in enumerate(self.captions)}
        self.labels = torch.tensor([ids[t] for t in texts], dtype=torch.long)
        self.num_classes = len(self.captions)
        self.sample_shape = (channels, image_size, image_size)


def read_caption(path: Path, image: Path) -> str:
    """The caption of `image` from `path`, whitespace collapsed; DataError if missing, unreadable or empty."""
    if not path.is_file():
        raise DataError(f"image {image} has no caption: expected {path.name} beside it")
    try:
        text = " ".join(path.read_text(encoding="utf-8").split())
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read caption {path} ({e})") from None
    if not text:
        raise DataError(f"caption {path} is empty")
    return text
