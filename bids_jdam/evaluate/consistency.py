"""Properties of a synthetic volume that need no ground truth: slice-to-slice stripes and uncertainty calibration.

Slice-wise sampling draws every slice independently, so neighbouring slices disagree along the sampling axis.
``stripe_index`` compares the energy of differences between neighbouring slices ACROSS the sampling axis with the
same energy along the in-plane axes: about 1 for a smooth volume, larger when stripes are present.
"""

from __future__ import annotations

import numpy as np


def neighbour_difference_energy(volume: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Mean squared difference between neighbouring voxels along ``axis``, over pairs inside the mask."""
    diff = np.diff(volume.astype(np.float64), axis=axis)
    both = np.logical_and(np.take(mask, range(mask.shape[axis] - 1), axis=axis),
                          np.take(mask, range(1, mask.shape[axis]), axis=axis))
    return float(np.mean(diff[both] ** 2)) if both.any() else float("nan")


def stripe_index(volume: np.ndarray, mask: np.ndarray, sampling_axis: int) -> float:
    """Neighbour-difference energy across the sampling axis over the mean of the two in-plane axes."""
    across = neighbour_difference_energy(volume, mask, sampling_axis)
    in_plane = [neighbour_difference_energy(volume, mask, a) for a in range(3) if a != sampling_axis]
    return across / float(np.mean(in_plane))


def uncertainty_error_correlation(std: np.ndarray, prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation, inside the mask, of the per-voxel standard deviation with the absolute error."""
    m = mask.astype(bool)
    return float(np.corrcoef(std[m], np.abs(prediction[m] - truth[m]))[0, 1])
