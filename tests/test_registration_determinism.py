"""Registration gives the same transforms at any thread count: it runs in a fresh one-thread ITK process."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pytest

from bids_jdam.preprocess import registration


def test_registration_runs_in_a_one_thread_itk_process(tmp_path, monkeypatch):
    seen = {}

    def fake_run(command, **kwargs):
        seen.update(command=command, env=kwargs["env"])
        return subprocess.CompletedProcess(command, 0, stdout='ANTs chatter\n{"rigid_parameters": [1.0]}\n', stderr="")

    monkeypatch.setenv(registration.ITK_THREADS_ENV, "2")
    monkeypatch.setattr(registration.subprocess, "run", fake_run)
    result = registration.register_rigid(tmp_path / "pet.nii.gz", tmp_path / "t1w.nii.gz", tmp_path / "x.mat", seed=1)
    assert result == {"rigid_parameters": [1.0]}
    assert seen["env"][registration.ITK_THREADS_ENV] == "1" and "register_rigid_here" in seen["command"]


def test_a_failing_registration_process_raises_its_last_error_line(tmp_path, monkeypatch):
    monkeypatch.setattr(
        registration.subprocess,
        "run",
        lambda command, **kwargs: subprocess.CompletedProcess(
            command, 1, stdout="", stderr="Traceback ...\nRuntimeError: ANTs wrote no *.mat transform in /w/.tmp-x\n"
        ),
    )
    with pytest.raises(RuntimeError, match="ANTs wrote no \\*.mat transform"):
        registration.register_rigid(tmp_path / "a", tmp_path / "b", tmp_path / "c.mat", seed=1)


@pytest.mark.slow
def test_two_thread_runs_give_identical_transforms(phantom_dataset, tmp_path, monkeypatch):
    """Before: SyN with 2 ITK threads gave template correlations 0.778 and 0.771 on the same input."""
    from bids_jdam.data.template import load_template

    template = load_template(4.0)
    fixed = tmp_path / "template.nii.gz"
    template.image(template.t1 * template.brain_mask).to_filename(fixed)
    moving = phantom_dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    monkeypatch.setenv(registration.ITK_THREADS_ENV, "2")
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        metadata = registration.register_brain_to_template(
            moving, fixed, out / "affine.mat", out / "warp.nii.gz", out / "inverse_warp.nii.gz", seed=1
        )
        warps = [np.asarray(nib.load(out / f).dataobj) for f in ("warp.nii.gz", "inverse_warp.nii.gz")]
        runs.append((metadata, (out / "affine.mat").read_bytes(), warps))
    assert runs[0][:2] == runs[1][:2]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][2], runs[1][2]))
