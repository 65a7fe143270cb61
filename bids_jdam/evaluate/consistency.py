"""Properties of a synthetic volume that need no ground truth: slice-to-slice stripes and uncertainty calibration.

Slice-wise sampling draws every slice independently, so neighbouring slices disagree along the sampling axis.
``stripe_index`` compares the energy of differences between neighbouring slices ACROSS the sampling axis with the
same energy along the in-plane axes: about 1 for a smooth volume, larger when stripes are present.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_jdam.evaluate.probabilistic import coverage, spread_skill_from_sd


def neighbour_difference_energy(volume: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Mean squared difference between neighbouring voxels along ``axis``, over pairs inside the mask."""
    diff = np.diff(volume.astype(np.float64), axis=axis)
    both = np.logical_and(
        np.take(mask, range(mask.shape[axis] - 1), axis=axis), np.take(mask, range(1, mask.shape[axis]), axis=axis)
    )
    return float(np.mean(diff[both] ** 2)) if both.any() else float("nan")


def stripe_index(volume: np.ndarray, mask: np.ndarray, sampling_axis: int) -> float:
    """Neighbour-difference energy across the sampling axis over the mean of the two in-plane axes."""
    across = neighbour_difference_energy(volume, mask, sampling_axis)
    in_plane = [neighbour_difference_energy(volume, mask, a) for a in range(3) if a != sampling_axis]
    return across / float(np.mean(in_plane))


# Gaussian sigma at which an SD map is compared with the error: about the resolution of a PET scan.
PET_RESOLUTION_SIGMA_MM = 6.0


def smooth_in_mask(volume: np.ndarray, mask: np.ndarray, sigma_voxels: float) -> np.ndarray:
    """Gaussian smoothing that uses only voxels inside the mask (normalized convolution), zero outside."""
    m = mask.astype(np.float64)
    weight = ndimage.gaussian_filter(m, sigma_voxels)
    smoothed = ndimage.gaussian_filter(np.where(mask, volume, 0).astype(np.float64), sigma_voxels)
    return np.where(mask, smoothed / np.maximum(weight, 1e-6), 0.0)


def uncertainty_error_correlation(
    std: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray,
    mask: np.ndarray,
    smoothing_voxels: float | tuple[float, ...] = 0.0,
) -> float:
    """Pearson correlation, inside the mask, of the per-voxel standard deviation with the absolute error.

    Voxel by voxel, both sides are dominated by noise (an SD from K samples has a relative error of about
    1 / sqrt(2 (K - 1)); the reference PET has its own noise), so a calibrated map can still correlate weakly.
    ``smoothing_voxels`` > 0 compares local averages (Gaussian sigma in voxels, inside the mask) instead: whether
    the map says where errors are large, at about the resolution of a PET scan; a sigma per axis (0 along a stack
    of 2D slices) smooths within each slice only. A constant map (the constant-width band) ranks nothing: 0.
    """
    m = mask.astype(bool)
    error = np.abs(prediction - truth)
    if np.any(np.asarray(smoothing_voxels) > 0):
        std, error = smooth_in_mask(std, m, smoothing_voxels), smooth_in_mask(error, m, smoothing_voxels)
    if np.ptp(std[m]) == 0 or np.ptp(error[m]) == 0:
        return 0.0
    return float(np.corrcoef(std[m], error[m])[0, 1])


def uncertainty_calibration(
    std: np.ndarray, prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, num_samples: int, bins: int = 5
) -> dict[str, object]:
    """How far the SD map of a K-sample mean can be trusted: RMSE per SD quantile bin and the spread-skill ratio.

    If the K samples were draws from the true posterior, the mean's squared error would average the posterior
    variance times (1 + 1/K) wherever the map says that variance is, so the RMSE would rise from bin to bin and
    ``spread_skill_ratio`` (sqrt((1 + 1/K) mean SD^2) over the RMSE, :mod:`bids_jdam.evaluate.probabilistic`'s
    convention) would be 1; below 1 the map is overconfident. ``coverage``: of the 50 % and 90 % intervals.
    """
    m = mask.astype(bool)
    sd, error = std[m].astype(np.float64), (prediction - truth)[m].astype(np.float64)
    edges = np.quantile(sd, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, sd, side="right") - 1, 0, bins - 1)
    table = [
        {
            "sd_from": float(edges[b]),
            "sd_to": float(edges[b + 1]),
            "voxels": int(np.sum(which == b)),
            "mean_sd": float(sd[which == b].mean()),
            "rmse": float(np.sqrt(np.mean(error[which == b] ** 2))),
        }
        for b in range(bins)
        if np.any(which == b)
    ]
    return {
        "bins": table,
        "rmse": float(np.sqrt(np.mean(error**2))),
        "spread_skill_ratio": spread_skill_from_sd(std, prediction, truth, mask, num_samples),
        "coverage": coverage(prediction, std, truth, mask, num_samples),
    }
