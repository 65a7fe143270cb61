"""The model grid: nilearn's bundled MNI152NLin2009aSym template resampled to the configured voxel spacing.

Every grid shares the 2 mm template's bounding box (x -98..98, y -134..98, z -72..116 mm), so a grid is defined by
its spacing alone: 2 mm gives nilearn's 99x117x95, 4 mm (the fast/CPU mode) gives 50x59x48.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np

ORIGIN_MM = np.array([-98.0, -134.0, -72.0])
EXTENT_MM = np.array([196.0, 232.0, 188.0])


@dataclass(frozen=True)
class TemplateImages:
    """Template images on one grid (float32 arrays, RAS, the grid's affine)."""

    affine: np.ndarray
    t1: np.ndarray  # 0..1 intensity
    brain_mask: np.ndarray  # bool
    gm: np.ndarray  # probability 0..1
    wm: np.ndarray  # probability 0..1

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)  # type: ignore[return-value]

    def image(self, data: np.ndarray, dtype=np.float32) -> nib.Nifti1Image:
        """Wrap an array on this grid as a NIfTI image with the grid's affine."""
        img = nib.Nifti1Image(np.asarray(data, dtype=dtype), self.affine)
        img.header.set_xyzt_units("mm")
        img.header.set_qform(self.affine, code=4)  # MNI
        img.header.set_sform(self.affine, code=4)
        return img


def grid_affine(spacing_mm: float) -> np.ndarray:
    """Affine of the model grid at ``spacing_mm`` (RAS, origin at the template's corner)."""
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = ORIGIN_MM
    return affine


def grid_shape(spacing_mm: float) -> tuple[int, int, int]:
    """Voxel counts of the model grid at ``spacing_mm``."""
    if not 0.5 <= spacing_mm <= 8:
        raise ValueError(f"grid spacing {spacing_mm} mm is outside 0.5..8 mm")
    return tuple(int(n) for n in np.floor(EXTENT_MM / spacing_mm + 1e-6).astype(int) + 1)  # type: ignore[return-value]


@lru_cache(maxsize=4)
def load_template(spacing_mm: float = 2.0) -> TemplateImages:
    """Load nilearn's MNI152 (2009a symmetric) T1, brain mask and GM/WM maps on the model grid (offline)."""
    from nilearn import datasets, image

    affine = grid_affine(spacing_mm)
    shape = grid_shape(spacing_mm)

    def on_grid(img: nib.Nifti1Image, interpolation: str) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = image.resample_img(
                img,
                target_affine=affine,
                target_shape=shape,
                interpolation=interpolation,
                force_resample=True,
                copy_header=True,
            )
        return np.asarray(out.get_fdata(dtype=np.float32))

    t1 = on_grid(datasets.load_mni152_template(resolution=1), "continuous")
    t1 = np.clip(t1 / max(float(np.percentile(t1[t1 > 0], 99.5)), 1e-6), 0, None).astype(np.float32)
    gm = np.clip(on_grid(datasets.load_mni152_gm_template(resolution=1), "continuous"), 0, 1)
    wm = np.clip(on_grid(datasets.load_mni152_wm_template(resolution=1), "continuous"), 0, 1)
    mask = on_grid(datasets.load_mni152_brain_mask(resolution=1), "linear") > 0.5
    for arr in (t1, gm, wm):
        arr.setflags(write=False)
    mask.setflags(write=False)
    return TemplateImages(affine=affine, t1=t1, brain_mask=mask, gm=gm.astype(np.float32), wm=wm.astype(np.float32))
