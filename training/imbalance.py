"""Sample weights for rare ages (and small sources), so the loss does not ignore them.

13-17 is 3.5% of UTKFace; an unweighted MSE learns to pull teenagers towards the crowded
twenties and thirties, which is the dangerous direction for an alcohol gate. Label
distribution smoothing (Yang et al., "Delving into Deep Imbalanced Regression", ICML 2021)
estimates the *effective* density of each age by smoothing the label histogram with a
Gaussian kernel (neighbouring ages look alike, so they share their samples); each sample
is then weighted by the inverse square root of that density (the paper's reweighting).
"""

from __future__ import annotations

import numpy as np

MAX_AGE = 120


def lds_weights(
    age_years: np.ndarray, sigma_years: float = 2.0, power: float = 0.5, max_ratio: float = 10.0
) -> np.ndarray:
    """Per-sample weights, mean 1, from a Gaussian-smoothed age histogram.

    Args:
        age_years: (n,) ages of the training samples.
        sigma_years: the kernel's width; 0 uses the raw histogram.
        power: weight = density ** -power (0.5: inverse square root; 1: inverse).
        max_ratio: the largest weight is at most this many times the smallest, so a handful
            of centenarians cannot dominate a batch.

    Returns:
        (n,) float32 weights with mean 1.

    Raises:
        ValueError: for no ages, or ages outside 0-120.
    """
    ages = np.asarray(age_years, np.float64).reshape(-1)
    if ages.size == 0:
        raise ValueError("lds_weights needs at least one age")
    if ages.min() < 0 or ages.max() > MAX_AGE:
        raise ValueError(f"ages must be in 0-{MAX_AGE} years, got {ages.min()}-{ages.max()}")
    bins = np.clip(np.round(ages).astype(np.int64), 0, MAX_AGE)
    histogram = np.bincount(bins, minlength=MAX_AGE + 1).astype(np.float64)
    if sigma_years > 0:
        offsets = np.arange(-int(np.ceil(3 * sigma_years)), int(np.ceil(3 * sigma_years)) + 1)
        kernel = np.exp(-(offsets**2) / (2 * sigma_years**2))
        density = np.convolve(histogram, kernel / kernel.sum(), mode="same")
    else:
        density = histogram
    weights = density[bins] ** -power
    weights = np.minimum(weights, weights.min() * max_ratio)
    return (weights / weights.mean()).astype(np.float32)


def source_weights(source: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-sample weights, mean 1, that lift small sources: count ** -power per source.

    With power 0.5 a source four times smaller weighs twice as much per photo: small,
    varied sources (APPA-REAL's photos in the wild) are not drowned by large, uniform ones.
    """
    names, inverse, counts = np.unique(np.asarray(source), return_inverse=True, return_counts=True)
    weights = counts[inverse].astype(np.float64) ** -power
    return (weights / weights.mean()).astype(np.float32)
