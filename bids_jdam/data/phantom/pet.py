"""FDG uptake in template space and the native PET image: PSF blur, noise, Bq/mL, its own field of view.

Activity (Bq/mL) = GM fraction x regional GM uptake + WM fraction x WM uptake + skin fraction x skin uptake, with
CSF and bone at 0 (BrainWeb's FDG model). The regional GM uptake is set per AAL3 region from the subject's draw of
the real healthy pattern (fdg_norms.tsv: relative to the cerebellar cortex, with subject variation, age and
left-right asymmetry), less its AD hypometabolism. Deep nuclei and the pons, which the template's tissue maps label
partly as white matter, take their uptake in all of their tissue.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bids_jdam.data.atlas import load_atlas
from bids_jdam.data.phantom.anatomy import SubjectAnatomy
from bids_jdam.data.phantom.fdg_norms import ATLAS, NEOCORTEX_GROUP, group_of_region, phantom_regions, region_groups
from bids_jdam.data.phantom.geometry import SubjectPlacement, centred_grid, native_to_template_index
from bids_jdam.data.phantom.model import PONS_UPTAKE, SKIN_TO_GM_UPTAKE, PETDraw
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
    gm_uptake_bqml: dict[str, float]  # per AAL3 region (and the pons), after AD hypometabolism
    wm_uptake_bqml: float
    reference_bqml: float


def regional_gm_uptake(draw: PETDraw) -> dict[str, float]:
    """Gray-matter concentration (Bq/mL) of each AAL3 region and of the pons, after hypometabolism."""
    per_unit = draw.gm_uptake_bqml / draw.regional_uptake[NEOCORTEX_GROUP]  # Bq/mL of the cerebellar cortex
    uptake = {}
    for region in load_atlas(ATLAS).labels.values():
        group, side = group_of_region(region)
        lateral = {"L": 0.5, "R": -0.5}.get(side, 0.0) * draw.asymmetry[group]
        loss = draw.hypometabolism.get(group, 0.0)
        uptake[region] = per_unit * draw.regional_uptake[group] * (1.0 + lateral) * (1.0 - loss)
    uptake["pons"] = per_unit * PONS_UPTAKE
    return uptake


def _uptake_volumes(draw: PETDraw, grid_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel GM uptake (Bq/mL) and the mask where it applies to all tissue (deep nuclei, pons)."""
    labels = phantom_regions(grid_spacing)
    atlas = load_atlas(ATLAS)
    uptake = regional_gm_uptake(draw)
    lookup = np.zeros(max(atlas.labels) + 1, dtype=np.float32)
    all_tissue = np.zeros(max(atlas.labels) + 1, dtype=bool)
    for index, region in atlas.labels.items():
        lookup[index] = uptake[region]
        all_tissue[index] = region_groups()[group_of_region(region)[0]].all_tissue
    gm_uptake, deep = lookup[labels], all_tissue[labels]
    pons = coarse_regions(grid_spacing)[0] == REGION_IDS["pons"]
    gm_uptake[pons] = uptake["pons"]
    return gm_uptake, deep | pons


def template_pet(anatomy: SubjectAnatomy, draw: PETDraw, grid_spacing: float) -> TemplatePET:
    """Activity, noise-free PET and SUVR of one subject on the model grid."""
    labels, _ = coarse_regions(grid_spacing)
    gm_uptake, all_tissue = _uptake_volumes(draw, grid_spacing)
    wm_uptake = draw.gm_uptake_bqml / draw.gm_wm_ratio
    activity = anatomy.gm * gm_uptake + anatomy.wm * wm_uptake
    activity[all_tissue] = ((anatomy.gm + anatomy.wm) * gm_uptake)[all_tissue]
    activity += anatomy.skin * draw.gm_uptake_bqml * SKIN_TO_GM_UPTAKE
    activity *= spot_factor(draw, activity.shape, grid_affine(grid_spacing))
    noise_free = ndimage.gaussian_filter(activity, draw.psf_fwhm_mm * FWHM_TO_SIGMA / grid_spacing)
    reference = float(noise_free[np.isin(labels, [REGION_IDS[r] for r in SUVR_REFERENCE_REGIONS])].mean())
    return TemplatePET(
        activity=activity.astype(np.float32),
        noise_free=noise_free.astype(np.float32),
        suvr=(noise_free / reference).astype(np.float32),
        gm_uptake_bqml=regional_gm_uptake(draw),
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
