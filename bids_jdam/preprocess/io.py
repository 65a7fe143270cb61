"""Load and check input NIfTI images, and write images atomically.

Every check runs on the header first (dimensions, voxel sizes, size limit) so an absurd file is rejected before
its data are read; the data are then checked for finite values and for contrast. Voxel sizes and the field of view
come from the affine (what ANTs resamples with), not from ``pixdim``, so an sform of 1e6 mm cannot slip past the
memory limit behind a 3 mm ``pixdim``. A file that is no NIfTI is named for what it is (empty, HTML, text, ...).
"""

from __future__ import annotations

import errno
import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam.errors import InputError

log = logging.getLogger("bids_jdam.preprocess")

# 100 million voxels (~400 MB as float32) is well above a 0.5 mm whole-head scan and below what 4 GB can process;
# the field of view is held to the same number of cubic millimetres, as HD-BET resamples to 1 mm.
MAX_VOXELS = 100_000_000
VOXEL_SIZE_RANGE_MM = (0.1, 10.0)
# A head is about 140 x 170 x 120 mm; an image narrower than this on any axis cannot hold a brain.
MIN_FIELD_OF_VIEW_MM = 80.0
NIFTI_HEADER_SIZES = (348, 540)  # NIfTI-1 and NIfTI-2 ``sizeof_hdr``


def require_file(path: Path) -> None:
    """A readable regular file, or an InputError saying what is wrong (missing, broken link, symlink loop)."""
    path = Path(path)
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise InputError(f"{path}: symlink loop (the link points back at itself)") from None
        if path.is_symlink():
            raise InputError(f"{path}: broken symlink (its target {path.readlink()} does not exist)") from None
        raise InputError(f"{path}: file not found") from None
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")


def describe_non_nifti(path: Path) -> str | None:
    """What a file that nibabel cannot read looks like (``"empty (0 bytes)"``, ``"an HTML page"``), if it is
    plainly not a NIfTI image; None when it might be one."""
    with open(path, "rb") as handle:
        head = handle.read(1024)
    if not head:
        return "an empty file (0 bytes), not a NIfTI image"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(1024)
        except (OSError, EOFError, zlib.error):
            return "a truncated or corrupt gzip file, not a readable NIfTI image"
        if not head:
            return "an empty gzip file, not a NIfTI image"
    if len(head) >= 4 and any(int.from_bytes(head[:4], order) in NIFTI_HEADER_SIZES for order in ("little", "big")):
        return None
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text[:200]:
        return "an HTML or XML page (a download that saved the web page?), not a NIfTI image"
    if head[:2] == b"PK":
        return "a zip archive, not a NIfTI image"
    if head[128:132] == b"DICM":
        return "a DICOM file, not a NIfTI image; convert it first (dcm2niix)"
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head[:256]):
        return f"a text file (starts with {head[:40].decode(errors='replace')!r}), not a NIfTI image"
    return "not a NIfTI image (no NIfTI header)"


def affine_voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes in mm as the affine gives them (the lengths of its first three columns)."""
    return np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))


def load_checked(path: Path, *, allow_frames: bool = False, max_voxels: int = MAX_VOXELS) -> nib.Nifti1Image:
    """Load a NIfTI image, check it and reorient it to RAS (float32).

    A 4D file with one volume is squeezed to 3D. With ``allow_frames`` (PET) a 4D file with several frames is kept
    4D; otherwise it is an error.
    """
    path = Path(path)
    img, pixdim = _open_nifti(path)
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 4 and not allow_frames:
        raise InputError(f"{path}: a 3D image is required, this one is 4D with {shape[3]} volumes")
    if len(shape) not in (3, 4) or min(shape) < 2:
        raise InputError(f"{path}: a 3D image is required, this one has shape {shape}")
    _check_geometry(path, img, pixdim, shape, max_voxels)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        raise InputError(f"{path}: the image data cannot be read (truncated or corrupt file: {exc})") from None
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: the image contains NaN or infinite values")
    if not np.any(data):
        raise InputError(f"{path}: the image is empty (all zeros)")
    if data.min() == data.max():
        raise InputError(f"{path}: the image is constant (every voxel is {data.flat[0]:g}): there is no anatomy")
    if data.max() <= 0:
        raise InputError(
            f"{path}: the image has no positive intensity (maximum {data.max():g}); "
            "a T1w or PET magnitude image is positive"
        )
    checked = nib.Nifti1Image(data, img.affine)
    checked.header.set_xyzt_units("mm", "sec")
    return nib.as_closest_canonical(checked)


def _open_nifti(path: Path) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    """The image (header only, data not read) and its stored pixdim; what is not a NIfTI file is named."""
    require_file(path)
    what = describe_non_nifti(path)
    if what is not None:
        raise InputError(f"{path}: {what}")
    try:
        pixdim = _stored_pixdim(path)
    except Exception as exc:  # noqa: BLE001 - a header nibabel cannot parse
        raise InputError(f"{path}: not a readable NIfTI header ({exc})") from None
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim <= 0):  # checked before nibabel quietly sets them to 1
        raise InputError(
            f"{path}: the header's voxel sizes (pixdim) {_mm(pixdim)} are zero, negative or "
            "not numbers; the header is broken"
        )
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for files it cannot read
        raise InputError(f"{path}: not a readable NIfTI image ({exc})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return img, pixdim


def require_head_sized(path: Path, img: nib.spatialimages.SpatialImage) -> None:
    """An image narrower than a head on some axis cannot be a T1w of a brain (HD-BET would find nothing)."""
    field_of_view = np.asarray(img.shape[:3], dtype=float) * affine_voxel_sizes(img.affine)
    if np.any(field_of_view < MIN_FIELD_OF_VIEW_MM):
        raise InputError(
            f"{path}: the field of view {' x '.join(f'{v:.0f}' for v in field_of_view)} mm is too small "
            f"to hold a brain (at least {MIN_FIELD_OF_VIEW_MM:g} mm on every axis)"
        )


def _stored_pixdim(path: Path) -> np.ndarray:
    """The voxel sizes as stored: nibabel replaces zeros by 1 mm (with a message) when it loads a header."""
    with nib.openers.ImageOpener(str(path)) as handle:
        nifti2 = NIFTI_HEADER_SIZES[1] in (int.from_bytes(handle.read(4), order) for order in ("little", "big"))
        handle.seek(0)
        header_class = nib.Nifti2Header if nifti2 else nib.Nifti1Header
        header = header_class.from_fileobj(handle, check=False)
    return np.asarray(header["pixdim"][1:4], dtype=float)


def _mm(values: np.ndarray) -> str:
    return " x ".join(f"{float(v):.4g}" for v in values) + " mm"


def _check_geometry(
    path: Path, img: nib.spatialimages.SpatialImage, pixdim: np.ndarray, shape: tuple[int, ...], max_voxels: int
) -> None:
    """Voxel sizes (pixdim and affine), voxel count and field of view, from the header alone."""
    if not np.all(np.isfinite(img.affine)) or abs(np.linalg.det(img.affine[:3, :3])) < 1e-6:
        raise InputError(f"{path}: the voxel-to-world affine is not invertible")
    zooms = affine_voxel_sizes(img.affine)
    low, high = VOXEL_SIZE_RANGE_MM
    if np.any(zooms < low) or np.any(zooms > high):
        raise InputError(f"{path}: voxel sizes {_mm(zooms)} (from the affine) are outside {low}..{high} mm")
    if not np.allclose(zooms, pixdim, rtol=0.01):
        log.warning(
            "%s: the header's pixdim %s and the affine's voxel sizes %s differ; the affine is used",
            path,
            _mm(pixdim),
            _mm(zooms),
        )
    nvoxels = int(np.prod(shape, dtype=np.int64))
    if nvoxels > max_voxels:
        raise InputError(f"{path}: {nvoxels} voxels exceed the limit of {max_voxels}")
    field_of_view = np.asarray(shape[:3], dtype=float) * zooms
    if float(np.prod(field_of_view)) > max_voxels:
        raise InputError(
            f"{path}: the field of view {' x '.join(f'{v:.0f}' for v in field_of_view)} mm is too large "
            f"(over {max_voxels} mm3, what 1 mm resampling can hold)"
        )


def sidecar_path(image_path: Path) -> Path:
    """The BIDS JSON sidecar next to an image."""
    name = Path(image_path).name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
    return Path(image_path).with_name(stem + ".json")
