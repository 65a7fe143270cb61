"""Image-quality metrics for synthetic PET, under one written-down protocol.

Published PSNR/SSIM figures move by several dB with choices that papers rarely state, so every number this
project reports follows these rules:

- Images are in SUVR (the preprocessing's reference region; background 0) and are compared in template space
  (the model grid), inside the brain mask only.
- PSNR uses a FIXED data range, ``SUVR_DATA_RANGE`` = 3.0 SUVR, for every image:
  ``PSNR = 10 log10(SUVR_DATA_RANGE^2 / MSE)`` with the MSE over brain voxels. Not each image's own maximum.
- SSIM is ``skimage.metrics.structural_similarity`` with ``data_range=SUVR_DATA_RANGE``, ``gaussian_weights=True``,
  ``sigma=1.5`` and ``use_sample_covariance=False``; its full SSIM map is averaged over the brain mask. On a 2D
  slice this is the per-slice SSIM; on a 3D volume the same settings give a 3D map (the per-volume SSIM).
- MAE (SUVR) and NMSE (sum of squared errors over the sum of squared truth) inside the brain mask.
- For input without a real PET (e.g. 5T/7T MRI) there is nothing to compare with; :func:`noise_index` reports
  the mean SUVR in the brain over the standard deviation inside a uniform white-matter region. It describes the
  synthetic image's smoothness, it is not a quality score.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

SUVR_DATA_RANGE = 3.0
SSIM_SIGMA = 1.5


def _in_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    if not mask.any():
        raise ValueError("the brain mask is empty")
    return np.asarray(image, dtype=np.float64)[mask]


def psnr(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: float = SUVR_DATA_RANGE) -> float:
    """PSNR in dB inside ``mask`` with the protocol's fixed data range."""
    mse = float(np.mean((_in_mask(prediction, mask) - _in_mask(truth, mask)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray, data_range: float = SUVR_DATA_RANGE) -> float:
    """Gaussian-weighted SSIM map (2D slice or 3D volume) averaged over ``mask``."""
    _, ssim_map = structural_similarity(
        np.asarray(truth, dtype=np.float64),
        np.asarray(prediction, dtype=np.float64),
        data_range=data_range,
        gaussian_weights=True,
        sigma=SSIM_SIGMA,
        use_sample_covariance=False,
        full=True,
    )
    return float(np.mean(_in_mask(ssim_map, mask)))


def mae(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error in SUVR inside ``mask``."""
    return float(np.mean(np.abs(_in_mask(prediction, mask) - _in_mask(truth, mask))))


def nmse(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Sum of squared errors over the sum of squared truth, inside ``mask``."""
    reference = _in_mask(truth, mask)
    return float(np.sum((_in_mask(prediction, mask) - reference) ** 2) / np.sum(reference**2))


def image_quality(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """All comparison metrics of the protocol for one slice or one volume."""
    return {
        "psnr_db": psnr(prediction, truth, mask),
        "ssim": ssim(prediction, truth, mask),
        "mae_suvr": mae(prediction, truth, mask),
        "nmse": nmse(prediction, truth, mask),
    }


def uniform_white_matter_region(wm_probability: np.ndarray, threshold: float = 0.9, erosion: int = 1) -> np.ndarray:
    """Voxels that are white matter with high probability, eroded away from tissue borders."""
    region = np.asarray(wm_probability) >= threshold
    if erosion > 0:
        region = ndimage.binary_erosion(region, iterations=erosion)
    return region


def noise_index(pet: np.ndarray, brain_mask: np.ndarray, white_matter_region: np.ndarray) -> float:
    """Noise index of a synthetic PET: mean SUVR in the brain / standard deviation in uniform white matter."""
    spread = float(np.std(_in_mask(pet, white_matter_region)))
    if spread == 0:
        return float("inf")
    return float(np.mean(_in_mask(pet, brain_mask)) / spread)
