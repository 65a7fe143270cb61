"""Nothing is written under the input dataset, whatever symlinks lie between: outputs, work dir, staging, reports."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.cli.run import main
from bids_jdam.errors import InputError
from bids_jdam.io import atomic, write_gate
from bids_jdam.io.locks import participant_lock
from bids_jdam.preprocess.cache import StepRunner


def sha256_snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (symlinks not followed) with the sha256 of its contents."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"input image")
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    return bids


@pytest.mark.parametrize("link", ["sub-01", "sub-01/figures", ".work", ".work/sub-01"])
def test_a_symlink_into_the_input_refuses_writes_below_it(dataset, tmp_path, link):
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(dataset / "sub-01")
    before = sha256_snapshot(dataset)
    with write_gate.protecting(dataset):
        with pytest.raises(InputError, match="inside the input dataset"):
            atomic.write_text(out / link / "x.json", "{}")
        with pytest.raises(InputError, match="inside the input dataset"):
            atomic.make_dirs(out / link / "pet")
    atomic.write_text(out / "outside.json", "{}")  # outside the gate's block nothing is refused
    assert sha256_snapshot(dataset) == before


def test_step_cache_refuses_a_work_dir_that_leads_into_the_input(dataset, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "sub-01").symlink_to(dataset / "sub-01" / "anat")
    source = tmp_path / "in.txt"
    source.write_text("abc")
    before = sha256_snapshot(dataset)
    with write_gate.protecting(dataset), pytest.raises(InputError, match="inside the input dataset"):
        StepRunner(work / "sub-01", "01").run(
            "copy",
            lambda out: out["copy"].write_text("x"),
            inputs={"text": source},
            outputs={"copy": "copy.txt"},
            code=(sha256_snapshot,),
        )
    assert sha256_snapshot(dataset) == before and not (dataset / "sub-01" / "anat" / "copy.txt").exists()


def test_staging_and_lock_refuse_a_participant_folder_in_the_input(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-01").symlink_to(dataset / "sub-01")
    (out / ".lock-sub-02").symlink_to(dataset / "sub-01" / "anat" / "lock")
    before = sha256_snapshot(dataset)
    with write_gate.protecting(dataset):
        with pytest.raises(InputError, match="participant folder"):
            ParticipantStaging(out, "01").__enter__()
        with pytest.raises(InputError, match="lock file"), participant_lock(out, tmp_path / "work", "02"):
            pass
    assert sha256_snapshot(dataset) == before
    assert not list(out.glob(".staging-*"))


def test_a_symlinked_report_into_the_input_is_refused(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-01.html").symlink_to(dataset / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    with write_gate.protecting(dataset), pytest.raises(InputError, match="participant report"):
        ParticipantStaging.check_targets(out, "01")


def test_a_symlinked_figures_folder_is_replaced_not_followed(dataset, tmp_path):
    """Publishing swaps in a fresh folder: an old ``figures`` symlink into the input is dropped, not written to."""
    out = tmp_path / "out"
    (out / "sub-01").mkdir(parents=True)
    (out / "sub-01" / "figures").symlink_to(dataset / "sub-01" / "anat")
    before = sha256_snapshot(dataset)
    with write_gate.protecting(dataset), ParticipantStaging(out, "01") as staging:
        atomic.write_text(staging.path("sub-01/figures/sub-01_desc-jdam_metrics.json"), "{}")
    figures = out / "sub-01" / "figures"
    assert figures.is_dir() and not figures.is_symlink()
    assert [p.name for p in figures.iterdir()] == ["sub-01_desc-jdam_metrics.json"]
    assert sha256_snapshot(dataset) == before


def test_app_refuses_a_default_work_dir_symlinked_into_the_input(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(phantom_dataset, bids, ignore=shutil.ignore_patterns("derivatives", "sub-02", "sub-03", "sub-04"))
    before = sha256_snapshot(bids)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".work").symlink_to(bids / "sub-01")
    rc = main([str(bids), str(out), "participant", "--model", str(tiny_model_dir), "--skip-bids-validation"])
    err = capsys.readouterr().err
    assert rc == 1 and "work directory" in err and "never writes" in err and err.strip().count("\n") == 0
    assert sha256_snapshot(bids) == before


def test_app_refuses_a_participant_folder_symlinked_into_the_input(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    """Refused before preprocessing: the participant fails with one line, the input is unchanged."""
    bids = tmp_path / "bids"
    shutil.copytree(phantom_dataset, bids, ignore=shutil.ignore_patterns("derivatives", "sub-02", "sub-03", "sub-04"))
    before = sha256_snapshot(bids)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    (out / "sub-01").symlink_to(bids / "sub-01")
    rc = main(
        [str(bids), str(out), "participant", "--model", str(tiny_model_dir), "--skip-bids-validation", "-w", str(work)]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "sub-01 failed" in err and "participant folder" in err and "Traceback" not in err
    assert sha256_snapshot(bids) == before
    assert not (work / "sub-01").exists()  # nothing was preprocessed
