"""``--nprocs 2``: two participants in the process pool give the same derivatives as one after the other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

OPTIONS = [
    "--participant-label",
    "01",
    "02",
    "--sampler",
    "heun",
    "--steps",
    "2",
    "--skip-bids-validation",
    "--omp-nthreads",
    "1",
    "--device",
    "cpu",
]


def run_app(bids_dir: Path, root: Path, model: Path, nprocs: int) -> Path:
    out = root / "out"
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
        str(root / "work"),
        "--nprocs",
        str(nprocs),
        *OPTIONS,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 of 2 participants succeeded" in result.stdout
    return out


def derivatives(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_workers_give_the_sequential_result(phantom_dataset, tiny_model_dir, tmp_path):
    sequential = run_app(phantom_dataset, tmp_path / "sequential", tiny_model_dir, nprocs=1)
    parallel = run_app(phantom_dataset, tmp_path / "parallel", tiny_model_dir, nprocs=2)
    files = derivatives(parallel)
    assert files == derivatives(sequential)
    for subject in ("01", "02"):
        assert f"sub-{subject}/pet/sub-{subject}_trc-FDG_space-T1w_desc-jdam_pet.nii.gz" in files
        assert f"sub-{subject}.html" in files
    for name in (f for f in files if f.endswith(".nii.gz")):
        a, b = nib.load(parallel / name), nib.load(sequential / name)
        assert np.array_equal(a.affine, b.affine), name
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)), name
    for name in (f for f in files if f.endswith("_pet.json")):
        a, b = (json.loads((root / name).read_text()) for root in (parallel, sequential))
        assert {k: v for k, v in a.items() if k != "SynthesisWallTimeSeconds"} == {
            k: v for k, v in b.items() if k != "SynthesisWallTimeSeconds"
        }, name
