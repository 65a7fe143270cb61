"""FDG uptake in template space and the native PET image: PSF blur, noise, Bq/mL, its own field of view.

Activity (Bq/mL) = GM fraction x regional GM uptake + WM fraction x WM uptake + skin fraction x skin uptake, with
CSF and bone at 0 (BrainWeb's FDG model). Regional GM uptake keeps the ratios of the regional SUVR norms (the
frontal norm maps to the subject's cortical GM concentration); AD subjects lose 10-30 % in parietal, temporal and
precuneus/posterior cingulate GM. The pons, a mixed gray/white structure that the template labels mostly as
white matter, takes its regional uptake in all of its tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_jdam.data.phantom.anatomy import SubjectAnatomy
from bids_jdam.data.phantom.geometry import SubjectPlacement, centred_grid, native_to_template_index
from bids_jdam.data.phantom.model import (
    NORM_OF_CORTICAL_GM,
    OTHER_GRAY_MATTER_NORM,
    SKIN_TO_GM_UPTAKE,
    PETDraw,
)
from bids_jdam.data.regions import REGION_IDS, SUVR_REFERENCE_REGIONS, coarse_regions
from bids_jdam.data.template import grid_affine

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
PET_FOV_MM = (224.0, 224.0, 192.0)


@dataclass
class TemplatePET:
    """A subject's tracer distribution on the model grid."""

    activity: np.ndarray  # true concentration, Bq/mL, no blur (the configured uptake holds voxel by voxel)
    noise_free: np.ndarray  # activity blurred by the subject's PSF: what a noise-free scanner would show
    suvr: np.ndarray  # noise_free / its mean in cerebellum + pons
    gm_uptake_bqml: dict[str, float]  # per region, after AD hypometabolism
    wm_uptake_bqml: float
    reference_bqml: float


def regional_gm_uptake(draw: PETDraw) -> dict[str, float]:
    """Gray-matter concentration (Bq/mL) of each region, after hypometabolism."""
    uptake = {
        name: draw.gm_uptake_bqml * suvr / NORM_OF_CORTICAL_GM * (1.0 - draw.hypometabolism.get(name, 0.0))
        for name, suvr in draw.regional_suvr.items()
    }
    uptake["other"] = draw.gm_uptake_bqml * OTHER_GRAY_MATTER_NORM / NORM_OF_CORTICAL_GM
    return uptake


def template_pet(anatomy: SubjectAnatomy, draw: PETDraw, grid_spacing: float) -> TemplatePET:
    """Activity, noise-free PET and SUVR of one subject on the model grid."""
    labels, names = coarse_regions(grid_spacing)
    uptake = regional_gm_uptake(draw)
    wm_uptake = draw.gm_uptake_bqml / draw.gm_wm_ratio
    lookup = np.full(max(names) + 1, uptake["other"], dtype=np.float32)
    for name, value in uptake.items():
        if name in REGION_IDS:
            lookup[REGION_IDS[name]] = value
    activity = anatomy.gm * lookup[labels] + anatomy.wm * wm_uptake
    pons = labels == REGION_IDS["pons"]
    activity[pons] = (anatomy.gm[pons] + anatomy.wm[pons]) * uptake["pons"]
    activity += anatomy.skin * draw.gm_uptake_bqml * SKIN_TO_GM_UPTAKE
    activity *= spot_factor(draw, activity.shape, grid_affine(grid_spacing))
    noise_free = ndimage.gaussian_filter(activity, draw.psf_fwhm_mm * FWHM_TO_SIGMA / grid_spacing)
    reference = float(noise_free[np.isin(labels, [REGION_IDS[r] for r in SUVR_REFERENCE_REGIONS])].mean())
    return TemplatePET(
        activity=activity.astype(np.float32),
        noise_free=noise_free.astype(np.float32),
        suvr=(noise_free / reference).astype(np.float32),
        gm_uptake_bqml=uptake,
        wm_uptake_bqml=wm_uptake,
        reference_bqml=reference,
    )


def spot_factor(draw: PETDraw, shape, affine: np.ndarray) -> np.ndarray:
    """Multiplicative Gaussian hot/cold spots (1 where there are none)."""
    factor = np.ones(shape, dtype=np.float32)
    if not draw.spots:
        return factor
    mm = np.indices(shape, dtype=np.float32) * affine[0, 0] + affine[:3, 3].reshape(3, 1, 1, 1).astype(np.float32)
    for spot in draw.spots:
        distance2 = np.sum((mm - np.asarray(spot.centre_mm, dtype=np.float32).reshape(3, 1, 1, 1)) ** 2, axis=0)
        factor *= 1.0 + (spot.factor - 1.0) * np.exp(-0.5 * distance2 / spot.radius_mm**2)
    return factor


def synthesize_pet(
    pet: TemplatePET, draw: PETDraw, placement: SubjectPlacement, grid_spacing: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Native PET (float32 Bq/mL) and its affine: warped activity, PSF blur, count-like noise."""
    shape, affine = centred_grid(draw.voxel_mm, PET_FOV_MM, centre_mm=(0.0, -10.0, 5.0))
    coords = native_to_template_index(
        placement, affine, shape, grid_affine(grid_spacing), slice(0, shape[2]), from_pet=True
    )
    activity = ndimage.map_coordinates(pet.activity, coords, order=1, cval=0.0, output=np.float32)
    blurred = ndimage.gaussian_filter(activity, draw.psf_fwhm_mm * FWHM_TO_SIGMA / draw.voxel_mm)
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.8)  # reconstruction texture
    texture /= max(float(texture.std()), 1e-9)
    # Variance proportional to the signal (counts), scaled so the CoV at the GM concentration is noise_cov.
    sigma = draw.noise_cov * np.sqrt(draw.gm_uptake_bqml * np.clip(blurred, 0.0, None))
    return np.clip(blurred + sigma * texture, 0.0, None).astype(np.float32), affine
