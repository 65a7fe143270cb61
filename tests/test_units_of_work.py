"""Each image of a participant is its own unit of work, under the participant's lock; a second run is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bids_jdam.bids.query import AnatInput
from bids_jdam.config import SamplerConfig, small_config
from bids_jdam.errors import InputError
from bids_jdam.evaluate.participant_metrics import BrainExtractionCheck, ParticipantMetrics, RegistrationCheck
from bids_jdam.io import atomic
from bids_jdam.io.locks import participant_lock
from bids_jdam.methods import METHODS
from bids_jdam.methods.model_card import ModelCard
from bids_jdam.methods.model_dir import PHANTOM_DATA, WEIGHTS
from bids_jdam.synthesis.loaded_model import LoadedModel
from bids_jdam.synthesis.provenance import ModelInfo, SamplerInfo
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.workflows import participant
from bids_jdam.workflows.app import _summarize
from bids_jdam.workflows.participant import ParticipantJob, process_participant


def anat(session: str) -> AnatInput:
    relative = f"sub-01/ses-{session}/anat/sub-01_ses-{session}_T1w.nii.gz"
    return AnatInput(
        path=Path("/nowhere") / relative,
        relative_path=relative,
        subject="01",
        session=session,
        run=None,
        acquisition=None,
        suffix="T1w",
        entities={"sub": "01", "ses": session},
        metadata={},
        field_strength=None,
    )


def metrics(session: str, status: str = "ok") -> ParticipantMetrics:
    return ParticipantMetrics(
        participant_id="01",
        session=session,
        run=None,
        field_strength=None,
        model=ModelInfo("m", "0" * 64, True),
        sampler=SamplerInfo("heun", 2, 1, 0),
        quality=None,
        in_training_set=None,
        noise_index=1.0,
        regional_suvr_synthetic={},
        regional_suvr_real=None,
        brain_volume_ml=1500.0,
        registration=RegistrationCheck(0.8),
        brain_extraction=BrainExtractionCheck(0.95),
        status=status,
    )


@pytest.fixture
def job(tmp_path: Path) -> ParticipantJob:
    return ParticipantJob(
        subject="01",
        inputs=[anat("A"), anat("B"), anat("C")],
        real_pets={},
        output_dir=tmp_path / "out",
        work_dir=tmp_path / "work",
        sampler=SamplerConfig(),
        planes=("axial",),
        device="cpu",
        omp_nthreads=1,
        batch_size=None,
        dataset_identity="x",
    )


@pytest.fixture
def synthesizer() -> Synthesizer:
    """A synthesizer that never samples: these tests replace the image's processing."""
    card = {"name": "m", "method": "jdam", "sha256": {WEIGHTS: "0" * 64}, "trained_on": PHANTOM_DATA}
    loaded = LoadedModel(
        denoiser=torch.nn.Identity(),
        cfg=small_config(),
        card=ModelCard.read(card | {"training_data": {"subjects": {"train": []}}}, Path("card"), "m", WEIGHTS),
        method=METHODS.named("jdam"),
    )
    return Synthesizer(loaded, "cpu")


def fake_image(anat_input, job, synthesizer, template, staging):
    """ses-A is an HTML page saved as .nii (fails at load), ses-C fails QC, ses-B is fine."""
    session = anat_input.session
    if session == "A":
        raise InputError(f"{anat_input.path}: an HTML or XML page, not a NIfTI image")
    atomic.write_text(staging.path(f"sub-01/pet/sub-01_ses-{session}_trc-FDG_desc-jdam_pet.nii.gz"), session)
    entry = participant.ReportEntry(
        stem=f"sub-01_ses-{session}",
        t1w=None,
        brain_mask=None,
        template_t1=None,
        synthetic_pet=None,
        std_map=None,
        real_pet=None,
        metrics=metrics(session, "failed-qc" if session == "C" else "ok"),
    )
    return entry


def fake_report(out_dir, subject, entries, failed=None):
    return atomic.write_text(Path(out_dir) / f"sub-{subject}.html", f"{[e.stem for e in entries]} {failed}")


def test_one_bad_session_does_not_stop_the_others(job, synthesizer, monkeypatch, capsys):
    monkeypatch.setattr(participant, "_process_image", fake_image)
    monkeypatch.setattr(participant, "write_participant_report", fake_report)
    monkeypatch.setattr(participant, "load_template", lambda spacing: None)
    outcome = process_participant(job, synthesizer)
    assert outcome.succeeded == ["sub-01_ses-B", "sub-01_ses-C"] and outcome.failed_qc == ["sub-01_ses-C"]
    assert list(outcome.failed) == ["sub-01_ses-A"] and "HTML" in outcome.failed["sub-01_ses-A"]
    out = job.output_dir
    assert sorted(p.name for p in (out / "sub-01" / "pet").iterdir()) == [
        "sub-01_ses-B_trc-FDG_desc-jdam_pet.nii.gz",
        "sub-01_ses-C_trc-FDG_desc-jdam_pet.nii.gz",
    ]
    assert "sub-01_ses-A" in (out / "sub-01.html").read_text()  # the report lists the failed session
    rc = _summarize([outcome], [], 3, out)
    captured = capsys.readouterr()
    assert rc == 1
    assert "0 of 1 participants succeeded, 2 of 3 images (1 of them failed quality control)" in captured.out
    assert "sub-01_ses-A failed: " in captured.err and "sub-01_ses-C failed quality control" in captured.err


def test_a_second_run_on_the_same_participant_is_refused_and_its_staging_kept(job, synthesizer, monkeypatch):
    monkeypatch.setattr(participant, "load_template", lambda spacing: None)
    other_runs_staging = job.output_dir / ".staging-sub-01-0123"
    other_runs_staging.mkdir(parents=True)
    with participant_lock(job.output_dir, job.work_dir, "01"):
        with pytest.raises(InputError, match=f"being processed by another bids-jdam run \\(pid {os.getpid()}"):
            process_participant(job, synthesizer)
        assert other_runs_staging.is_dir()  # clean-up only runs under the lock, so the other run's folder stays
    with participant_lock(job.output_dir, job.work_dir, "01"):  # released on exit
        pass


def test_the_lock_of_a_killed_run_is_released(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from bids_jdam.io.locks import "
                f"participant_lock\nwith participant_lock(Path({str(out)!r}), Path({str(work)!r}), '01'):\n"
                "    print('locked', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match="another bids-jdam run"), participant_lock(out, work, "01"):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    time.sleep(0.1)
    with participant_lock(out, work, "01"):
        pass
