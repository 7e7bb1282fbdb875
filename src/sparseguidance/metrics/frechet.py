"""Fréchet distance between Gaussians fitted to feature sets: FID on pool features, sFID on spatial ones.

    d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

computed the way ADM's evaluator (after TTUR's) does: scipy's sqrtm, a small ridge when the product is
singular (the square root is not finite), and the real part when numerical error leaves a negligible
imaginary one on the diagonal (a larger one is an error).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from sparseguidance.errors import DataError


@dataclass(frozen=True, eq=False)
class Gaussian:
    """Mean (D,) and covariance (D, D) of a feature set, in float64."""

    mu: np.ndarray
    sigma: np.ndarray

    def __post_init__(self) -> None:
        mu, sigma = np.atleast_1d(self.mu), np.atleast_2d(self.sigma)
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise DataError(f"statistics need mu (D,) and sigma (D, D); got {mu.shape} and {sigma.shape}")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise DataError("statistics mu or sigma hold NaN or infinite values (features of a diverged model?)")
        object.__setattr__(self, "mu", mu.astype(np.float64))
        object.__setattr__(self, "sigma", sigma.astype(np.float64))


def fit_gaussian(features: np.ndarray) -> Gaussian:
    """Mean and unbiased covariance (rows are samples) of features (N, D), as ADM computes them."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) < 2:
        raise DataError(f"need at least 2 feature vectors (N, D) for a covariance, got shape {features.shape}")
    return Gaussian(features.mean(axis=0, dtype=np.float64), np.cov(features, rowvar=False))


def frechet_distance(a: Gaussian, b: Gaussian, eps: float = 1e-6) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(a.mu, a.sigma) and N(b.mu, b.sigma)."""
    if a.mu.shape != b.mu.shape:
        raise DataError(f"statistics of different feature sizes: {a.mu.shape[0]} and {b.mu.shape[0]}")
    diff = a.mu - b.mu
    with warnings.catch_warnings():  # ADM's disp=False (deprecated in SciPy 1.16) silences scipy; so do we
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(a.sigma @ b.sigma)
    if not np.isfinite(covmean).all():  # the product is (nearly) singular: add a ridge to both covariances
        warnings.warn(f"singular covariance product; adding {eps} to the diagonals", RuntimeWarning, stacklevel=2)
        ridge = eps * np.eye(len(a.mu))
        covmean = linalg.sqrtm((a.sigma + ridge) @ (b.sigma + ridge))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DataError(f"the covariance square root has an imaginary part of {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(covmean))
