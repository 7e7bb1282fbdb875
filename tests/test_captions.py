"""Captioned data: attributes on drawn shapes with known answers, MNIST captions, caption folders."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sparseguidance.captions import (
    ADJECTIVES,
    DIGIT_WORDS,
    CaptionedMNIST,
    CaptionFolder,
    DigitAttributes,
    attribute_buckets,
    digit_attributes,
    mnist_captions,
    render,
    stroke_thickness,
    tercile_cuts,
)
from sparseguidance.errors import ConfigError, DataError


def canvas() -> np.ndarray:
    return np.zeros((32, 32), dtype=np.uint8)


def bar(width: int, shear: float = 0.0) -> np.ndarray:
    """A 20-pixel-tall bar `width` pixels wide whose top leans `shear` pixels right per pixel of height."""
    image = canvas()
    for y in range(6, 26):
        left = round(16 - width / 2 + shear * (15.5 - y))
        image[y, left : left + width] = 255
    return image


def stroke(width: float, degrees: float) -> np.ndarray:
    """An anti-aliased straight stroke 18 pixels long through the centre, `degrees` from vertical."""
    fine = (np.indices((256, 256)) + 0.5) / 8 - 16  # 8×8 samples per pixel, centred
    t = np.deg2rad(degrees)
    along, across = fine[1] * np.sin(t) - fine[0] * np.cos(t), fine[1] * np.cos(t) + fine[0] * np.sin(t)
    inside = (np.abs(along) <= 9) & (np.abs(across) <= width / 2)
    return (inside.reshape(32, 8, 32, 8).mean(axis=(1, 3)) * 255).round().astype(np.uint8)


def block(height: int, width: int) -> np.ndarray:
    image = canvas()
    top, left = 16 - height // 2, 16 - width // 2
    image[top : top + height, left : left + width] = 255
    return image


# ---------------------------------------------------------------------------------------- attributes
def test_thickness_reads_the_stroke_width():
    a = digit_attributes(np.stack([bar(5), bar(3), bar(1), canvas()]))
    np.testing.assert_allclose(a.thickness, [5, 3, 1, 0], atol=0.3)
    assert stroke_thickness(bar(4)) == pytest.approx(4, abs=0.3)
    for degrees in (0, 20, 40):  # at any angle: the staircase edge of a slanted stroke does not thin it
        assert stroke_thickness(stroke(4, degrees)) == pytest.approx(4, abs=0.4)
        assert stroke_thickness(stroke(2, degrees)) == pytest.approx(2, abs=0.4)


def test_slant_has_the_right_sign_and_size():
    a = digit_attributes(np.stack([bar(3, 0.5), bar(3, -0.5), bar(3)]))
    assert a.slant[0] == pytest.approx(0.5, abs=0.05)  # "/" leans right
    assert a.slant[1] == pytest.approx(-0.5, abs=0.05)  # "\" leans left
    assert abs(a.slant[2]) < 1e-9


def test_width_and_box_of_a_large_and_a_small_blob():
    a = digit_attributes(np.stack([block(20, 12), block(6, 4)]))
    np.testing.assert_allclose(a.width, np.sqrt([12**2 - 1, 4**2 - 1]))
    assert a.box_width.tolist() == [12, 4] and a.box_height.tolist() == [20, 6] and a.area.tolist() == [240, 24]
    # undoing the slant: a leaning bar is about as wide as an upright one, though its box is far wider
    lean = digit_attributes(np.stack([bar(3, 0.5), bar(3)]))
    assert lean.width[0] == pytest.approx(lean.width[1], rel=0.15) and lean.box_width[0] > 3 * lean.box_width[1]


def test_buckets_follow_the_class_terciles():
    cuts = tercile_cuts()  # (10 classes, 3 attributes, 2)
    assert cuts.shape == (10, 3, 2) and (cuts[:, :, 0] < cuts[:, :, 1]).all()
    assert cuts[1, 2, 1] < cuts[0, 2, 0]  # a wide 1 is narrower than a narrow 0
    low, high = cuts[7, :, 0] - 0.01, cuts[7, :, 1] + 0.01
    values = np.stack([low, (low + high) / 2, high])  # (3 digits, 3 attributes)
    zeros = np.zeros(3)
    attrs = DigitAttributes(*values.T, box_width=zeros, box_height=zeros, area=zeros)
    assert attribute_buckets(attrs, np.array([7, 7, 7])).tolist() == [[0] * 3, [1] * 3, [2] * 3]


# ------------------------------------------------------------------------------------------ captions
@pytest.fixture(scope="module")
def digits() -> CaptionedMNIST:
    return CaptionedMNIST("train", draws=4, seed=0)


def numbers_in(caption: str) -> set[int]:
    """The digits a caption names, as numerals or words."""
    words = re.findall(r"[a-z]+|\d", caption)
    return {int(w) for w in words if w.isdigit()} | {DIGIT_WORDS.index(w) for w in words if w in DIGIT_WORDS}


def test_captions_name_the_digit_and_only_true_attributes(digits: CaptionedMNIST):
    N = len(digits.labels)
    assert len(digits) == 4 * N and digits.sample_shape == (1, 32, 32)
    for j in range(0, len(digits), 37):
        caption, d = digits.caption(j), j % N
        assert numbers_in(caption) == {int(digits.labels[d])}, caption
        for a, words in enumerate(ADJECTIVES):
            for b, word in enumerate(words):
                if word is not None and re.search(rf"\b{word.split('-')[0]}\b", caption):
                    assert digits.buckets[d, a] == b, (caption, digits.buckets[d])


def test_phrasings_vary_and_every_caption_has_an_id(digits: CaptionedMNIST):
    N = len(digits.labels)
    mine = [digits.caption(5 + N * draw) for draw in range(4)]  # one digit, its four draws
    assert len(set(mine)) >= 3
    drawn = {digits.caption(j) for j in range(0, len(digits), 7)}
    assert len(drawn) > 500
    assert {c.split(" ")[1] for c in drawn} >= {"digit", "number", "handwritten", "thick,", "thin"}
    captions = mnist_captions()
    assert list(captions) == sorted(set(captions)) and digits.captions == list(captions)
    images, ids = digits.load([3, N + 3, 17])
    assert images.shape == (3, 1, 32, 32) and ids.dtype == torch.long and images.min() >= -1 and images.max() <= 1
    assert torch.equal(images[0], images[1])  # draw 1 of digit 3 is digit 3
    assert [captions[i] for i in ids] == [digits.caption(j) for j in (3, N + 3, 17)]


def test_captions_are_a_function_of_index_and_seed(digits: CaptionedMNIST):
    again, other = CaptionedMNIST("train", draws=4, seed=0), CaptionedMNIST("train", draws=4, seed=1)
    js = [0, 11, 4_000, 15_999]
    assert [again.caption(j) for j in js] == [digits.caption(j) for j in js]
    assert [other.caption(j) for j in js] != [digits.caption(j) for j in js]
    assert torch.equal(digits.load(js[::-1])[1], digits.load(js)[1].flip(0))  # not the batch it came in
    held = CaptionedMNIST("heldout", draws=1)
    assert len(held) == 1_000 and numbers_in(held.caption(999)) == {int(held.labels[999])}
    with pytest.raises(ConfigError, match="draws"):
        CaptionedMNIST(draws=0)


def test_rendering_reads_as_english():
    assert render(8, [None, 1, None], 0, spelled=False) == "an upright 8"
    assert render(8, [None, None, None], 0, spelled=True) == "an eight"
    assert render(1, [2, None, 0], 1, spelled=True) == "a thick, narrow handwritten one"
    assert (
        render(3, [0, 2, 2], 2, spelled=True) == "the digit 3, in thin strokes, slanted to the right and written wide"
    )
    assert render(7, [None, 0, None], 3, spelled=False) == "the number seven, slanted to the left"
    assert render(4, [None, None, None], 4, spelled=False) == "a handwritten 4"


def test_real_digits_measure_plausibly(digits: CaptionedMNIST):
    a, labels = digits.attributes, digits.labels
    assert 1 <= np.median(a.thickness) <= 4 and np.abs(np.median(a.slant)) < 0.5
    assert a.width[labels == 1].mean() < a.width[labels == 0].mean() / 2
    for k in range(3):  # the thirds are thirds on the split they were cut on
        assert np.bincount(digits.buckets[:, k], minlength=3).min() > 0.3 * len(labels)


# ----------------------------------------------------------------------------------- caption folders
def make_folder(root: Path, captions: dict[str, str], mode: str = "RGB") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, caption) in enumerate(captions.items()):
        Image.new(mode, (12, 10), color=(40 * i, 200, 10) if mode == "RGB" else 40 * i).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(caption)
    return root


def test_caption_folder_happy_path(tmp_path: Path):
    root = make_folder(tmp_path / "f", {"cat": "a black cat\n", "dog": "a  dog,\non grass", "kit": "a black cat"})
    data = CaptionFolder(root, image_size=8, channels=3)
    assert len(data) == 3 and data.captions == ["a black cat", "a dog, on grass"] and data.num_classes == 2
    images, ids = data.load([0, 1, 2])
    assert images.shape == (3, 3, 8, 8) and images.min() >= -1 and images.max() <= 1
    assert ids.tolist() == [0, 1, 0] and data.sample_shape == (3, 8, 8)
    grey = CaptionFolder(make_folder(tmp_path / "g", {"a": "one"}, mode="L"), image_size=4, channels=1)
    assert grey.load([0])[0].shape == (1, 1, 4, 4)


def test_caption_folder_errors(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        CaptionFolder(tmp_path / "nowhere", 8, 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="holds no images"):
        CaptionFolder(tmp_path / "empty", 8, 3)
    root = make_folder(tmp_path / "a", {"cat": "a cat"})
    Image.new("RGB", (4, 4)).save(root / "dog.jpg")
    with pytest.raises(DataError, match=r"dog.jpg has no caption: expected dog.txt"):
        CaptionFolder(root, 8, 3)
    (root / "dog.txt").write_text("  \n ")
    with pytest.raises(DataError, match="dog.txt is empty"):
        CaptionFolder(root, 8, 3)
    (root / "dog.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match="cannot read caption"):
        CaptionFolder(root, 8, 3)
    (root / "dog.txt").write_text("a dog")
    Image.new("RGB", (4, 4)).save(root / "dog.png")
    with pytest.raises(DataError, match="dog.jpg and dog.png .* would share dog.txt"):
        CaptionFolder(root, 8, 3)
    with pytest.raises(ConfigError, match="channels"):
        CaptionFolder(root, 8, 2)


def test_caption_without_image_warns_and_unreadable_image_fails_on_load(tmp_path: Path):
    root = make_folder(tmp_path / "f", {"cat": "a cat", "bad": "broken"})
    (root / "README.txt").write_text("where these came from")
    (root / "bad.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match="1 caption.*no image.*README.txt"):
        data = CaptionFolder(root, 8, 3)
    assert len(data) == 2
    with pytest.raises(DataError, match="cannot read image .*bad.png"):
        data.load([0])
