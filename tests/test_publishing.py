"""A participant's outputs are replaced all at once: readers see the old run, no folder, or the new run; never a mix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bids_jdam.bids import publishing
from bids_jdam.bids.naming import image_key
from bids_jdam.bids.publishing import ParticipantStaging, recover_interrupted_publish
from bids_jdam.io import atomic

OLD_RUN = {
    "sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.json": "old A",
    "sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.nii.gz": "old A",
    "sub-01/figures/sub-01_ses-A_desc-jdam_metrics.json": "old A",
    "sub-01/pet/sub-01_ses-B_trc-FDG_space-T1w_desc-jdam_pet.nii.gz": "old B",
    "sub-01/figures/sub-01_ses-B_desc-jdam_metrics.json": "old B",
    "sub-01.html": "old report",
}


def files(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    for relative, text in OLD_RUN.items():
        atomic.write_text(tmp_path / "out" / relative, text)
    return tmp_path / "out"


def test_image_key_reads_session_and_run_from_any_output_name():
    assert image_key("sub-01_ses-A_trc-FDG_run-2_space-T1w_desc-jdam_pet.nii.gz") == ("A", "2")
    assert image_key("sub-01_desc-jdam_metrics.json") == (None, None)
    assert image_key("sub-01_ses-A_run-1") == ("A", "1")


def test_rerun_of_one_session_replaces_it_whole_and_keeps_the_other(out):
    with ParticipantStaging(out, "01") as staging:
        atomic.write_text(staging.path("sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.nii.gz"), "new A")
        atomic.write_text(staging.path("sub-01.html"), "new report")
    assert files(out) == {
        "sub-01.html": "new report",
        "sub-01/figures/sub-01_ses-B_desc-jdam_metrics.json": "old B",
        "sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.nii.gz": "new A",
        "sub-01/pet/sub-01_ses-B_trc-FDG_space-T1w_desc-jdam_pet.nii.gz": "old B",
    }  # ses-A's old sidecar and metrics are gone with its old image: no file of two runs


def test_a_failure_or_an_abandoned_staging_leaves_the_old_run(out):
    with pytest.raises(RuntimeError), ParticipantStaging(out, "01") as staging:
        atomic.write_text(staging.path("sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.nii.gz"), "new")
        raise RuntimeError("killed")
    with ParticipantStaging(out, "01") as staging:
        atomic.write_text(staging.path("sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.nii.gz"), "new")
        staging.discard(("A", None))
        assert staging.files() == []
        staging.abandon()
    assert files(out) == OLD_RUN


def test_killed_between_the_two_renames_the_folder_is_missing_and_the_next_run_restores_it(out, monkeypatch):
    real_move = publishing.atomic.move

    def killed(source, target):
        if Path(source).parent.name.startswith(".staging-"):  # the second rename: the new folder into place
            raise KeyboardInterrupt("SIGKILL stand-in")
        return real_move(source, target)

    monkeypatch.setattr(publishing.atomic, "move", killed)
    with pytest.raises(KeyboardInterrupt), ParticipantStaging(out, "01") as staging:
        atomic.write_text(staging.path("sub-01/pet/sub-01_ses-A_trc-FDG_space-T1w_desc-jdam_pet.nii.gz"), "new A")
        atomic.write_text(staging.path("sub-01.html"), "new report")
    assert not (out / "sub-01").exists() and not (out / "sub-01.html").exists()  # clearly incomplete, not mixed
    assert len(list(out.glob(".replaced-sub-01-*"))) == 1
    recover_interrupted_publish(out, "01")
    assert files(out) == {k: v for k, v in OLD_RUN.items() if k != "sub-01.html"}
    assert not [p for p in os.listdir(out) if p.startswith(".")]
