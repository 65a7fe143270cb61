"""Mean value per coarse brain region: the regional SUVR figures of the metrics JSON and the group table."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def regional_means(
    img_data: np.ndarray, labels: np.ndarray, names: dict[int, str], mask: np.ndarray | None = None
) -> dict[str, float]:
    """Mean of ``img_data`` in each labelled region (restricted to ``mask``); NaN for a region with no voxel.

    ``labels`` and ``names`` are what :func:`bids_jdam.data.regions.coarse_regions` returns for the same grid.
    """
    img_data = np.asarray(img_data, dtype=np.float64)
    labels = np.asarray(labels)
    if img_data.shape != labels.shape:
        raise ValueError(f"image shape {img_data.shape} and region labels shape {labels.shape} differ")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(f"mask shape {mask.shape} and region labels shape {labels.shape} differ")
        labels = np.where(mask, labels, 0)
    index = sorted(names)
    counts = ndimage.sum_labels(np.ones_like(img_data), labels, index)
    sums = ndimage.sum_labels(img_data, labels, index)
    return {
        names[label]: float(total / count) if count > 0 else math.nan
        for label, total, count in zip(index, sums, counts)
    }
