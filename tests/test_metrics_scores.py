"""Metric formulas against answers worked out by hand: Fréchet distance, IS, precision / recall, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseguidance.errors import ConfigError, DataError
from sparseguidance.metrics import frechet
from sparseguidance.metrics.frechet import Gaussian, fit_gaussian, frechet_distance
from sparseguidance.metrics.scores import (
    IS_CONVENTIONS,
    accuracy,
    inception_score,
    is_min_part,
    is_warning,
    manifold_radii,
    part_sizes,
    precision_recall,
)


def spd(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random well-conditioned symmetric positive-definite matrix."""
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.5 * np.eye(d)


def sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root through the eigendecomposition."""
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(Gaussian(mu1, np.diag(var1)), Gaussian(mu2, np.diag(var2))) == pytest.approx(expected)
    # one dimension: N(0, 1) against N(1, 4) is 1 + (1 − 2)² = 2
    assert frechet_distance(Gaussian(np.zeros(1), np.eye(1)), Gaussian(np.ones(1), 4 * np.eye(1))) == pytest.approx(2)


def test_frechet_distance_of_full_covariances_matches_the_symmetric_form():
    rng = np.random.default_rng(1)
    s1, s2 = spd(6, rng), spd(6, rng)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    root = sqrt_psd(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrt_psd(root @ s2 @ root))
    a, b = Gaussian(mu1, s1), Gaussian(mu2, s2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-9)


def test_fit_gaussian_is_mean_and_unbiased_covariance():
    features = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    g = fit_gaussian(features)
    centred = features.astype(np.float64) - features.mean(0)
    np.testing.assert_allclose(g.mu, features.mean(0), rtol=1e-6)
    np.testing.assert_allclose(g.sigma, centred.T @ centred / 49, rtol=1e-6)
    with pytest.raises(DataError, match="at least 2"):
        fit_gaussian(features[:1])


def test_singular_product_gets_a_ridge_and_imaginary_roots_are_refused(monkeypatch):
    real_sqrtm, calls = frechet.linalg.sqrtm, []

    def failing_once(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(frechet.linalg, "sqrtm", failing_once)
    a, b = Gaussian(np.zeros(2), np.diag([1.0, 4.0])), Gaussian(np.zeros(2), np.eye(2))
    with pytest.warns(RuntimeWarning, match="singular"):
        d = frechet_distance(a, b, eps=0.01)
    np.testing.assert_allclose(calls[1], np.diag([1.01 * 1.01, 4.01 * 1.01]))  # (Σ₁ + εI)(Σ₂ + εI)
    assert d == pytest.approx(5 + 2 - 2 * (np.sqrt(1.01 * 1.01) + np.sqrt(4.01 * 1.01)))
    monkeypatch.undo()
    with pytest.raises(DataError, match="imaginary"):  # a "covariance" with a negative eigenvalue
        frechet_distance(Gaussian(np.zeros(2), np.diag([-1.0, 1.0])), Gaussian(np.zeros(2), np.eye(2)))
    with pytest.raises(DataError, match="different feature sizes"):
        frechet_distance(a, Gaussian(np.zeros(3), np.eye(3)))


def test_inception_score_on_designed_logits():
    k, confident = 4, 50.0
    one_hot = np.eye(k)[np.arange(400) % k] * confident  # every split: 10 sure predictions of each class
    for convention in IS_CONVENTIONS:
        assert inception_score(one_hot, convention) == pytest.approx(k, rel=1e-6)
        assert inception_score(np.zeros((100, k)), convention) == pytest.approx(1.0)  # uniform: nothing known
    ordered = np.eye(2)[np.repeat([0, 1], 50)] * confident  # first half class 0, second half class 1
    assert inception_score(ordered, "chunks-5000") == pytest.approx(2.0, rel=1e-6)  # one chunk holds both
    assert inception_score(ordered, "splits-10") == pytest.approx(1.0, rel=1e-6)  # each split holds one class
    logits = np.random.default_rng(3).normal(size=(30, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    by_hand = np.mean([np.exp(np.mean(np.sum(q * (np.log(q) - np.log(q.mean(0))), 1))) for q in np.split(p, 10)])
    assert inception_score(logits, "splits-10") == pytest.approx(by_hand, rel=1e-10)
    with pytest.raises(DataError, match="a sample in every part"):
        inception_score(np.zeros((5, 3)), "splits-10")
    with pytest.raises(ConfigError, match="unknown IS convention 'splits-5'; known: chunks-5000, splits-10"):
        inception_score(logits, "splits-5")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mean_part_score(preds: np.ndarray, bounds: list[tuple[int, int]]) -> float:
    """IS of each part [start, end) of the predictions, averaged: improved-gan's formula as ADM writes it."""
    scores = []
    for start, end in bounds:
        part = preds[start:end]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores))


def adm_inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    """ADM's evaluator: consecutive chunks of `split_size`, the last one whatever is left."""
    n = len(logits)
    return mean_part_score(softmax(logits), [(i, min(i + split_size, n)) for i in range(0, n, split_size)])


def improved_gan_inception_score(logits: np.ndarray, splits: int = 10) -> float:
    """improved-gan (Salimans et al. 2016): `splits` parts with boundaries i·N // splits."""
    n = len(logits)
    return mean_part_score(softmax(logits), [(i * n // splits, (i + 1) * n // splits) for i in range(splits)])


def confident_logits(n: int, classes: int, seed: int) -> np.ndarray:
    """Logits of a classifier fairly sure of one of `classes` classes drawn uniformly: IS well above 1."""
    rng = np.random.default_rng(seed)
    return 6 * np.eye(classes)[rng.integers(0, classes, n)] + rng.normal(size=(n, classes))


@pytest.mark.parametrize("n", [1000, 5000, 12000])
def test_inception_score_conventions_match_direct_implementations(n):
    logits = confident_logits(n, 200, seed=n)
    adm, paper = inception_score(logits, "chunks-5000"), inception_score(logits, "splits-10")
    assert adm == pytest.approx(adm_inception_score(logits), rel=1e-10)
    assert paper == pytest.approx(improved_gan_inception_score(logits), rel=1e-10)
    assert paper < 0.99 * adm  # parts of N/10 see too few samples per class: the 10-split IS is biased low
    assert part_sizes(n, "chunks-5000") == {1000: [1000], 5000: [5000], 12000: [5000, 5000, 2000]}[n]


def test_inception_score_conventions_agree_at_50000_samples():
    logits = confident_logits(50_000, 20, seed=0)
    assert inception_score(logits, "chunks-5000") == inception_score(logits, "splits-10")  # the same ten parts


def test_is_warning_names_parts_smaller_than_adms_per_class_share():
    assert is_min_part(1008) == 5000 and is_min_part(10) == 50
    assert is_warning(5000, 1008, "chunks-5000") is None and is_warning(50_000, 1008, "splits-10") is None
    assert "part of 1,000 samples (chunks-5000: 1 part of 1,000)" in is_warning(1000, 1008, "chunks-5000")
    assert "5,000, 5,000, 2,000" in is_warning(12_000, 1008, "chunks-5000")
    assert "10 parts of 500" in is_warning(5000, 1008, "splits-10")
    assert is_warning(300, 10, "chunks-5000") is None and "at least 50" in is_warning(300, 10, "splits-10")


def line(*xs: float) -> np.ndarray:
    """Points on the x axis of a plane."""
    return np.array([[x, 0.0] for x in xs])


def test_manifold_radius_is_the_kth_neighbour_excluding_itself():
    radii = manifold_radii(torch.tensor(line(0, 1, 2, 3, 4, 5)), 3, "float32", batch_size=2)
    np.testing.assert_allclose(radii.numpy(), np.array([3, 2, 2, 2, 2, 3]) ** 2)  # squared distances


@pytest.mark.parametrize("batch_size", [3, 1000])
def test_precision_recall_on_point_clouds(batch_size):
    # reference 0..9 on a line: k = 3 radii are 2 inside, 3 at the ends. Samples: 0, 1, 2, 3, 4.4 near the
    # reference, 100..104 far away. Precision: the 5 near samples are in reference balls -> 5 / 10.
    # Recall: the ball of sample 4.4 has radius 3.4 (to sample 1), reaching up to 7.8: references 0..7 -> 8 / 10.
    reference = line(*range(10))
    samples = line(0, 1, 2, 3, 4.4, 100, 101, 102, 103, 104)
    precision, recall = precision_recall(reference, samples, k=3, batch_size=batch_size)
    assert precision == pytest.approx(0.5) and recall == pytest.approx(0.8)
    assert precision_recall(reference, reference, batch_size=batch_size) == (1.0, 1.0)
    assert precision_recall(reference, reference + 50, batch_size=batch_size) == (0.0, 0.0)


def float16_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """ADM's float16 distance block in numpy's float16 arithmetic; sums are exact (float64) before their rounding."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is what ADM's fallback looks for
        u16, v16 = u.astype(np.float32).astype(np.float16), v.astype(np.float32).astype(np.float16)
        norm_u = np.square(u16).astype(np.float64).sum(1).astype(np.float16)
        norm_v = np.square(v16).astype(np.float64).sum(1).astype(np.float16)
        dot = (u16.astype(np.float64) @ v16.astype(np.float64).T).astype(np.float16)
        return np.maximum(norm_u[:, None] - np.float16(2) * dot + norm_v[None, :], np.float16(0))


def adm_distance_matrix(u: np.ndarray, v: np.ndarray, block: int) -> np.ndarray:
    """The whole (U, V) matrix as ADM assembles it: float16 blocks, float32 for a block with a non-finite entry."""
    out = np.empty((len(u), len(v)), dtype=np.float32)
    for i in range(0, len(u), block):
        for j in range(0, len(v), block):
            d = float16_distances(u[i : i + block], v[j : j + block])
            if not np.isfinite(d).all():
                a, b = u[i : i + block].astype(np.float32), v[j : j + block].astype(np.float32)
                d = np.maximum((a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :], 0)
            out[i : i + block, j : j + block] = d
    return out


def adm_radii(features: np.ndarray, block: int, k: int = 3) -> np.ndarray:
    """Squared distance to the k-th neighbour: entry k of each row of the whole matrix, partitioned (self included)."""
    return np.partition(adm_distance_matrix(features, features, block), k, axis=1)[:, k]


def adm_precision_recall(reference: np.ndarray, samples: np.ndarray, block: int, k: int = 3) -> tuple[float, float]:
    """ADM's ManifoldEstimator on whole matrices: radii by partition, balls compared with `≤`."""
    ref_radii, fake_radii = adm_radii(reference, block, k), adm_radii(samples, block, k)
    d = adm_distance_matrix(reference, samples, block)
    return float((d <= ref_radii[:, None]).any(0).mean()), float((d <= fake_radii[None, :]).any(1).mean())


def dyadic_features(n: int, seed: int) -> np.ndarray:
    """Multiples of 1/16 in (−16, 16), 32 dimensions: exact in float16 and every sum exact in float32 (and
    float64), so that only the float16 roundings decide, and centred, so that each of them matters."""
    return np.random.default_rng(seed).integers(-255, 256, size=(n, 32)).astype(np.float32) / 16


@pytest.mark.parametrize("block", [40, 10_000])
def test_adm_float16_precision_recall_equals_a_float16_reference(block):
    reference, samples = dyadic_features(150, seed=0), dyadic_features(130, seed=1)
    radii = manifold_radii(torch.from_numpy(reference), 3, "adm-float16", block).numpy()
    np.testing.assert_array_equal(radii, adm_radii(reference, block))
    adm = precision_recall(reference, samples, distances="adm-float16", batch_size=block)
    assert adm == adm_precision_recall(reference, samples, block)
    assert adm != precision_recall(reference, samples, distances="float32", batch_size=block)  # a test that tells


def test_adm_float16_falls_back_to_float32_per_block_as_adm():
    reference, samples = dyadic_features(150, seed=0), dyadic_features(130, seed=1)
    reference[7] = samples[100] = 60.0  # ‖x‖² = 115,200 > 65,504: float16 overflows in these rows' blocks
    features = torch.from_numpy(reference)
    blocked = manifold_radii(features, 3, "adm-float16", 40).numpy()  # blocks holding row or column 7: float32
    np.testing.assert_array_equal(blocked, adm_radii(reference, 40))
    assert not np.array_equal(blocked, manifold_radii(features, 3, "float32", 40).numpy())
    whole = manifold_radii(features, 3, "adm-float16").numpy()  # one block of 10,000: all of it in float32
    np.testing.assert_array_equal(whole, manifold_radii(features, 3, "float32").numpy())
    adm = precision_recall(reference, samples, distances="adm-float16", batch_size=40)
    assert adm == adm_precision_recall(reference, samples, 40)
    with pytest.raises(ConfigError, match="unknown precision/recall distances 'float64'"):
        precision_recall(reference, samples, distances="float64")


def test_accuracy_and_its_checks():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        accuracy(logits, np.array([0, 1, 2]))
    with pytest.raises(DataError, match="labels"):
        accuracy(logits, np.array([0, 1]))
