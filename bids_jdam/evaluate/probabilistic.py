"""Scores of a probabilistic synthesis: K posterior samples (or their mean and SD) against a reference PET.

One definition each, all inside a mask (the brain, or a region of it), all in SUVR; the reference is the real PET
or the phantom's noise-free truth, and the caller says which. Conventions:

- Fair CRPS (lower is better): mean over voxels of (1/K) sum_k |x_k - y| - 1/(2K(K-1)) sum_{j != k} |x_j - x_k|,
  unbiased for the CRPS of the distribution the K samples are drawn from; for K = 1 it is the MAE.
- Spread-skill ratio: sqrt(mean unbiased ensemble variance) / RMSE of the ensemble mean * sqrt((K + 1) / K);
  1 is calibrated, below 1 overconfident (the spread is too small for the error), above 1 underconfident.
- Coverage: fraction of voxels whose reference lies inside the central interval mean +- t_{K-1} SD sqrt(1 + 1/K),
  the prediction interval of a new draw given K Gaussian draws (Student's t, as the SD is estimated from K), for
  the 50 % and 90 % intervals by default.
- Rank histogram: counts of the reference's rank among the K samples (K + 1 bins, ties broken at random); flat when
  calibrated, U-shaped when overconfident.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from bids_jdam.synthesis.spread import interval_half_width_in_sd

COVERAGE_LEVELS = (0.5, 0.9)


def _voxels(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) samples and (N,) reference inside ``mask``; ``samples`` is (K, *image shape)."""
    samples, mask = np.asarray(samples, dtype=np.float64), np.asarray(mask, dtype=bool)
    if samples.shape[1:] != mask.shape or np.shape(truth) != mask.shape:
        raise ValueError(f"samples {samples.shape}, truth {np.shape(truth)} and mask {mask.shape} do not match")
    if not mask.any():
        raise ValueError("the mask is empty")
    return samples[:, mask], np.asarray(truth, dtype=np.float64)[mask]


def fair_crps(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Fair CRPS of K samples (K, *shape) averaged over ``mask``; the MAE for one sample."""
    x, y = _voxels(samples, truth, mask)
    k = len(x)
    skill = np.mean(np.abs(x - y), axis=0)
    if k == 1:
        return float(skill.mean())
    ordered = np.sort(x, axis=0)
    weights = (2 * np.arange(k) - k + 1)[:, None]  # sum_{j<k} (x_(k) - x_(j)) = sum_i (2i - K + 1) x_(i)
    pair_sum = 2 * np.sum(weights * ordered, axis=0)  # over ordered pairs j != k
    return float(np.mean(skill - pair_sum / (2 * k * (k - 1))))


def spread_skill_from_sd(
    std: np.ndarray, mean: np.ndarray, truth: np.ndarray, mask: np.ndarray, num_samples: int
) -> float:
    """Unbiased spread-skill ratio from a K-sample mean and its SD map (ddof = 1)."""
    m = np.asarray(mask, dtype=bool)
    spread = np.sqrt(np.mean(np.asarray(std, dtype=np.float64)[m] ** 2))
    skill = np.sqrt(np.mean((np.asarray(mean, dtype=np.float64)[m] - np.asarray(truth, dtype=np.float64)[m]) ** 2))
    return float(spread / skill * np.sqrt((num_samples + 1) / num_samples))


def spread_skill_ratio(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Unbiased spread-skill ratio of K >= 2 samples (K, *shape) inside ``mask``."""
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) < 2:
        raise ValueError("the spread-skill ratio needs at least 2 samples")
    return spread_skill_from_sd(samples.std(axis=0, ddof=1), samples.mean(axis=0), truth, mask, len(samples))


def coverage(
    mean: np.ndarray,
    std: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    num_samples: int,
    levels: Sequence[float] = COVERAGE_LEVELS,
) -> dict[str, float]:
    """Fraction of voxels whose reference lies in the central prediction intervals around a K-sample mean (K >= 2)."""
    m = np.asarray(mask, dtype=bool)
    sd = np.asarray(std, dtype=np.float64)[m]
    distance = np.abs(np.asarray(truth, dtype=np.float64)[m] - np.asarray(mean, dtype=np.float64)[m])
    return {
        f"{level:.2f}": float(np.mean(distance <= interval_half_width_in_sd(num_samples, level) * sd))
        for level in levels
    }


def rank_histogram(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, seed: int = 0) -> list[int]:
    """Counts of the reference's rank among the K samples inside ``mask`` (K + 1 bins; ties split at random)."""
    x, y = _voxels(samples, truth, mask)
    below, ties = np.sum(x < y, axis=0), np.sum(x == y, axis=0)
    rank = below + np.random.default_rng(seed).integers(0, ties + 1)
    return np.bincount(rank, minlength=len(x) + 1).tolist()


def probabilistic_scores(
    samples: np.ndarray, truth: np.ndarray, mask: np.ndarray, regions: Mapping[str, np.ndarray] | None = None
) -> dict[str, object]:
    """Every score of the module inside ``mask``, and inside each region of ``regions`` (intersected with it)."""
    scores = _scores(np.asarray(samples, dtype=np.float64), truth, np.asarray(mask, dtype=bool))
    if regions:
        scores["regions"] = {
            name: _scores(np.asarray(samples, dtype=np.float64), truth, mask & region)
            for name, region in regions.items()
            if np.any(mask & region)
        }
    return scores


def _scores(samples: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, object]:
    k = len(samples)
    mean = samples.mean(axis=0)
    x, y = _voxels(samples, truth, mask)
    scores: dict[str, object] = {
        "num_samples": k,
        "voxels": int(mask.sum()),
        "crps": fair_crps(samples, truth, mask),
        "mae_of_mean": float(np.mean(np.abs(x.mean(axis=0) - y))),
    }
    if k > 1:
        std = samples.std(axis=0, ddof=1)
        scores |= {
            "spread_skill_ratio": spread_skill_from_sd(std, mean, truth, mask, k),
            "coverage": coverage(mean, std, truth, mask, k),
            "rank_histogram": rank_histogram(samples, truth, mask),
        }
    return scores
