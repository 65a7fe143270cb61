"""Model units: T1w scaled by a robust brain percentile, PET as SUVR against a reference region.

Dividing by a percentile of the brain's own intensities removes the scanner's arbitrary gain, so 3T, 5T and 7T
scans (after N4) land on the same 0..1 scale; SUVR does the same for injected dose and body weight.
"""

from __future__ import annotations

import numpy as np

SUVR_REFERENCES = {"cerebellum+pons": ("cerebellum", "pons"), "pons": ("pons",), "wholebrain": ()}


def scale_t1w(t1w: np.ndarray, brain_mask: np.ndarray, percentile: float) -> tuple[np.ndarray, float]:
    """Divide by the ``percentile`` of brain intensities, clip to 0..1 and zero outside the brain."""
    inside = t1w[brain_mask]
    if inside.size == 0:
        raise ValueError("the brain mask is empty")
    scale = float(np.percentile(inside, percentile))
    if scale <= 0:
        raise ValueError(f"the {percentile}th brain percentile is {scale}, not positive")
    scaled = np.clip(t1w / scale, 0.0, 1.0)
    return np.where(brain_mask, scaled, 0.0).astype(np.float32), scale


def reference_mask(
    reference: str, brain_mask: np.ndarray, labels: np.ndarray | None, names: dict[int, str] | None
) -> np.ndarray:
    """Voxels of the SUVR reference region (inside the brain mask)."""
    if reference not in SUVR_REFERENCES:
        raise ValueError(f"unknown SUVR reference {reference!r}; choose one of {sorted(SUVR_REFERENCES)}")
    wanted = SUVR_REFERENCES[reference]
    if not wanted:
        return brain_mask.copy()
    if labels is None or names is None:
        raise ValueError(f"the SUVR reference {reference!r} needs the template's region labels")
    ids = [label for label, name in names.items() if name in wanted]
    missing = set(wanted) - {names[i] for i in ids}
    if missing:
        raise ValueError(f"region labels lack {sorted(missing)}")
    return np.isin(labels, ids) & brain_mask


def suvr(pet: np.ndarray, reference: np.ndarray, brain_mask: np.ndarray) -> tuple[np.ndarray, float]:
    """PET divided by its mean uptake in ``reference``, zero outside the brain; return the image and the factor."""
    values = pet[reference]
    if values.size == 0:
        raise ValueError("the SUVR reference region is empty")
    factor = float(values.mean())
    if factor <= 0:
        raise ValueError(f"mean uptake in the reference region is {factor}, not positive")
    return np.where(brain_mask, np.clip(pet, 0, None) / factor, 0.0).astype(np.float32), factor
