"""Bad input files give one clear InputError naming the file; good ones are loaded as RAS float32."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_jdam.errors import InputError
from bids_jdam.preprocess.io import load_checked
from bids_jdam.preprocess.pet import static_pet


def _save(path: Path, data: np.ndarray, zooms=(2.0, 2.0, 2.0)) -> Path:
    img = nib.Nifti1Image(data.astype(np.float32), np.diag([*zooms, 1.0]))
    img.header.set_zooms(tuple(zooms) + (1.0,) * (data.ndim - 3))
    nib.save(img, str(path))
    return path


def _volume(shape=(12, 14, 10)) -> np.ndarray:
    return np.random.default_rng(0).uniform(1, 2, size=shape).astype(np.float32)


def _assert_one_line_naming(exc: pytest.ExceptionInfo, path: Path, words: str) -> None:
    message = str(exc.value)
    assert str(path) in message and "\n" not in message
    assert words in message


def test_2d_image_is_rejected(tmp_path):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "3D image is required")


def test_nan_values_are_rejected(tmp_path):
    data = _volume()
    data[3, 3, 3] = np.nan
    path = _save(tmp_path / "nan.nii.gz", data)
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "NaN")


def test_truncated_gzip_is_rejected(tmp_path):
    good = _save(tmp_path / "good.nii.gz", _volume((40, 40, 40)))
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "truncated")


def test_non_nifti_file_is_rejected(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("this is not an image\n" * 30)
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "NIfTI")


def test_missing_file_is_rejected(tmp_path):
    path = tmp_path / "absent.nii.gz"
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "not found")


@pytest.mark.parametrize("zooms", [(0.001, 1.0, 1.0), (1.0, 1.0, 50.0)])
def test_absurd_voxel_sizes_are_rejected(tmp_path, zooms):
    path = _save(tmp_path / "zooms.nii.gz", _volume(), zooms)
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "voxel sizes")


def test_several_volumes_are_rejected_for_t1w(tmp_path):
    path = _save(tmp_path / "series.nii.gz", _volume((12, 14, 10, 3)))
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "3 volumes")


def test_single_volume_4d_is_squeezed_and_reoriented_to_ras(tmp_path):
    data = _volume((12, 14, 10, 1))
    img = nib.Nifti1Image(data, np.diag([-2.0, 2.0, 2.0, 1.0]))  # LAS storage
    path = tmp_path / "one.nii.gz"
    nib.save(img, str(path))
    loaded = load_checked(path)
    assert loaded.shape == (12, 14, 10)
    assert nib.aff2axcodes(loaded.affine) == ("R", "A", "S")
    assert np.allclose(np.asarray(loaded.dataobj), data[::-1, :, :, 0])


def test_size_limit_is_checked_from_the_header_before_reading_data(tmp_path):
    """A header that claims 2000^3 voxels is rejected although the file holds almost no data."""
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_qform(np.eye(4), code=1)
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    with pytest.raises(InputError) as exc:
        load_checked(path)
    _assert_one_line_naming(exc, path, "exceed the limit")


def test_dynamic_pet_needs_frame_times_and_averages_late_frames(tmp_path):
    data = np.stack([_volume() * k for k in (1, 2, 3, 4)], axis=3)
    path = _save(tmp_path / "sub-01_pet.nii.gz", data)
    img = load_checked(path, allow_frames=True)
    with pytest.raises(InputError) as exc:
        static_pet(img, path)
    _assert_one_line_naming(exc, path, "FrameTimesStart")
    (tmp_path / "sub-01_pet.json").write_text('{"FrameTimesStart": [0, 600, 1800, 2400]}')
    static, frames = static_pet(img, path)
    assert frames == [2, 3]
    assert np.allclose(np.asarray(static.dataobj), np.asarray(img.dataobj)[..., 2:].mean(axis=3))
