"""Where a subject's head sits in each scanner: the transforms that the phantom applies (and stores as truth).

Convention (RAS millimetres). A point ``p`` in the T1w scanner space maps to the template point
``q = inv(A) @ (p + u(p))``: ``u`` is a smooth displacement field (the subject's non-linear shape), stored on a
coarse grid in scanner space and read by trilinear interpolation; ``A`` is the template-to-scanner affine (head
size, rotation, translation). A PET voxel's world point ``p_pet`` is first moved into T1w scanner space with the
rigid ``P`` (``p = P @ p_pet``): the head moved between the two scanners. Template images are resampled into a
native space by evaluating ``q`` at every native voxel (a pull-back); that is what ``from-<template>_to-T1w``
means in the file names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

WARP_SPACING_MM = 8.0
WARP_BOX_MM = ((-120.0, 120.0), (-150.0, 130.0), (-110.0, 130.0))


def rigid_affine(rotation_deg, translation_mm, scale=(1.0, 1.0, 1.0)) -> np.ndarray:
    """4x4 affine: scale, then rotate (xyz Euler angles, degrees), then translate."""
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix() @ np.diag(scale)
    affine[:3, 3] = translation_mm
    return affine


def centred_grid(voxel_mm: float, fov_mm, centre_mm=(0.0, 0.0, 10.0)) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of an axis-aligned field of view centred on ``centre_mm``."""
    shape = tuple(int(round(f / voxel_mm)) for f in fov_mm)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = np.asarray(centre_mm) - voxel_mm * (np.asarray(shape) - 1) / 2.0
    return shape, affine  # type: ignore[return-value]


@dataclass
class SubjectPlacement:
    """The transforms of one subject and session (see the module docstring)."""

    template_to_scanner: np.ndarray  # A
    pet_to_t1w: np.ndarray  # P
    displacement: np.ndarray  # u on the warp grid, shape (X, Y, Z, 3), mm
    displacement_affine: np.ndarray  # voxel -> T1w scanner mm of the warp grid


def smooth_displacement(rng: np.random.Generator, amplitude_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A random smooth displacement field (a few mm, correlation length ~3 cm) on the warp grid in scanner space."""
    shape = tuple(int(round((hi - lo) / WARP_SPACING_MM)) + 1 for lo, hi in WARP_BOX_MM)
    affine = np.diag([WARP_SPACING_MM] * 3 + [1.0])
    affine[:3, 3] = [lo for lo, _ in WARP_BOX_MM]
    field = np.stack(
        [ndimage.gaussian_filter(rng.standard_normal(shape), 24.0 / WARP_SPACING_MM, mode="wrap") for _ in range(3)],
        axis=-1,
    )
    field *= amplitude_mm / max(float(field.std()), 1e-9)
    return field.astype(np.float32), affine


def native_to_template_index(
    placement: SubjectPlacement,
    native_affine: np.ndarray,
    shape,
    template_affine: np.ndarray,
    slab: slice,
    from_pet: bool = False,
) -> np.ndarray:
    """Template voxel coordinates (3, x, y, slab) of a slab of native voxels: ``q`` above, in template indices."""
    to_template = np.linalg.inv(template_affine) @ np.linalg.inv(placement.template_to_scanner)
    native_to_t1w = (placement.pet_to_t1w if from_pet else np.eye(4)) @ native_affine
    ijk = np.indices((shape[0], shape[1], slab.stop - slab.start), dtype=np.float32)
    ijk[2] += slab.start
    points = np.tensordot(native_to_t1w[:3, :3].astype(np.float32), ijk, axes=(1, 0))
    points += native_to_t1w[:3, 3].astype(np.float32).reshape(3, 1, 1, 1)
    points += _displacement_at(placement, points, native_to_t1w, shape, slab, axis_aligned=not from_pet)
    coords = np.tensordot(to_template[:3, :3].astype(np.float32), points, axes=(1, 0))
    coords += to_template[:3, 3].astype(np.float32).reshape(3, 1, 1, 1)
    return coords


def _displacement_at(placement, points, native_to_t1w, shape, slab, axis_aligned: bool) -> np.ndarray:
    """u at the given scanner points, trilinear either way: by matrix products when the native grid's axes are the
    scanner axes (the T1w grid, ``axis_aligned``), else point by point (the rotated PET grid)."""
    warp_inv = np.linalg.inv(placement.displacement_affine)
    if axis_aligned:
        # Warp-grid coordinates are affine in each native axis separately: interpolate with matrix products.
        start = warp_inv @ native_to_t1w @ np.array([0.0, 0.0, slab.start, 1.0])
        step = np.diag(warp_inv[:3, :3] @ native_to_t1w[:3, :3])
        n = (shape[0], shape[1], slab.stop - slab.start)
        grid_shape = np.asarray(placement.displacement.shape[:3])
        lo = np.clip(np.floor(start[:3]).astype(int), 0, grid_shape - 2)
        hi = np.clip(np.ceil(start[:3] + step * (np.asarray(n) - 1)).astype(int) + 2, lo + 2, grid_shape)
        region = placement.displacement[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        out = np.empty((3,) + n, dtype=np.float32)
        for c in range(3):
            out[c] = separable_resample(region[..., c], start[:3] - lo, step, n)
        return out
    coords = np.tensordot(warp_inv[:3, :3].astype(np.float32), points, axes=(1, 0))
    coords += warp_inv[:3, 3].astype(np.float32).reshape(3, 1, 1, 1)
    return np.stack(
        [
            ndimage.map_coordinates(placement.displacement[..., c], coords, order=1, mode="nearest", output=np.float32)
            for c in range(3)
        ]
    )


def separable_resample(volume: np.ndarray, start, step, n) -> np.ndarray:
    """Trilinear samples of ``volume`` at index start + step * i along each axis, by three matrix products.

    Much faster than point-wise interpolation when the sample grid is aligned with the volume's axes.
    """
    m0, m1, m2 = (_interpolation_matrix(start[a], step[a], n[a], volume.shape[a]) for a in range(3))
    n0, n1, n2 = volume.shape
    out = (m0 @ volume.astype(np.float32).reshape(n0, n1 * n2)).reshape(n[0], n1, n2)
    out = np.matmul(m1, out)
    return (out.reshape(n[0] * n[1], n2) @ m2.T).reshape(n)


def _interpolation_matrix(start: float, step: float, n_out: int, n_in: int) -> np.ndarray:
    """(n_out x n_in) linear interpolation weights at positions start + step * i (clamped to the volume)."""
    position = np.clip(start + step * np.arange(n_out), 0, n_in - 1)
    low = np.minimum(np.floor(position).astype(int), n_in - 2)
    weight = (position - low).astype(np.float32)
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    matrix[np.arange(n_out), low] = 1 - weight
    matrix[np.arange(n_out), low + 1] = weight
    return matrix


def smooth_field(rng: np.random.Generator, shape, control_points: int, std: float) -> np.ndarray:
    """exp of a random smooth field (std ``std`` of its log) over ``shape``: a bias field."""
    coarse = ndimage.gaussian_filter(rng.standard_normal((control_points,) * 3), 0.8, mode="nearest")
    coarse *= std / max(float(coarse.std()), 1e-9)
    step = (np.asarray(shape) - 1) / (control_points - 1)
    log_field = np.empty(shape, dtype=np.float32)
    log_field[...] = separable_resample(coarse.astype(np.float32), np.zeros(3), 1.0 / step, shape)
    return np.exp(log_field, out=log_field)
