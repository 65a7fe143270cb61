"""Bad inputs end in one clear line naming the file, a non-zero exit and no outputs for the failed participant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_jdam.cli.run import main

FAST = ["--sampler", "heun", "--steps", "2", "--skip-bids-validation"]


def _one_subject_copy(phantom: Path, tmp_path: Path) -> tuple[Path, Path]:
    bids = tmp_path / "bids"
    shutil.copytree(phantom, bids, ignore=shutil.ignore_patterns("derivatives", "sub-02", "sub-03", "sub-04"))
    return bids, bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"


def _write(path: Path, data: np.ndarray, zooms=(3.0, 3.0, 3.0)) -> None:
    affine = np.diag([*zooms[:3], 1.0])
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    nib.save(img, str(path))


def _nan(path):
    data = np.ones((20, 20, 20), np.float32)
    data[5, 5, 5] = np.nan
    _write(path, data)


def _unreadable_if_possible(path):
    path.write_bytes(b"\x1f\x8b truncated gzip")


BAD_T1W = {
    "zero-byte": lambda p: p.write_bytes(b""),
    "not-nifti": lambda p: p.write_bytes(b"hello, this is not an image"),
    "truncated": _unreadable_if_possible,
    "2d": lambda p: _write(p, np.ones((20, 20), np.float32)),
    "5d": lambda p: _write(p, np.ones((8, 8, 8, 2, 2), np.float32)),
    "nan": _nan,
    "absurd-voxels": lambda p: _write(p, np.ones((20, 20, 20), np.float32), zooms=(40.0, 40.0, 40.0)),
}


@pytest.mark.parametrize("case", sorted(BAD_T1W))
def test_bad_t1w_gives_one_clear_line(case, phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids, t1w = _one_subject_copy(phantom_dataset, tmp_path)
    t1w.unlink()
    BAD_T1W[case](t1w)
    out = tmp_path / "out"
    rc = main([str(bids), str(out), "participant", "--model", str(tiny_model_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 1
    assert "sub-01" in err and "Traceback" not in err
    assert not (out / "sub-01").exists()


def test_symlink_loop_is_reported(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids, t1w = _one_subject_copy(phantom_dataset, tmp_path)
    t1w.unlink()
    loop = t1w.with_name("loop.nii.gz")
    loop.symlink_to(t1w)
    t1w.symlink_to(loop)
    rc = main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_model_dir), *FAST])
    assert rc == 1 and "Traceback" not in capsys.readouterr().err


def test_malformed_filter_file(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    filters = tmp_path / "filters.json"
    filters.write_text("{not json")
    rc = main([str(phantom_dataset), str(tmp_path / "out"), "participant", "--bids-filter-file", str(filters),
               "--model", str(tiny_model_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 1 and "filters.json" in err and err.strip().count("\n") == 0


def test_tampered_model_is_refused_before_loading(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    rc = main([str(phantom_dataset), str(tmp_path / "out"), "participant", "--model", str(model), *FAST])
    err = capsys.readouterr().err
    assert rc == 1 and "sha256" in err and "weights.safetensors" in err


def test_model_directory_without_card(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model_card.json").unlink()
    rc = main([str(phantom_dataset), str(tmp_path / "out"), "participant", "--model", str(model), *FAST])
    assert rc == 1 and "model_card.json" in capsys.readouterr().err


def test_empty_dataset(tmp_path, tiny_model_dir, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "empty", "BIDSVersion": "1.10.0"}))
    rc = main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_model_dir), *FAST])
    assert rc == 1 and "Traceback" not in capsys.readouterr().err
