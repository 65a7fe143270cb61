"""A subject's anatomy in template space: nilearn's MNI152 tissue maps with atrophy, larger ventricles and a head.

Work happens on a "fine" grid, nilearn's 1 mm template sampled every ``stride`` voxels (1 = 1 mm, 2 = 2 mm in fast
mode). Every model grid is the fine grid sampled every ``grid_spacing / stride`` voxels (the grids share their
corner), so the ground truth on the model grid is a plain subsample of the fine images, exactly aligned with
:func:`bids_jdam.data.template.load_template`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from bids_jdam.data.phantom.model import AnatomyDraw
from bids_jdam.data.regions import REGION_IDS, coarse_regions
from bids_jdam.data.template import grid_affine

VENTRICLE_CENTRE_MM = np.array([0.0, -12.0, 14.0])
VENTRICLE_RADII_MM = np.array([40.0, 60.0, 32.0])  # support of the expansion bump around the lateral ventricles
# T1w (MPRAGE) intensity of the layers outside the brain, relative to white matter, by distance (mm) from the
# smoothed brain surface: CSF, inner table, diploe (marrow), outer table, scalp fat/muscle, skin, air.
SHELL_PROFILE_MM = (0.0, 2.5, 3.0, 4.0, 4.5, 7.0, 7.5, 8.5, 9.0, 12.0, 12.5, 14.0, 14.5)
SHELL_PROFILE_T1 = (0.15, 0.15, 0.06, 0.06, 0.45, 0.45, 0.06, 0.06, 0.85, 0.85, 0.6, 0.6, 0.0)
SKIN_BAND_MM = (8.5, 14.0)


@dataclass(frozen=True)
class FineTemplate:
    """Template arrays on the fine grid, with the tissue intensities of its T1."""

    stride: int
    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain_mask: np.ndarray
    outside_mm: np.ndarray  # distance outside a smoothed brain surface (0 inside), for the scalp and skull
    t1_of: dict[str, float]  # median T1 of pure GM, WM and CSF


@lru_cache(maxsize=2)
def fine_template(stride: int) -> FineTemplate:
    """nilearn's 1 mm MNI152 T1, GM, WM and brain mask every ``stride`` voxels, T1 scaled like load_template."""
    from nilearn import datasets

    def load(img) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(img.get_fdata(dtype=np.float32))[::stride, ::stride, ::stride])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t1 = load(datasets.load_mni152_template(resolution=1))
        gm = np.clip(load(datasets.load_mni152_gm_template(resolution=1)), 0, 1)
        wm = np.clip(load(datasets.load_mni152_wm_template(resolution=1)), 0, 1)
        mask = load(datasets.load_mni152_brain_mask(resolution=1)) > 0.5
    t1 = np.clip(t1 / max(float(np.percentile(t1[t1 > 0], 99.5)), 1e-6), 0, None).astype(np.float32)
    csf = mask & (gm + wm < 0.1)
    t1_of = {
        "gm": float(np.median(t1[gm > 0.9])),
        "wm": float(np.median(t1[wm > 0.9])),
        "csf": float(np.median(t1[csf])),
    }
    # Distance from a smoothed brain surface, computed at twice the voxel size (it is smooth) and upsampled.
    coarse_mask = mask[::2, ::2, ::2].astype(np.float32)
    smooth_brain = ndimage.gaussian_filter(coarse_mask, 1.5 / stride) > 0.3
    coarse_outside = ndimage.distance_transform_edt(~smooth_brain, sampling=2.0 * stride).astype(np.float32)
    outside = upsample_integer(coarse_outside, 2, t1.shape)
    return FineTemplate(
        stride=stride,
        affine=grid_affine(float(stride)),
        t1=t1,
        gm=gm,
        wm=wm,
        brain_mask=mask,
        outside_mm=outside,
        t1_of=t1_of,
    )


@dataclass
class SubjectAnatomy:
    """One subject in template space, on the fine grid (T1 with head) and on the model grid (truth)."""

    head_t1_fine: np.ndarray  # T1w contrast with scalp and skull, units of the template T1
    t1: np.ndarray  # model grid: brain T1 (no head), the template-space truth
    gm: np.ndarray
    wm: np.ndarray
    brain_mask: np.ndarray
    skin: np.ndarray  # model grid: 1 in the scalp/skin band, for the PET's skin uptake


def _thinning_map(draw: AnatomyDraw, grid_spacing: float) -> np.ndarray:
    """Smooth map (model grid) of the fraction of gray matter lost, from the per-region thinning draws."""
    labels, _ = coarse_regions(grid_spacing)
    lookup = np.zeros(max(REGION_IDS.values()) + 1, dtype=np.float32)
    for name, fraction in draw.gm_thinning.items():
        lookup[REGION_IDS[name]] = fraction
    sigma = 4.0 / grid_spacing
    in_region = ndimage.gaussian_filter((labels > 0).astype(np.float32), sigma)
    return ndimage.gaussian_filter(lookup[labels], sigma) / np.maximum(in_region, 1e-3)


def _expand_ventricles(arrays: list[np.ndarray], affine: np.ndarray, expansion: float) -> list[np.ndarray]:
    """Radial expansion around the lateral ventricles: a smooth bump with compact support, so only a box moves."""
    spacing = affine[0, 0]
    lo = np.maximum(np.floor((VENTRICLE_CENTRE_MM - VENTRICLE_RADII_MM - affine[:3, 3]) / spacing).astype(int), 0)
    hi = np.minimum(
        np.ceil((VENTRICLE_CENTRE_MM + VENTRICLE_RADII_MM - affine[:3, 3]) / spacing).astype(int) + 1, arrays[0].shape
    )
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    column = (3, 1, 1, 1)
    mm = np.indices(tuple(hi - lo), dtype=np.float32) * spacing + (lo * spacing + affine[:3, 3]).reshape(column)
    offset = mm - VENTRICLE_CENTRE_MM.reshape(column).astype(np.float32)
    radius2 = np.sum((offset / VENTRICLE_RADII_MM.reshape(column).astype(np.float32)) ** 2, axis=0)
    bump = np.clip(1.0 - radius2, 0.0, None) ** 2
    source = (offset * (1.0 - expansion * bump) + (VENTRICLE_CENTRE_MM - affine[:3, 3]).reshape(column)) / spacing
    out = []
    for array in arrays:
        warped = array.copy()
        warped[box] = ndimage.map_coordinates(array, source, order=1, mode="nearest", output=np.float32)
        out.append(warped)
    return out


def upsample_integer(volume: np.ndarray, factor: int, shape) -> np.ndarray:
    """Linear upsampling by an integer factor (sample i of the output at input position i / factor)."""
    out = volume.astype(np.float32)
    for axis, n_out in enumerate(shape):
        position = np.arange(n_out) / factor
        low = np.minimum(np.floor(position).astype(int), out.shape[axis] - 2)
        weight = (position - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        lower = np.take(out, low, axis=axis)
        out = lower + weight * (np.take(out, low + 1, axis=axis) - lower)
    return out


def shell_profile(outside_mm: np.ndarray, thickness: float) -> np.ndarray:
    """T1 intensity (relative to white matter) of the CSF, skull and scalp layers at a distance outside the brain.

    A lookup table at 0.1 mm steps: as exact as the profile needs and much faster than interpolating 9 M voxels.
    """
    table_mm = np.arange(0.0, SHELL_PROFILE_MM[-1] + 0.2, 0.1)
    table = np.interp(table_mm, SHELL_PROFILE_MM, SHELL_PROFILE_T1).astype(np.float32)
    index = np.minimum(outside_mm * (10.0 / thickness) + 0.5, len(table) - 1).astype(np.int32)
    return table[index]


def build_anatomy(draw: AnatomyDraw, stride: int, grid_spacing: float) -> SubjectAnatomy:
    """Apply a subject's atrophy and ventricle expansion to the template and add the scalp and skull.

    The T1 needs the fine grid (it becomes the native image); the tissue fractions only need the model grid.
    """
    template = fine_template(stride)
    step = int(round(grid_spacing / stride))
    sub = (slice(None, None, step),) * 3
    thinning_grid = np.clip(_thinning_map(draw, grid_spacing), 0.0, 0.6)
    lost = template.gm * upsample_integer(thinning_grid, step, template.t1.shape)
    t1 = template.t1 + (template.t1_of["csf"] - template.t1_of["gm"]) * lost
    (t1,) = _expand_ventricles([t1], template.affine, draw.ventricle_expansion)
    t1 = np.clip(t1, 0, None) * template.brain_mask
    gm, wm = _expand_ventricles(
        [template.gm[sub] * (1.0 - thinning_grid), template.wm[sub]],
        grid_affine(grid_spacing),
        draw.ventricle_expansion,
    )
    shell = template.t1_of["wm"] * shell_profile(template.outside_mm, draw.shell_thickness)
    head_t1 = np.where(template.brain_mask, t1, shell)
    outside = template.outside_mm[sub] / draw.shell_thickness
    skin = ((outside > SKIN_BAND_MM[0]) & (outside < SKIN_BAND_MM[1])).astype(np.float32)
    return SubjectAnatomy(
        head_t1_fine=head_t1.astype(np.float32),
        t1=np.ascontiguousarray(t1[sub]),
        gm=gm,
        wm=wm,
        brain_mask=np.ascontiguousarray(template.brain_mask[sub]),
        skin=skin,
    )
