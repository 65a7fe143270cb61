"""Killed participant runs: SIGKILL during preprocessing and during sampling leaves no partial derivatives, and a
rerun with the same work directory gives the uninterrupted run's result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# Two threads, as users run it: registration runs in its own one-thread ITK process, so it is deterministic anyway.
OPTIONS = [
    "--participant-label",
    "01",
    "--sampler",
    "heun",
    "--steps",
    "2",
    "--skip-bids-validation",
    "--omp-nthreads",
    "2",
    "--device",
    "cpu",
]
TIMEOUT_S = 600
# Fields that honestly differ between two runs of the same participant.
RUN_SPECIFIC = {"SynthesisWallTimeSeconds"}


class AppProcess:
    """``python -m bids_jdam`` as a subprocess in its own session, its output lines collected by a thread."""

    def __init__(self, bids_dir: Path, out: Path, work: Path, model: Path):
        command = [
            sys.executable,
            "-m",
            "bids_jdam",
            str(bids_dir),
            str(out),
            "participant",
            "--model",
            str(model),
            "-w",
            str(work),
            *OPTIONS,
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def kill_when(self, ready: Callable[[], bool]) -> None:
        """SIGKILL the run (its whole process group) as soon as ``ready()``; fail if it ends first."""
        deadline = time.monotonic() + TIMEOUT_S
        while not ready():
            assert self.process.poll() is None, "the run ended before the kill point:\n" + "".join(self.lines[-20:])
            assert time.monotonic() < deadline, "no kill point within the time limit"
            time.sleep(0.05)
        os.killpg(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL
        self.reader.join(timeout=10)

    def finish(self) -> str:
        assert self.process.wait(timeout=TIMEOUT_S) == 0, "".join(self.lines[-30:])
        self.reader.join(timeout=10)
        return "".join(self.lines)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def published_files(out: Path) -> list[str]:
    """Output files outside the staging folders and lock files, relative to ``out``."""
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.is_file() and not p.relative_to(out).parts[0].startswith((".staging-", ".lock-"))
    )


def assert_no_partial_participant(out: Path) -> None:
    assert published_files(out) == [".bidsignore", "dataset_description.json"]


def step_records(work: Path) -> dict[str, dict[str, str]]:
    """Step name -> sha256 of each output, from the step cache's records."""
    return {p.stem: json.loads(p.read_text())["outputs"] for p in sorted((work / "sub-01").glob("*.json"))}


def sidecar(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in RUN_SPECIFIC}


@pytest.mark.slow
def test_killed_runs_leave_nothing_and_resume_to_the_same_result(phantom_dataset, tiny_model_dir, tmp_path):
    reference_out, reference_work = tmp_path / "reference" / "out", tmp_path / "reference" / "work"
    out, work = tmp_path / "out", tmp_path / "work"
    reference = AppProcess(phantom_dataset, reference_out, reference_work, tiny_model_dir)  # runs alongside

    # (a) killed during preprocessing: brain extraction is cached, registration is writing to its scratch folder.
    first = AppProcess(phantom_dataset, out, work, tiny_model_dir)
    first.kill_when(lambda: any(p.is_dir() for p in (work / "sub-01").glob(".tmp-*")))
    assert (work / "sub-01" / "brain_extraction.json").is_file()
    assert not (work / "sub-01" / "registration.json").exists()
    assert_no_partial_participant(out)

    # (b) killed during sampling: preprocessing picks up the cached steps and finishes, the network is sampling.
    second = AppProcess(phantom_dataset, out, work, tiny_model_dir)
    second.kill_when(lambda: second.said("sampling network on"))
    assert second.said("sub-01 brain_extraction: reused cached outputs")
    assert not second.said("sampled ")
    assert_no_partial_participant(out)
    assert len(list(out.glob(".staging-sub-01-*"))) == 1  # the first run's staging folder was cleared

    # The rerun reuses all of preprocessing and completes.
    log = AppProcess(phantom_dataset, out, work, tiny_model_dir).finish()
    assert "sub-01 registration: reused cached outputs" in log
    assert not list(out.glob(".staging-*"))
    assert not list((work / "sub-01").glob(".tmp-*"))  # the killed registration's scratch folder is gone
    reference.finish()

    # Every cached step's outputs (registration included: fixed seed, one ITK thread) are bit-identical...
    assert step_records(work) == step_records(reference_work)
    # ...and so are the derivatives: the same files, the same voxels, the same sidecars up to the wall time.
    files = published_files(out)
    assert files == published_files(reference_out)
    images = [f for f in files if f.endswith(".nii.gz")]
    assert any("desc-jdam_pet" in f for f in images)
    for name in images:
        resumed, uninterrupted = nib.load(out / name), nib.load(reference_out / name)
        assert np.array_equal(resumed.affine, uninterrupted.affine), name
        assert np.array_equal(np.asarray(resumed.dataobj), np.asarray(uninterrupted.dataobj)), name
    for name in files:
        if name.endswith(".mat"):
            assert (out / name).read_bytes() == (reference_out / name).read_bytes(), name
        if name.endswith(".json") and "/figures/" not in name:
            assert sidecar(out / name) == sidecar(reference_out / name), name
