"""Whether an uncertainty map says WHERE the error is, not only how large it is on average.

A constant-width band of the right width is calibrated on average and ranks nothing, so every score here is read
against that baseline. The map is a predictive SD ``scale`` (mean +- 1.645 scale is the central 90 % interval; for
the SD of K samples around their mean, ``predictive_scale`` makes it one), read as a Gaussian:

- reliability table: the voxels split into fifths by ``scale``; per fifth the mean scale, the RMSE of the mean and
  the 90 % coverage. A map that ranks the error has RMSE rising with the scale and coverage near 0.9 in every fifth.
- AUSE (Ilg et al., ECCV 2018): the RMSE of the voxels left after removing the fraction with the largest scale,
  against removing those with the largest error (the oracle); the area between the two curves over the area a
  random ranking leaves (the overall RMSE against the oracle): 1 for no ranking, lower is better (the true SD of a
  heteroscedastic Gaussian gives about 0.4).
- CRPS of the map as a Gaussian against the CRPS of the constant band whose 90 % interval covers 90 % of this
  image's voxels (a split-conformal band fitted on the image itself, the strongest constant baseline): below 1 the
  map adds information on where the error is.
- the same ratio for the map with its widths made right on this image (each twentieth of the voxels ranked by
  ``scale`` given that twentieth's RMSE): what the map's ranking alone allows, so that a ratio near 1 is read as
  a ranking too weak (this ratio near 1 as well) or widths that are wrong (this ratio well below the map's).
- over several images together (:func:`pooled_scores`): coverage, reliability, AUSE and CRPS on all their voxels, the
  constant band one width for all of them, as a goal stated over held-out subjects rather than per image reads; with
  the widths made right on the pooled ranking and the pooled oracle (below), so that a pooled CRPS goal is read
  against what any smooth map could reach.
- the same ratio for the local RMS error of the image itself, smoothed at the correlation's scale: the map a method
  would write if it knew the error up to that resolution, so the most a smooth map can gain over the constant band
  on this image (an oracle for the record, not a map any run can write).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter

import numpy as np
from scipy.stats import norm

from bids_jdam.evaluate.consistency import smooth_in_mask, uncertainty_error_correlation

LEVEL = 0.9
BINS = 5
SPARSIFICATION_STEPS = 20
RECALIBRATION_BINS = 20


def predictive_scale(std: np.ndarray, num_samples: int) -> np.ndarray:
    """The predictive SD of a new draw around a K-sample mean whose samples have SD ``std``."""
    return np.asarray(std, dtype=np.float64) * np.sqrt(1 + 1 / num_samples)


def _inside(mask: np.ndarray, *images: np.ndarray) -> list[np.ndarray]:
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise ValueError("the mask is empty")
    return [np.asarray(image, dtype=np.float64)[m] for image in images]


def gaussian_crps(mean: np.ndarray, scale: np.ndarray | float, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean CRPS inside ``mask`` of Gaussians N(mean, scale^2) (a map or one width) against ``truth``."""
    mu, y = _inside(mask, mean, truth)
    sigma = _inside(mask, np.broadcast_to(scale, np.shape(mask)))[0]
    sigma = np.maximum(sigma, 1e-12)
    z = (y - mu) / sigma
    return float(np.mean(sigma * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))))


def constant_band_scale(mean: np.ndarray, truth: np.ndarray, mask: np.ndarray, level: float = LEVEL) -> float:
    """The one width whose central ``level`` interval covers ``level`` of the voxels (conformal on the image)."""
    mu, y = _inside(mask, mean, truth)
    return float(np.quantile(np.abs(y - mu), level) / norm.ppf(0.5 + level / 2))


def gaussian_coverage(
    mean: np.ndarray, scale: np.ndarray, truth: np.ndarray, mask: np.ndarray, levels: tuple[float, ...] = (0.5, 0.9)
) -> dict[str, float]:
    """Fraction of voxels whose reference lies in the central Gaussian intervals mean +- z scale, per level."""
    sigma, mu, y = _inside(mask, scale, mean, truth)
    return {f"{level:.2f}": float(np.mean(np.abs(y - mu) <= norm.ppf(0.5 + level / 2) * sigma)) for level in levels}


def reliability_table(
    scale: np.ndarray, mean: np.ndarray, truth: np.ndarray, mask: np.ndarray, bins: int = BINS, level: float = LEVEL
) -> list[dict[str, float]]:
    """Per fifth of the voxels ranked by ``scale``: its range, mean scale, RMSE of the mean and coverage."""
    sigma, mu, y = _inside(mask, scale, mean, truth)
    order = np.argsort(sigma, kind="stable")
    z = norm.ppf(0.5 + level / 2)
    rows = []
    for part in np.array_split(order, bins):
        error = y[part] - mu[part]
        rows.append(
            {
                "scale_from": float(sigma[part].min()),
                "scale_to": float(sigma[part].max()),
                "mean_scale": float(sigma[part].mean()),
                "rmse": float(np.sqrt(np.mean(error**2))),
                "coverage": float(np.mean(np.abs(error) <= z * sigma[part])),
            }
        )
    return rows


def _remaining_rmse(squared_error_in_removal_order: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """RMSE of what is left after removing each fraction from the front of the order."""
    n = len(squared_error_in_removal_order)
    tail_sums = np.concatenate([np.cumsum(squared_error_in_removal_order[::-1])[::-1], [0.0]])
    removed = np.minimum((fractions * n).astype(int), n - 1)
    return np.sqrt(tail_sums[removed] / (n - removed))


def relative_ause(
    scale: np.ndarray, mean: np.ndarray, truth: np.ndarray, mask: np.ndarray, steps: int = SPARSIFICATION_STEPS
) -> float:
    """Area between the scale's and the oracle's sparsification curves over a random ranking's (1: no ranking)."""
    sigma, mu, y = _inside(mask, scale, mean, truth)
    squared = (y - mu) ** 2
    fractions = np.arange(steps) / steps
    by_scale = _remaining_rmse(squared[np.argsort(-sigma, kind="stable")], fractions)
    oracle = _remaining_rmse(squared[np.argsort(-squared, kind="stable")], fractions)
    random = np.sqrt(squared.mean())
    return float(np.mean(by_scale - oracle) / max(np.mean(random - oracle), 1e-12))


def recalibrated_scale(
    scale: np.ndarray, mean: np.ndarray, truth: np.ndarray, mask: np.ndarray, bins: int = RECALIBRATION_BINS
) -> np.ndarray:
    """``scale`` with each of ``bins`` equal parts of its ranking (tied voxels in one) given that part's RMSE against
    ``truth``: the map's ranking with the right widths (0 outside the mask)."""
    sigma, mu, y = _inside(mask, scale, mean, truth)
    part = np.searchsorted(np.quantile(sigma, np.arange(1, bins) / bins), sigma, side="right")  # ties stay together
    squared = np.bincount(part, weights=(y - mu) ** 2, minlength=bins) / np.maximum(
        np.bincount(part, minlength=bins), 1
    )
    widths = np.sqrt(squared)[part]
    out = np.zeros(np.shape(mask))
    out[np.asarray(mask, dtype=bool)] = widths
    return out


def local_error_scale(
    mean: np.ndarray, truth: np.ndarray, mask: np.ndarray, smoothing_voxels: float | tuple[float, ...]
) -> np.ndarray:
    """The local RMS error inside ``mask``, smoothed with a Gaussian of ``smoothing_voxels`` (one per axis, or one
    for all): an oracle SD map."""
    squared = (np.asarray(truth, dtype=np.float64) - np.asarray(mean, dtype=np.float64)) ** 2
    return np.sqrt(smooth_in_mask(squared, np.asarray(mask, dtype=bool), smoothing_voxels))


def error_ranking_scores(
    scale: np.ndarray,
    mean: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    smoothing_voxels: float | tuple[float, ...] = 0.0,
) -> dict[str, object]:
    """Every score of the module for one predictive-SD map, with the constant band's CRPS beside the map's (and,
    where ``smoothing_voxels`` smooths along some axis, the local-error oracle's; per axis for stacked 2D slices)."""
    scores = _ranking_scores(scale, mean, truth, mask)
    band_crps = scores["constant_band_crps"]
    return {
        **scores,
        "correlation_smoothed": uncertainty_error_correlation(scale, mean, truth, mask, smoothing_voxels),
        "recalibrated_crps_over_constant_band": (
            gaussian_crps(mean, recalibrated_scale(scale, mean, truth, mask), truth, mask) / band_crps
        ),
        "oracle_crps_over_constant_band": (
            gaussian_crps(mean, local_error_scale(mean, truth, mask, smoothing_voxels), truth, mask) / band_crps
            if np.any(np.asarray(smoothing_voxels) > 0)
            else None
        ),
    }


def _ranking_scores(scale: np.ndarray, mean: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, object]:
    """The scores that need no spatial neighbourhood: coverage, reliability, AUSE, CRPS against the constant band."""
    band = constant_band_scale(mean, truth, mask)
    table = reliability_table(scale, mean, truth, mask)
    crps, band_crps = gaussian_crps(mean, scale, truth, mask), gaussian_crps(mean, band, truth, mask)
    return {
        "coverage_90": gaussian_coverage(mean, scale, truth, mask, (LEVEL,))[f"{LEVEL:.2f}"],
        "reliability": table,
        "rmse_top_over_bottom_fifth": table[-1]["rmse"] / max(table[0]["rmse"], 1e-12),
        "ause_relative": relative_ause(scale, mean, truth, mask),
        "crps": crps,
        "constant_band_scale": band,
        "constant_band_crps": band_crps,
        "crps_over_constant_band": crps / band_crps,
    }


def pooled_scores(
    images: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    smoothing_voxels: float | tuple[float, ...] = 0.0,
) -> dict[str, object]:
    """The scores of maps over several images' voxels together, each image as (scale, mean, reference, mask): the
    coverage and the reliability table over all of them, the AUSE, and the CRPS against one constant band for all,
    with the widths made right on the pooled ranking and, where ``smoothing_voxels`` smooths, the oracle of each
    image's own smoothed local error (smoothing only ever within an image)."""
    if not images:
        raise ValueError("no images to pool")
    scale, mean, reference = (_pooled(images, itemgetter(i)) for i in range(3))
    everywhere = np.ones(scale.shape, dtype=bool)
    scores = _ranking_scores(scale, mean, reference, everywhere)
    band_crps = scores["constant_band_crps"]
    recalibrated = recalibrated_scale(scale, mean, reference, everywhere)
    oracle = (
        gaussian_crps(
            mean,
            _pooled(images, lambda image: local_error_scale(image[1], image[2], image[3], smoothing_voxels)),
            reference,
            everywhere,
        )
        / band_crps
        if np.any(np.asarray(smoothing_voxels) > 0)
        else None
    )
    return {
        "images": len(images),
        "voxels": int(scale.size),
        **scores,
        "recalibrated_crps_over_constant_band": gaussian_crps(mean, recalibrated, reference, everywhere) / band_crps,
        "oracle_crps_over_constant_band": oracle,
    }


def _pooled(
    images: Sequence[tuple[np.ndarray, ...]], take: Callable[[tuple[np.ndarray, ...]], np.ndarray]
) -> np.ndarray:
    """``take(image)`` inside each image's mask (its last member), concatenated over the images."""
    return np.concatenate(
        [np.asarray(take(image), dtype=np.float64)[np.asarray(image[3], dtype=bool)] for image in images]
    )
