"""Input quality gate: measures preprocessing already has, and the limits an image must meet to count as ``ok``.

An image outside any limit still gets its outputs, marked ``failed-qc`` (metrics, sidecars, report, group table),
so its report shows why; it is never presented as ``ok``. The limits sit between what the phantom gives and what
broken inputs give (docs/quality_gates.md, measured with benchmarks/qc_distribution.py):

- registration: Pearson correlation of the registered, scaled T1w with the template T1 inside the template brain
  mask (the same measure the report shows);
- brain extraction: Dice of the brain mask on the model grid with the template brain mask;
- brain volume: voxels of the native-space brain mask times the voxel volume from the affine (not ``pixdim``).
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

MIN_REGISTRATION_CORRELATION = 0.5
MIN_MASK_DICE = 0.8
BRAIN_VOLUME_RANGE_ML = (800.0, 2500.0)


@dataclass(frozen=True)
class QualityMeasures:
    """What the gate looks at for one image."""

    registration_correlation: float
    mask_dice: float
    brain_volume_ml: float


def measure(
    t1w_model: np.ndarray,
    mask_model: np.ndarray,
    template_t1: np.ndarray,
    template_mask: np.ndarray,
    native_mask: nib.Nifti1Image,
) -> QualityMeasures:
    """The gate's measures from the model-grid T1w and mask, the template and the native-space mask."""
    inside = template_mask.astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant image has no correlation: NaN fails the gate
        correlation = float(np.corrcoef(t1w_model[inside], template_t1[inside])[0, 1])
    mask = mask_model.astype(bool)
    dice = float(2 * np.count_nonzero(mask & inside) / max(np.count_nonzero(mask) + np.count_nonzero(inside), 1))
    voxel_ml = abs(float(np.linalg.det(native_mask.affine[:3, :3]))) / 1000.0
    volume = float(np.count_nonzero(np.asarray(native_mask.dataobj))) * voxel_ml
    return QualityMeasures(correlation, dice, volume)


def failures(measures: QualityMeasures) -> list[str]:
    """One line per limit the image misses (NaN misses every limit); empty when it passes."""
    problems = []
    if not measures.registration_correlation >= MIN_REGISTRATION_CORRELATION:
        problems.append(
            f"registration correlation with the template {measures.registration_correlation:.2f} "
            f"< {MIN_REGISTRATION_CORRELATION}"
        )
    if not measures.mask_dice >= MIN_MASK_DICE:
        problems.append(f"brain-mask Dice with the template {measures.mask_dice:.2f} < {MIN_MASK_DICE}")
    low, high = BRAIN_VOLUME_RANGE_ML
    if not low <= measures.brain_volume_ml <= high:
        problems.append(f"brain volume {measures.brain_volume_ml:.0f} ml outside {low:.0f}..{high:.0f} ml")
    return problems
