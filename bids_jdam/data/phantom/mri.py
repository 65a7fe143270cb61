"""The native T1w image: the warped head with a bias field, Rician noise and scanner scaling (or MP2RAGE UNIT1).

The image is built slab by slab (a few slices at a time) so that memory stays small at 0.7 mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_jdam.data.phantom.anatomy import FineTemplate, SubjectAnatomy
from bids_jdam.data.phantom.geometry import SubjectPlacement, centred_grid, native_to_template_index, smooth_field
from bids_jdam.data.phantom.model import AcquisitionDraw, MRIProtocol

SLAB_SLICES = 24
UNIT1_MAX = 4095
UNIT1_WHITE_MATTER = 0.78  # fraction of the UNIT1 range reached by white matter
UNIT1_NOISE = 0.02  # UNIT1 noise (fraction of the range) where the proton density is that of tissue


def synthesize_t1w(
    anatomy: SubjectAnatomy,
    fine: FineTemplate,
    placement: SubjectPlacement,
    protocol: MRIProtocol,
    acquisition: AcquisitionDraw,
) -> tuple[np.ndarray, np.ndarray]:
    """The T1w voxels (int16 MPRAGE or uint16 UNIT1) and their affine, at the protocol's native resolution."""
    shape, affine = centred_grid(protocol.voxel_mm, protocol.fov_mm)
    rng = np.random.default_rng(acquisition.seed)
    bias = smooth_field(rng, shape, 5, protocol.bias_std)
    mp2rage = protocol.sequence == "MP2RAGE"
    out = np.empty(shape, dtype=np.uint16 if mp2rage else np.int16)
    head = _head_voxels(anatomy, fine, placement, affine, shape)
    for start in range(0, shape[2], SLAB_SLICES):
        slab = slice(start, min(start + SLAB_SLICES, shape[2]))
        coords = native_to_template_index(placement, affine, shape, fine.affine, slab)
        inside = head[..., slab]
        clean = np.zeros(inside.shape, dtype=np.float32)
        clean[inside] = ndimage.map_coordinates(anatomy.head_t1_fine, coords[:, inside], order=1, cval=0.0)
        clean /= fine.t1_of["wm"]  # white matter = 1
        noise = rng.standard_normal((2,) + clean.shape, dtype=np.float32)
        if mp2rage:
            out[..., slab] = _unit1(clean, bias[..., slab], noise[0], protocol.snr)
        else:
            out[..., slab] = _rician(clean * bias[..., slab], noise, protocol.snr, acquisition.t1_scale)
    return out, affine


def _head_voxels(anatomy, fine, placement, affine, shape) -> np.ndarray:
    """Native voxels that may hold head signal: sampled every 4 voxels, dilated by 8 mm, then repeated. The air
    outside needs no interpolation (it is noise only), which saves a third of the image's cost."""
    step = 4
    coarse_shape = tuple(-(-n // step) for n in shape)
    coarse_affine = affine @ np.diag([step, step, step, 1.0])
    coords = native_to_template_index(placement, coarse_affine, coarse_shape, fine.affine, slice(0, coarse_shape[2]))
    occupied = ndimage.map_coordinates(anatomy.head_t1_fine, coords, order=1, cval=0.0) > 0
    occupied = ndimage.binary_dilation(occupied, iterations=2)
    full = occupied.repeat(step, axis=0).repeat(step, axis=1).repeat(step, axis=2)
    return full[: shape[0], : shape[1], : shape[2]]


def _rician(signal: np.ndarray, noise: np.ndarray, snr: float, scale: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels, in scanner units."""
    sigma = 1.0 / snr
    magnitude = np.sqrt((signal + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2)
    return np.clip(np.rint(magnitude * scale), 0, np.iinfo(np.int16).max).astype(np.int16)


def _unit1(clean: np.ndarray, bias: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """MP2RAGE's uniform image: T1 contrast with most receive bias divided out, noise exploding where there is no
    signal (air, skull), which gives the salt-and-pepper background that 7T users know."""
    proton_density = np.clip(clean / 0.05, 0.02, 1.0)
    residual_bias = np.sqrt(bias)  # the ratio of the two inversions cancels receive bias, not transmit bias
    uniform = UNIT1_WHITE_MATTER * clean * residual_bias + UNIT1_NOISE * (22.0 / snr) * noise / proton_density
    return np.rint(np.clip(uniform, 0.0, 1.0) * UNIT1_MAX).astype(np.uint16)
