"""Reference files, image sources, the domain classifier, `evaluate` and the eval / ref-stats commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sparseguidance.cli import main
from sparseguidance.data import mnist5k
from sparseguidance.errors import CheckpointError, ConfigError, DataError
from sparseguidance.metrics import EvalConfig, Evaluator, evaluate, extract
from sparseguidance.metrics.evaluate import EXTRACTORS
from sparseguidance.metrics.features import FeatureExtractor
from sparseguidance.metrics.frechet import Gaussian
from sparseguidance.metrics.inception import TAG as INCEPTION_TAG
from sparseguidance.metrics.mnist_features import (
    SHIPPED,
    ClassifierConfig,
    MnistClassifier,
    heldout_accuracy,
    load_classifier,
    save_classifier,
    shifted,
)
from sparseguidance.metrics.reference import ReferenceStats, load_reference, save_reference
from sparseguidance.metrics.sources import ImageSet, read_images


class Pixels(FeatureExtractor):
    """A stand-in for Inception: 4×4 mean-pooled grey pixels (pool), their first 8 (spatial), 3 fixed logits."""

    outputs = ("pool", "spatial", "logits")

    def __init__(self, tag: str = INCEPTION_TAG) -> None:
        super().__init__()
        self.tag = tag
        self.register_buffer("projection", torch.randn(16, 3, generator=torch.Generator().manual_seed(0)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        grey = images.float().reshape(*images.shape[:3], -1).mean(-1)[:, None] / 255  # (N, 1, H, W)
        pool = torch.nn.functional.adaptive_avg_pool2d(grey, 4).flatten(1)
        return {"pool": pool, "spatial": pool[:, :8], "logits": pool @ self.projection}


@pytest.fixture
def pixels(monkeypatch):
    """`--features inception` answered by the cheap stand-in."""
    monkeypatch.setitem(EXTRACTORS, "inception", lambda weights: Pixels())


def digits(split: str = "heldout", count: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` MNIST-5k digits of a split, (N, 32, 32, 1) uint8, with labels."""
    images, labels = mnist5k(split)
    return images[:count, :, :, None], labels[:count]


# ------------------------------------------------------------------------------------- reference files
def test_reference_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(20, 4)).astype(np.float32)
    stats = ReferenceStats("mnist-abc", Gaussian(rng.normal(size=4), np.eye(4)), Gaussian(np.ones(2), 2 * np.eye(2)))
    stats = ReferenceStats(stats.extractor, stats.pool, stats.spatial, features)
    save_reference(tmp_path / "ref.npz", stats)
    again = load_reference(tmp_path / "ref.npz")
    assert again.extractor == "mnist-abc"
    for a, b in [(again.pool.mu, stats.pool.mu), (again.pool.sigma, stats.pool.sigma), (again.features, features)]:
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.spatial.sigma, stats.spatial.sigma)
    assert sorted(np.load(tmp_path / "ref.npz").files) == ["extractor", "features", "mu", "mu_s", "sigma", "sigma_s"]
    with pytest.raises(ConfigError, match="made by extractor 'mnist-abc'"):
        again.check_extractor(INCEPTION_TAG)


def test_adm_reference_batch_reads_as_the_2015_inception(tmp_path, pixels):
    images, _ = digits(count=40)
    feats = extract(Pixels(), images)
    np.savez(
        tmp_path / "VIRTUAL_ref.npz",
        mu=feats.pool.mean(0),
        sigma=np.cov(feats.pool, rowvar=False),
        mu_s=feats.spatial.mean(0),
        sigma_s=np.cov(feats.spatial, rowvar=False),
        arr_0=images,
    )
    stats = load_reference(tmp_path / "VIRTUAL_ref.npz")
    assert stats.extractor == INCEPTION_TAG and stats.features is None
    results = evaluate(images, tmp_path / "VIRTUAL_ref.npz")  # P/R features come from arr_0
    assert results["fid"] == pytest.approx(0, abs=1e-6) and results["sfid"] == pytest.approx(0, abs=1e-6)
    assert (results["precision"], results["recall"]) == (1.0, 1.0)
    assert set(results) == {"fid", "sfid", "is", "precision", "recall"}  # no accuracy without a domain classifier


def test_statistics_of_another_extractor_are_refused(tmp_path, pixels):
    images, _ = digits(count=40)
    save_reference(tmp_path / "ref.npz", Evaluator(images_npz(tmp_path, images)).reference)
    with pytest.raises(ConfigError, match="not comparable"):
        Evaluator(tmp_path / "ref.npz", EvalConfig(features="mnist"))


def images_npz(tmp_path, images: np.ndarray, labels: np.ndarray | None = None) -> str:
    """Save images (and labels) as an ADM sample batch; returns its path."""
    path = tmp_path / "samples.npz"
    np.savez(path, images, *([] if labels is None else [labels]))
    return str(path)


# ----------------------------------------------------------------------------------------------- sources
def test_sources_npz_folder_and_mnist(tmp_path):
    images, labels = digits(count=6)
    from_npz = read_images(images_npz(tmp_path, images, labels))
    np.testing.assert_array_equal(from_npz.images, images)
    np.testing.assert_array_equal(from_npz.labels, labels)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (tmp_path / "classes" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0]).save(tmp_path / "classes" / f"c{label}" / f"{i}.png")
        Image.fromarray(image[..., 0]).save(tmp_path / f"flat{i}.png")
    folder = read_images(tmp_path / "classes")
    assert len(folder) == 6 and folder.images[0:6].shape == (6, 32, 32)
    names = sorted({f"c{label}" for label in labels})
    np.testing.assert_array_equal(folder.labels, [names.index(p.parent.name) for p in folder.images.files])
    assert read_images(tmp_path).labels is None  # images directly in the folder: no classes
    assert len(read_images("mnist5k:heldout")) == 1000
    np.savez(tmp_path / "floats.npz", np.zeros((2, 8, 8, 3), dtype=np.float32))
    for bad, match in [
        (tmp_path / "floats.npz", "expected uint8"),
        ("mnist5k:test", "unknown MNIST-5k split"),
        (tmp_path / "absent.npz", "neither"),
    ]:
        with pytest.raises(DataError, match=match):
            read_images(bad)


# ------------------------------------------------------------------------------------ domain classifier
def test_classifier_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MnistClassifier(ClassifierConfig(widths=(4, 8), feature_dim=16)).eval()
    save_classifier(model, tmp_path / "c.safetensors", {"note": 1})
    loaded = load_classifier(tmp_path / "c.safetensors")
    assert loaded.tag.startswith("mnist-") and loaded.config == model.config
    images = torch.from_numpy(digits(count=4)[0])
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images), model(images))
    with pytest.raises(DataError, match="grey 32×32"):
        loaded(torch.zeros(1, 28, 28, dtype=torch.uint8))
    with pytest.raises(CheckpointError, match="missing"):
        load_classifier(tmp_path / "absent.safetensors")
    with pytest.raises(ConfigError, match="divisible"):
        ClassifierConfig(image_size=30)


def test_shifts_move_each_image_by_at_most_the_shift():
    x = torch.full((3, 1, 6, 6), -1.0)
    x[:, :, 2, 3] = 1.0
    moved = shifted(x, 1, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and (moved == 1).sum() == 3
    rows, cols = torch.nonzero(moved[:, 0] == 1)[:, 1], torch.nonzero(moved[:, 0] == 1)[:, 2]
    assert (rows - 2).abs().max() <= 1 and (cols - 3).abs().max() <= 1
    assert shifted(x, 0, torch.Generator()) is x


def test_shipped_classifier_reproduces_its_recorded_accuracy():
    model = load_classifier()
    recorded = json.loads(SHIPPED.with_suffix(".json").read_text())["heldout_accuracy"]
    assert heldout_accuracy(model) == pytest.approx(recorded, abs=0.002)
    assert recorded >= 0.95


# -------------------------------------------------------------------------------------------- evaluate
def test_heldout_against_itself_with_domain_features():
    images, labels = digits(count=1000)
    results = evaluate(images, "mnist5k:heldout", EvalConfig(features="mnist"), labels=labels)
    assert results["fid"] == pytest.approx(0, abs=1e-6)
    assert (results["precision"], results["recall"]) == (1.0, 1.0)
    assert results["accuracy"] == pytest.approx(heldout_accuracy(load_classifier()))
    assert 1 < results["is"] <= 10
    with pytest.raises(ConfigError, match="sFID needs spatial features"):
        evaluate(images, "mnist5k:heldout", EvalConfig(features="mnist", metrics=("sfid",)))
    with pytest.raises(ConfigError, match="needs the requested labels"):
        evaluate(images, "mnist5k:heldout", EvalConfig(features="mnist", metrics=("acc",)))


def test_evaluator_scores_many_sample_sets_against_one_reference(pixels):
    evaluator = Evaluator("mnist5k:heldout", EvalConfig(metrics=("fid", "pr")))
    near, _ = digits("train", 300)
    noise = np.random.default_rng(0).integers(0, 256, size=(300, 32, 32, 1), dtype=np.uint8)
    close, far = evaluator(near), evaluator(noise)
    assert set(close) == {"fid", "precision", "recall"}
    assert close["fid"] < far["fid"] and close["precision"] > far["precision"]
    with pytest.raises(ConfigError, match="unknown metric"):
        EvalConfig(metrics=("fid", "kid"))


def test_eval_and_ref_stats_commands(tmp_path, capsys, pixels):
    images, labels = digits("train", 200)
    samples = images_npz(tmp_path, images, labels)
    ref = tmp_path / "heldout.npz"
    assert main(["ref-stats", "mnist5k:heldout", "--features", "mnist", "--out", str(ref), "--no-progress"]) == 0
    assert main(["eval", samples, "--ref", str(ref), "--features", "mnist", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "Accuracy" in printed and "not computed: sfid" in printed
    written = json.loads((tmp_path / "samples.metrics.json").read_text())
    assert set(written["metrics"]) == {"fid", "is", "precision", "recall", "accuracy"}
    assert written["extractor"] == load_classifier().tag and "machine" in written
    assert written["conventions"]["pr"] == "float32"  # ADM's float16 is the default for Inception features only
    assert main(["eval", str(tmp_path / "absent.npz"), "--ref", str(ref), "--features", "mnist"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback
    assert main(["eval", samples, "--ref", str(ref), "--metrics", "sfid", "--no-progress"]) == 2  # Inception's tag
    assert "not comparable" in capsys.readouterr().err


def test_eval_states_each_metrics_convention_and_warns_of_too_few_samples(tmp_path, capsys, pixels):
    # the stand-in's 16 pool features, 8 spatial ones and 3 classes (IS parts of at least 15 samples)
    samples, out = images_npz(tmp_path, digits("train", 12)[0]), tmp_path / "metrics.json"
    command = ["eval", samples, "--ref", "mnist5k:heldout", "--no-progress", "--out", str(out)]
    assert main(command) == 0
    captured, written = capsys.readouterr(), json.loads(out.read_text())
    printed = captured.out
    assert written["conventions"] == {"fid": "adm", "sfid": "adm", "is": "chunks-5000", "pr": "adm-float16"}
    assert written["sample_count"] == 12 and set(written["warnings"]) == {"fid", "is"}  # sFID: 12 ≥ 8
    assert "chunks-5000: consecutive chunks of 5,000 samples" in printed and "here 1 part of 12" in printed
    assert "Recall" in printed and "adm-float16: k = 3, distances in float16" in printed
    assert "eval: warning: FID of 12 samples in 16 feature dimensions: the covariance is singular" in captured.err
    assert "eval: warning: IS over a part of 12 samples" in captured.err
    images_npz(tmp_path, digits("train", 40)[0])  # the same file, now 40 images
    assert main([*command, "--is-convention", "splits-10", "--pr-distances", "float32"]) == 0
    written = json.loads(out.read_text())
    assert (written["conventions"]["is"], written["conventions"]["pr"]) == ("splits-10", "float32")
    assert set(written["warnings"]) == {"is"} and "10 parts of 4" in written["warnings"]["is"]
    with pytest.raises(ConfigError, match="unknown IS convention 'splits-5'"):
        EvalConfig(is_convention="splits-5")
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--pr-distances", "float64"])
    assert exit_info.value.code == 2 and "invalid choice: 'float64'" in capsys.readouterr().err


def test_scoring_extracted_features_equals_scoring_the_images():
    evaluator = Evaluator("mnist5k:heldout", EvalConfig(features="mnist", metrics=("fid", "pr", "acc")))
    images, labels = digits("train", 200)
    features = evaluator.features(ImageSet(images), "samples")
    assert evaluator.score(features, labels) == evaluator(images, labels)
    with pytest.raises(ConfigError, match="needs the requested labels"):
        evaluator.score(features)
