"""Metric formulas against answers worked out by hand: Fréchet distance, IS, precision / recall, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparseguidance.errors import DataError
from sparseguidance.metrics import frechet
from sparseguidance.metrics.frechet import Gaussian, fit_gaussian, frechet_distance
from sparseguidance.metrics.scores import accuracy, inception_score, manifold_radii, precision_recall


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
    one_hot = np.eye(k)[np.arange(400) % k] * confident  # every split: 100 sure predictions of each class
    assert inception_score(one_hot) == pytest.approx(k, rel=1e-6)
    assert inception_score(np.zeros((100, k))) == pytest.approx(1.0)  # uniform predictions carry nothing
    ordered = np.eye(2)[np.repeat([0, 1], 50)] * confident  # first half class 0, second half class 1
    assert inception_score(ordered, splits=1) == pytest.approx(2.0, rel=1e-6)
    assert inception_score(ordered, splits=2) == pytest.approx(1.0, rel=1e-6)  # splits are consecutive
    logits = np.random.default_rng(3).normal(size=(30, 5)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    by_hand = np.mean(
        [np.exp(np.mean(np.sum(q * (np.log(q) - np.log(q.mean(0))), 1))) for q in (p[:10], p[10:20], p[20:])]
    )
    assert inception_score(logits, splits=3) == pytest.approx(by_hand, rel=1e-10)
    with pytest.raises(DataError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)


def line(*xs: float) -> np.ndarray:
    """Points on the x axis of a plane."""
    return np.array([[x, 0.0] for x in xs])


def test_manifold_radius_is_the_kth_neighbour_excluding_itself():
    radii = manifold_radii(torch.tensor(line(0, 1, 2, 3, 4, 5)), k=3, batch_size=2)
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


def test_accuracy_and_its_checks():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert accuracy(logits, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(DataError, match=r"labels must lie in \[0, 2\)"):
        accuracy(logits, np.array([0, 1, 2]))
    with pytest.raises(DataError, match="labels"):
        accuracy(logits, np.array([0, 1]))
