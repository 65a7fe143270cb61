"""The activity the phantom must put in each region so that its PET *measures* like the real norms.

The norms (fdg_norms.tsv, ``uptake``) are what a real PET shows in each region's gray matter, blurred by the
scanner and mixed with white matter and CSF at the cortex's edge; the cerebellar cortex they are divided by is
diluted too. Setting the activity to the norms would give a flatter, different pattern. This fits, on the template
anatomy with the phantom's mean PSF, the activity per group whose measured pattern equals the norms (fixed-point
iteration: scale each group by norm / measured), with a floor at white matter's level. The result is the
``activity_uptake`` column of fdg_norms.tsv:

    python -m bids_jdam.data.phantom.partial_volume          # prints the column; paste it into fdg_norms.tsv
"""

from __future__ import annotations

import numpy as np

from bids_jdam.data.phantom.anatomy import build_anatomy
from bids_jdam.data.phantom.fdg_norms import REFERENCE_GROUP, group_masks, region_groups
from bids_jdam.data.phantom.model import PSF_FWHM_RANGE_MM, AnatomyDraw, PETDraw
from bids_jdam.data.phantom.pet import template_pet

FIT_SPACING_MM = 2.0
# No gray matter below white matter's level (cortical GM / GM:WM ratio, about 0.5 of the cerebellar cortex): the
# smallest structures (amygdala) would otherwise need an unphysiological activity to measure as low as the norms.
LOWEST_ACTIVITY = 0.5


def neutral_draw(activity: dict[str, float]) -> PETDraw:
    """A subject with the given group activities and nothing else: no variation, asymmetry, AD or spots."""
    return PETDraw(
        gm_uptake_bqml=1.0,
        gm_wm_ratio=4.0,
        regional_uptake=activity,
        asymmetry={name: 0.0 for name in activity},
        ad_severity=0.0,
        hypometabolism={},
        spots=[],
        psf_fwhm_mm=float(np.mean(PSF_FWHM_RANGE_MM)),
        noise_cov=0.0,
        injected_mbq=0.0,
        body_weight_kg=0.0,
        voxel_mm=FIT_SPACING_MM,
    )


def gray_matter_support(gm: np.ndarray, wm: np.ndarray, spacing: float) -> np.ndarray:
    """Where the norms were measured: gray matter, and tissue of the nuclei whose uptake fills them."""
    deep = np.zeros(gm.shape, dtype=bool)
    for name, mask in group_masks(spacing).items():
        if region_groups()[name].all_tissue:
            deep |= mask
    return (gm >= 0.5) | (deep & (gm + wm >= 0.5))


def measured_pattern(noise_free: np.ndarray, support: np.ndarray, spacing: float) -> dict[str, float]:
    """Each group's mean in the support over the cerebellar cortex's: the norms' measure."""
    means = {name: float(noise_free[mask & support].mean()) for name, mask in group_masks(spacing).items()}
    return {name: value / means[REFERENCE_GROUP] for name, value in means.items()}


def fit_activity_uptake(iterations: int = 8) -> dict[str, float]:
    """Group activities whose measured pattern on the template anatomy equals the norms."""
    anatomy = build_anatomy(
        AnatomyDraw(gm_thinning={}, ventricle_expansion=0.0, shell_thickness=1.0), 1, FIT_SPACING_MM
    )
    support = gray_matter_support(anatomy.gm, anatomy.wm, FIT_SPACING_MM)
    target = {name: group.uptake for name, group in region_groups().items()}
    activity = dict(target)
    for _ in range(iterations):
        pet = template_pet(anatomy, neutral_draw(activity), FIT_SPACING_MM)
        measured = measured_pattern(pet.noise_free, support, FIT_SPACING_MM)
        activity = {name: activity[name] * target[name] / measured[name] for name in activity}
        activity = {name: max(value / activity[REFERENCE_GROUP], LOWEST_ACTIVITY) for name, value in activity.items()}
    return activity


if __name__ == "__main__":
    for group, value in fit_activity_uptake().items():
        print(f"{group}\t{value:.3f}")
