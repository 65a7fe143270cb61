"""Build a model's healthy-control reference from its CN training subjects' PET (as the app preprocessed it).

Voxelwise: the mean and SD of SUVR over the subjects whose brain mask holds the voxel, kept where at least half of
them do. A handful of subjects gives a noisy voxel SD, so the variance is smoothed at PET resolution (FWHM
``SD_SMOOTHING_FWHM_MM``, normalized inside the kept voxels) and floored at half its median: one voxel's chance
agreement can then not make a z of 20. Regional: the mean and SD over subjects of each subject's regional mean
(AAL3 regions and the AD meta-ROI, :func:`bids_jdam.evaluate.atlas_suvr.regional_suvr`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
from scipy import ndimage

from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.healthy_reference import HealthyReference, RegionNorm
from bids_jdam.errors import InputError
from bids_jdam.evaluate.atlas_suvr import regional_suvr

HEALTHY_DIAGNOSIS = "CN"
MIN_SUBJECTS = 3  # an SD from fewer is no reference
SD_SMOOTHING_FWHM_MM = 8.0


def healthy_subjects(volumes: Iterable[SubjectVolumes]) -> list[SubjectVolumes]:
    """The CN subjects among ``volumes`` (the diagnosis participants.tsv gives)."""
    return [volume for volume in volumes if volume.diagnosis == HEALTHY_DIAGNOSIS]


def build_healthy_reference(volumes: list[SubjectVolumes], spacing_mm: float) -> HealthyReference:
    """The reference of ``volumes`` (CN subjects on the model grid); an error naming the count when too few."""
    if len(volumes) < MIN_SUBJECTS:
        raise InputError(f"a healthy-control reference needs at least {MIN_SUBJECTS} CN subjects, got {len(volumes)}")
    mean, sd = _voxelwise(volumes, spacing_mm)
    return HealthyReference(
        mean=mean,
        sd=sd,
        affine=volumes[0].affine,
        regions=_regional(volumes, spacing_mm),
        subjects=tuple(volume.subject for volume in volumes),
    )


def _voxelwise(volumes: list[SubjectVolumes], spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    masks = np.stack([volume.brain_mask for volume in volumes]).astype(np.float64)
    pets = np.stack([volume.pet for volume in volumes]).astype(np.float64) * masks
    count = masks.sum(axis=0)
    kept = count >= max(2, len(volumes) / 2)
    mean = np.where(kept, pets.sum(axis=0) / np.maximum(count, 1), 0.0)
    variance = np.where(kept, (masks * (pets - mean) ** 2).sum(axis=0) / np.maximum(count - 1, 1), 0.0)
    sigma = SD_SMOOTHING_FWHM_MM / (2 * np.sqrt(2 * np.log(2))) / spacing_mm
    weight = ndimage.gaussian_filter(kept.astype(np.float64), sigma)
    smoothed = ndimage.gaussian_filter(variance, sigma) / np.maximum(weight, 1e-6)
    sd = np.sqrt(np.maximum(smoothed, 0.0))
    floor = 0.5 * np.median(sd[kept])
    return mean.astype(np.float32), np.where(kept, np.maximum(sd, floor), 0.0).astype(np.float32)


def _regional(volumes: list[SubjectVolumes], spacing_mm: float) -> tuple[RegionNorm, ...]:
    values: dict[tuple[int, str], list[float]] = defaultdict(list)
    for volume in volumes:
        for row in regional_suvr(volume.pet, volume.brain_mask, spacing_mm):
            values[(row.index, row.name)].append(row.synthetic_suvr)  # the mean of the image given: the PET
    return tuple(
        RegionNorm(index, name, float(np.mean(means)), float(np.std(means, ddof=1)))
        for (index, name), means in values.items()
        if len(means) >= MIN_SUBJECTS and np.std(means, ddof=1) > 0
    )
