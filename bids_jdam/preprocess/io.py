"""Load and check input NIfTI images, and write images atomically.

Every check runs on the header first (dimensions, voxel sizes, size limit) so an absurd file is rejected before
its data are read; the data are then checked for finite values.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam.errors import InputError

# 100 million voxels (~400 MB as float32) is well above a 0.5 mm whole-head scan and below what 4 GB can process.
MAX_VOXELS = 100_000_000
VOXEL_SIZE_RANGE_MM = (0.1, 10.0)


def load_checked(path: Path, *, allow_frames: bool = False, max_voxels: int = MAX_VOXELS) -> nib.Nifti1Image:
    """Load a NIfTI image, check it and reorient it to RAS (float32).

    A 4D file with one volume is squeezed to 3D. With ``allow_frames`` (PET) a 4D file with several frames is kept
    4D; otherwise it is an error.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as exc:  # nibabel raises several types for files it cannot read
        raise InputError(f"{path}: not a readable NIfTI image ({exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 4 and not allow_frames:
        raise InputError(f"{path}: a 3D image is required, this one is 4D with {shape[3]} volumes")
    if len(shape) not in (3, 4) or min(shape) < 2:
        raise InputError(f"{path}: a 3D image is required, this one has shape {shape}")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    low, high = VOXEL_SIZE_RANGE_MM
    if not np.all(np.isfinite(zooms)) or np.any(zooms < low) or np.any(zooms > high):
        raise InputError(f"{path}: voxel sizes {tuple(zooms.round(4))} mm are outside {low}..{high} mm")
    nvoxels = int(np.prod(shape, dtype=np.int64))
    if nvoxels > max_voxels:
        raise InputError(f"{path}: {nvoxels} voxels exceed the limit of {max_voxels}")
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-6:
        raise InputError(f"{path}: the voxel-to-world affine is not invertible")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise InputError(f"{path}: the image data cannot be read (truncated or corrupt file: {exc})") from None
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: the image contains NaN or infinite values")
    if not np.any(data):
        raise InputError(f"{path}: the image is empty (all zeros)")
    checked = nib.Nifti1Image(data, img.affine)
    checked.header.set_xyzt_units("mm", "sec")
    return nib.as_closest_canonical(checked)


def sidecar_path(image_path: Path) -> Path:
    """The BIDS JSON sidecar next to an image."""
    name = Path(image_path).name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    return Path(image_path).with_name(stem + ".json")
