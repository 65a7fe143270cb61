"""Volume <-> square 2D slices in the axial, coronal and sagittal planes, by padding only.

A volume on the model grid is a RAS array indexed (x, y, z). A plane's slices are taken along its normal and keep
the two remaining axes in array order (no flips or rotations), then are zero-padded, centred, to
``slice_size x slice_size``. Padding never stretches anatomy, and :func:`slices_to_volume` crops the same margins
back, so the two functions are exact inverses.
"""

from __future__ import annotations

import numpy as np

# Axis of the volume along each plane's normal (RAS: x = sagittal, y = coronal, z = axial).
PLANE_AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
PLANES = tuple(PLANE_AXES)

# The paper's "30th to 60th slice" of SPM's 2 mm MNI grid (91x109x91, origin -90, -126, -72 mm), in millimetres
# along each plane's normal: index i (1-based) sits at origin + 2 (i - 1).
PAPER_SLICE_RANGE_MM = {"sagittal": (-32.0, 28.0), "coronal": (-68.0, -8.0), "axial": (-14.0, 46.0)}


def _axis(plane: str) -> int:
    if plane not in PLANE_AXES:
        raise ValueError(f"unknown plane {plane!r}; expected one of {', '.join(PLANES)}")
    return PLANE_AXES[plane]


def _padding(in_plane_shape: tuple[int, int], size: int, plane: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Centred (before, after) margins that pad an in-plane shape to ``size x size``."""
    if max(in_plane_shape) > size:
        raise ValueError(
            f"{plane} slices of {in_plane_shape[0]}x{in_plane_shape[1]} voxels do not fit a {size}x{size} slice; "
            "use a larger grid.slice_size or a coarser grid.spacing_mm"
        )
    return tuple(((size - n) // 2, size - n - (size - n) // 2) for n in in_plane_shape)  # type: ignore[return-value]


def volume_to_slices(volume: np.ndarray, plane: str, size: int) -> np.ndarray:
    """All slices of ``volume`` along ``plane``, zero-padded to ``[n_slices, size, size]``."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    stacked = np.moveaxis(volume, _axis(plane), 0)
    rows, cols = _padding(stacked.shape[1:], size, plane)
    return np.pad(stacked, ((0, 0), rows, cols))


def pad_slice(image: np.ndarray, plane: str, size: int) -> np.ndarray:
    """One in-plane image (as cut from a volume along ``plane``), zero-padded to ``size x size``."""
    rows, cols = _padding(image.shape, size, plane)
    return np.pad(image, (rows, cols))


def cut_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The unpadded slice ``index`` of ``volume`` along ``plane``."""
    return np.take(volume, index, axis=_axis(plane))


def slices_to_volume(
    slices: np.ndarray, plane: str, shape: tuple[int, int, int], indices: np.ndarray | None = None
) -> np.ndarray:
    """Undo :func:`volume_to_slices`: crop the padding and stack along ``plane`` into a volume of ``shape``.

    With ``indices``, ``slices`` hold only those slice positions and the rest of the volume is zero.
    """
    axis = _axis(plane)
    in_plane = tuple(n for i, n in enumerate(shape) if i != axis)
    (r0, r1), (c0, c1) = _padding(in_plane, slices.shape[-1], plane)
    cropped = slices[:, r0 : slices.shape[1] - r1, c0 : slices.shape[2] - c1]
    if indices is None:
        if len(cropped) != shape[axis]:
            raise ValueError(f"{len(cropped)} {plane} slices cannot fill a volume with {shape[axis]} of them")
        stacked = cropped
    else:
        stacked = np.zeros((shape[axis], *in_plane), dtype=slices.dtype)
        stacked[np.asarray(indices)] = cropped
    return np.ascontiguousarray(np.moveaxis(stacked, 0, axis))


def brain_slice_indices(mask: np.ndarray, plane: str, min_voxels: int = 1) -> np.ndarray:
    """Indices of the slices along ``plane`` that hold at least ``min_voxels`` brain voxels."""
    axis = _axis(plane)
    other = tuple(i for i in range(3) if i != axis)
    counts = np.asarray(mask, dtype=bool).sum(axis=other)
    return np.flatnonzero(counts >= min_voxels)


def indices_in_range_mm(
    affine: np.ndarray, shape: tuple[int, int, int], plane: str, range_mm: tuple[float, float]
) -> np.ndarray:
    """Indices of the slices along ``plane`` whose world coordinate (mm) lies in ``range_mm`` (axis-aligned grid)."""
    axis = _axis(plane)
    low, high = sorted(range_mm)
    positions = affine[axis, axis] * np.arange(shape[axis]) + affine[axis, 3]
    return np.flatnonzero((positions >= low - 1e-6) & (positions <= high + 1e-6))


def select_slices(
    mask: np.ndarray,
    affine: np.ndarray,
    plane: str,
    min_voxels: int = 1,
    range_mm: dict[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """Slices that contain brain, restricted to the plane's millimetre range when one is configured."""
    indices = brain_slice_indices(mask, plane, min_voxels)
    if range_mm is not None and plane in range_mm:
        indices = np.intersect1d(indices, indices_in_range_mm(affine, mask.shape, plane, range_mm[plane]))
    return indices
