"""Bad inputs end in one clear line naming the file, a non-zero exit and no outputs for the failed participant."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_jdam.cli.run import main
from bids_jdam.config import small_config
from bids_jdam.errors import InputError, one_line
from bids_jdam.io import atomic
from bids_jdam.preprocess.pipeline import preprocess_t1w

FAST = ["--sampler", "heun", "--steps", "2", "--skip-bids-validation"]


def _one_subject_copy(phantom: Path, tmp_path: Path) -> tuple[Path, Path]:
    bids = tmp_path / "bids"
    shutil.copytree(phantom, bids, ignore=shutil.ignore_patterns("derivatives", "sub-02", "sub-03", "sub-04"))
    return bids, bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz"


def _write(path: Path, data: np.ndarray, zooms=(3.0, 3.0, 3.0), pixdim=None) -> None:
    affine = np.diag([*zooms[:3], 1.0])
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    if pixdim is not None:
        img.header["pixdim"][1:4] = pixdim
    nib.save(img, str(path))


def _head_sized(value: float | np.ndarray = 1.0) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, np.float32), (40, 40, 40)).copy()


def _noise_head() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 100, (40, 40, 40)).astype(np.float32)


def _one_line(err: str) -> bool:
    return err.strip().count("\n") == 0 and "Traceback" not in err


def _nan(path):
    data = np.ones((20, 20, 20), np.float32)
    data[5, 5, 5] = np.nan
    _write(path, data)


def _unreadable_if_possible(path):
    path.write_bytes(b"\x1f\x8b truncated gzip")


def _html_page(path):
    with gzip.open(path, "wb") as handle:  # bids-examples' pet002 ships such a page under a .nii name
        handle.write(b"<!DOCTYPE html>\n<html><head><title>OpenNeuro</title></head></html>\n")


# case -> (how the T1w is broken, what the error line must say about it)
BAD_T1W = {
    "zero-byte": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "not-nifti": (lambda p: p.write_bytes(b"hello, this is not an image"), "a text file"),
    "html": (_html_page, "HTML"),
    "truncated": (_unreadable_if_possible, "truncated or corrupt gzip"),
    "2d": (lambda p: _write(p, np.ones((20, 20), np.float32)), "3D image is required"),
    "5d": (lambda p: _write(p, np.ones((8, 8, 8, 2, 2), np.float32)), "3D image is required"),
    "nan": (_nan, "NaN"),
    "absurd-voxels": (lambda p: _write(p, np.ones((20, 20, 20), np.float32), zooms=(40.0, 40.0, 40.0)), "outside"),
    "pixdim-zero": (lambda p: _write(p, _noise_head(), pixdim=(0.0, 0.0, 0.0)), "pixdim"),
    "huge-sform-behind-3mm-pixdim": (
        lambda p: _write(p, _noise_head(), zooms=(1e6, 1e6, 1e6), pixdim=(3.0, 3.0, 3.0)),
        "from the affine",
    ),
    "constant": (lambda p: _write(p, _head_sized(7.0)), "constant"),
    "all-negative": (lambda p: _write(p, -_noise_head() - 1), "no positive intensity"),
    "tiny": (lambda p: _write(p, np.random.default_rng(0).uniform(1, 2, (8, 8, 8))), "too small to hold a brain"),
}


@pytest.mark.parametrize("case", sorted(BAD_T1W))
def test_bad_t1w_is_refused_in_one_line_naming_it(case, tmp_path):
    """Each broken T1w stops the preprocessing at its first step with the line the app prints."""
    t1w = tmp_path / "sub-01_T1w.nii.gz"
    make, says = BAD_T1W[case]
    make(t1w)
    with pytest.raises(InputError) as refused:
        preprocess_t1w(t1w, tmp_path / "work", small_config(), subject_label="01")
    line = one_line(refused.value)
    assert says in line and str(t1w) in line and "\n" not in line


# Through the whole CLI: one file that is no image at all, one image with no anatomy.
CLI_CASES = ("html", "constant")


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_t1w_gives_one_clear_line(case, phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids, t1w = _one_subject_copy(phantom_dataset, tmp_path)
    t1w.unlink()
    make, says = BAD_T1W[case]
    make(t1w)
    out = tmp_path / "out"
    rc = main([str(bids), str(out), "participant", "--model", str(tiny_model_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 1
    failure = [line for line in err.splitlines() if line.startswith("bids-jdam: sub-01 failed")]
    assert len(failure) == 1 and says in failure[0] and str(t1w) in failure[0], err
    assert "Traceback" not in err
    assert not (out / "sub-01").exists()


def test_symlink_loop_is_reported(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids, t1w = _one_subject_copy(phantom_dataset, tmp_path)
    t1w.unlink()
    loop = t1w.with_name("loop.nii.gz")
    loop.symlink_to(t1w)
    t1w.symlink_to(loop)
    rc = main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_model_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "symlink loop" in err


def test_malformed_filter_file(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    filters = tmp_path / "filters.json"
    filters.write_text("{not json")
    rc = main(
        [
            str(phantom_dataset),
            str(tmp_path / "out"),
            "participant",
            "--bids-filter-file",
            str(filters),
            "--model",
            str(tiny_model_dir),
            *FAST,
        ]
    )
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


def test_invalid_json_sidecar_without_validation_names_the_file(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids, t1w = _one_subject_copy(phantom_dataset, tmp_path)
    sidecar = t1w.with_name("sub-01_T1w.json")
    sidecar.write_text('{"MagneticFieldStrength": 3,')
    rc = main([str(bids), str(tmp_path / "out"), "participant", "--model", str(tiny_model_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 1 and _one_line(err) and str(sidecar) in err and "not valid JSON" in err


def test_read_only_output_is_one_line_before_any_work(phantom_dataset, tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Root ignores permission bits, so the read-only filesystem is simulated where the app writes its probe."""

    def read_only(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(atomic, "write_with", read_only)
    out = tmp_path / "out"
    rc = main([str(phantom_dataset), str(out), "participant", "--model", str(tiny_model_dir), *FAST])
    err = capsys.readouterr().err
    assert rc == 1 and _one_line(err) and "not writable (Read-only file system)" in err and str(out) in err


@pytest.mark.parametrize(
    "option, value",
    [
        ("--num-samples", "0"),
        ("--omp-nthreads", "0"),
        ("--steps", "1"),
        ("--nprocs", "0"),
        ("--mem-gb", "0"),
        ("--num-samples", "two"),
    ],
)
def test_bad_numeric_options_are_usage_errors(option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), str(tmp_path / "out"), "participant", option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {option}" in err.strip().splitlines()[-1]


def _run_until_model(bids: Path, model: Path, tmp_path: Path, *options: str) -> tuple[int, Path]:
    work = tmp_path / "work"
    rc = main(
        [
            str(bids),
            str(tmp_path / "out"),
            "participant",
            "--model",
            str(model),
            "-w",
            str(work),
            "--skip-bids-validation",
            *options,
        ]
    )
    return rc, work


def test_unknown_sampler_is_refused_before_preprocessing(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    rc, work = _run_until_model(phantom_dataset, tiny_model_dir, tmp_path, "--sampler", "euler")
    err = capsys.readouterr().err
    assert rc == 1 and _one_line(err) and "--sampler euler" in err and "ancestral" in err
    assert not work.exists()


def _rehash(model: Path) -> None:
    card = json.loads((model / "model_card.json").read_text())
    card["sha256"]["weights.safetensors"] = hashlib.sha256((model / "weights.safetensors").read_bytes()).hexdigest()
    (model / "model_card.json").write_text(json.dumps(card))


def _edit_json(name: str, edit):
    def apply(model: Path) -> None:
        path = model / name
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return apply


def _set(section: str, key: str, value):
    def edit(config: dict) -> dict:
        config[section][key] = value
        return config

    return edit


def _pickled_weights(model: Path) -> None:
    (model / "weights.safetensors").write_bytes(pickle.dumps({"net.w": [1.0, 2.0]}))
    _rehash(model)  # a swapped file whose checksum was updated too: the format check still refuses it


def _healthy_sd_model_without_reference(model: Path) -> None:
    from bids_jdam.synthesis.error_model import FEATURES, HEALTHY_FEATURES, ErrorModel

    names = FEATURES + HEALTHY_FEATURES
    sd_model = ErrorModel((0.0,) * len(names), 1.0, 0.9, 2, 100, features=names).to_dict()
    edit = _edit_json(
        "model_card.json",
        lambda card: {k: v for k, v in card.items() if k != "healthy_reference"} | {"single_sample_sd": sd_model},
    )
    edit(model)


def _view_sd_model_without_a_regression_mean(model: Path) -> None:
    from bids_jdam.synthesis.error_model import FEATURES, VIEW_FEATURES, ErrorModel

    names = FEATURES + VIEW_FEATURES
    sd_model = ErrorModel((0.0,) * len(names), 1.0, 0.9, 2, 100, features=names).to_dict()
    _edit_json("model_card.json", lambda card: {**card, "single_sample_sd": sd_model})(model)


BAD_MODELS = {
    "card-is-a-list": (_edit_json("model_card.json", lambda card: []), "model_card.json: must hold a JSON object"),
    "sha256-not-hex": (
        _edit_json("model_card.json", lambda card: {**card, "sha256": {"weights.safetensors": "abc"}}),
        "must be 64 hex digits",
    ),
    "sha256-a-string": (_edit_json("model_card.json", lambda card: {**card, "sha256": "abc"}), "no sha256"),
    "config-is-a-list": (_edit_json("config.json", lambda config: [1, 2]), "config.json: must hold a JSON object"),
    "absurd-channels": (_edit_json("config.json", _set("network", "channels", 100000)), "weights do not fit"),
    "slice-size-a-string": (
        _edit_json("config.json", _set("grid", "slice_size", "64")),
        "GridConfig.slice_size must be int",
    ),
    "absurd-slice-size": (_edit_json("config.json", _set("grid", "slice_size", 100000)), "slice_size 100000"),
    "unknown-method": (_edit_json("config.json", lambda config: {**config, "method": "gan"}), "unknown method"),
    "pickle": (_pickled_weights, "pickle"),
    "training-subjects-wrong-type": (
        _edit_json("model_card.json", lambda card: {**card, "training_data": {"subjects": {"train": 3}}}),
        "training_data.subjects.train",
    ),
    "single-sample-sd-unknown-features": (
        _edit_json("model_card.json", lambda card: {**card, "single_sample_sd": {"features": ["x"]}}),
        "malformed single_sample_sd",
    ),
    "single-sample-sd-without-its-reference": (_healthy_sd_model_without_reference, "healthy-control reference"),
    "single-sample-sd-views-without-a-regression-mean": (_view_sd_model_without_a_regression_mean, "regression means"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_malformed_model_directory_is_one_line_before_preprocessing(
    case, phantom_dataset, tiny_model_dir, tmp_path, capsys
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    break_it, says = BAD_MODELS[case]
    break_it(model)
    rc, work = _run_until_model(phantom_dataset, model, tmp_path)
    err = capsys.readouterr().err
    assert rc == 1 and _one_line(err) and says in err and str(model) in err, err
    assert not work.exists()
