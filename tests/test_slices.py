"""Volume <-> slice conversion: exact inverse, centred padding, brain and millimetre slice selection."""

import numpy as np
import pytest

from bids_jdam.data.slices import (
    PAPER_SLICE_RANGE_MM,
    PLANES,
    brain_slice_indices,
    indices_in_range_mm,
    select_slices,
    slices_to_volume,
    volume_to_slices,
)
from bids_jdam.data.template import grid_affine, grid_shape


@pytest.mark.parametrize("plane", PLANES)
def test_round_trip_is_bit_exact(plane):
    volume = np.random.default_rng(0).normal(size=grid_shape(4.0)).astype(np.float32)
    slices = volume_to_slices(volume, plane, 64)
    assert slices.shape[1:] == (64, 64)
    assert slices.shape[0] == volume.shape[PLANES.index(plane)]
    restored = slices_to_volume(slices, plane, volume.shape)
    assert restored.dtype == volume.dtype
    assert np.array_equal(restored, volume)


def test_padding_is_centred_and_never_stretches():
    volume = np.ones((50, 59, 48), np.float32)
    axial = volume_to_slices(volume, "axial", 64)[0]  # in-plane (x, y) = 50 x 59
    rows, cols = np.flatnonzero(axial.any(axis=1)), np.flatnonzero(axial.any(axis=0))
    assert (rows[0], rows[-1]) == (7, 56)  # 7 above, 7 below
    assert (cols[0], cols[-1]) == (2, 60)  # 2 left, 3 right
    assert axial.sum() == 50 * 59


def test_grid_too_large_for_the_slice_is_a_clear_error():
    with pytest.raises(ValueError, match="do not fit a 64x64 slice"):
        volume_to_slices(np.zeros((99, 117, 95)), "coronal", 64)


def test_partial_slices_fill_only_their_positions():
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    slices = volume_to_slices(volume, "coronal", 8)
    restored = slices_to_volume(slices[[1, 3]], "coronal", volume.shape, indices=np.array([1, 3]))
    assert np.array_equal(restored[:, [1, 3]], volume[:, [1, 3]])
    assert not restored[:, [0, 2, 4]].any()


def test_brain_slice_indices_counts_voxels():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:5, 3:7, 6] = True  # 12 voxels in axial slice 6
    mask[2, 3, 8] = True  # 1 voxel in axial slice 8
    assert list(brain_slice_indices(mask, "axial")) == [6, 8]
    assert list(brain_slice_indices(mask, "axial", min_voxels=2)) == [6]
    assert list(brain_slice_indices(mask, "sagittal")) == [2, 3, 4]


def test_millimetre_range_selects_the_paper_slices():
    affine, shape = grid_affine(2.0), grid_shape(2.0)
    axial = indices_in_range_mm(affine, shape, "axial", PAPER_SLICE_RANGE_MM["axial"])
    z_mm = affine[2, 2] * axial + affine[2, 3]
    assert z_mm[0] == -14 and z_mm[-1] == 46 and len(axial) == 31
    mask = np.ones(shape, bool)
    chosen = select_slices(mask, affine, "axial", range_mm={"axial": (-14.0, 46.0)})
    assert np.array_equal(chosen, axial)
    assert len(select_slices(mask, affine, "coronal", range_mm={"axial": (-14.0, 46.0)})) == shape[1]


def test_unknown_plane_is_rejected():
    with pytest.raises(ValueError, match="unknown plane"):
        volume_to_slices(np.zeros((4, 4, 4)), "transverse", 8)
