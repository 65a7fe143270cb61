"""Derivative names, sidecars, dataset_description and staging, checked with pybids and bids-validator-deno."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids import BIDSLayout

from bids_jdam.bids.naming import TEMPLATE_SPACE, derivative_name, derivative_path, transform_path
from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.bids.query import AnatInput, find_anatomicals, load_layout
from bids_jdam.bids.sidecars import mask_sidecar, pet_sidecar, write_bidsignore, write_dataset_description
from bids_jdam.bids.validator import run_bids_validator
from bids_jdam.errors import InputError
from bids_jdam.io import atomic
from bids_jdam.synthesis.provenance import ModelInfo, SamplerInfo, SynthesisProvenance

RAW_PET_ACQUISITION_FIELDS = (
    "InjectedRadioactivity",
    "TimeZero",
    "ScanStart",
    "InjectionStart",
    "FrameTimesStart",
    "FrameDuration",
    "ReconMethodName",
    "AttenuationCorrection",
)


def nifti(dtype=np.float32) -> nib.Nifti1Image:
    image = nib.Nifti1Image(np.ones((8, 8, 8), dtype=dtype), np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    return image


def provenance(phantom_trained: bool = True) -> SynthesisProvenance:
    return SynthesisProvenance(
        model=ModelInfo(name="demo", sha256="0" * 64, trained_on_phantoms=phantom_trained),
        sampler=SamplerInfo(name="heun", steps=18, num_samples=4, seed=0),
        noise_key="sub-01",
        reference_region="cerebellum and pons",
        wall_time_s=12.5,
    )


def anat_input(**entities: str) -> AnatInput:
    entities = {"sub": "01", **entities}
    name = "_".join(f"{k}-{v}" for k, v in entities.items()) + "_T1w.nii.gz"
    folder = f"sub-{entities['sub']}" + (f"/ses-{entities['ses']}" if "ses" in entities else "") + "/anat"
    return AnatInput(
        path=Path("/data") / folder / name,
        relative_path=f"{folder}/{name}",
        subject=entities["sub"],
        session=entities.get("ses"),
        run=entities.get("run"),
        acquisition=entities.get("acq"),
        suffix="T1w",
        entities=entities,
        metadata={"MagneticFieldStrength": 3},
        field_strength=3.0,
    )


@pytest.mark.parametrize(
    ("entities", "kwargs", "expected"),
    [
        (
            {"sub": "01", "ses": "A", "run": "1"},
            dict(space="T1w", desc="jdam", suffix="pet"),
            "sub-01_ses-A_trc-FDG_run-1_space-T1w_desc-jdam_pet.nii.gz",
        ),
        (
            {"sub": "01"},
            dict(space=TEMPLATE_SPACE, desc="jdam", suffix="pet"),
            "sub-01_trc-FDG_space-MNI152NLin2009aSym_desc-jdam_pet.nii.gz",
        ),
        (
            {"sub": "01", "ses": "A"},
            dict(space=TEMPLATE_SPACE, desc="jdamstd", suffix="pet", res="2"),
            "sub-01_ses-A_trc-FDG_space-MNI152NLin2009aSym_res-2_desc-jdamstd_pet.nii.gz",
        ),
        (
            {"sub": "01", "acq": "mprage", "rec": "norm", "run": "2"},
            dict(space="T1w", desc="jdam", suffix="pet"),
            "sub-01_trc-FDG_run-2_space-T1w_desc-jdam_pet.nii.gz",
        ),
        (
            {"sub": "01", "acq": "mprage", "run": "2"},
            dict(space="T1w", desc="brain", suffix="mask"),
            "sub-01_acq-mprage_run-2_space-T1w_desc-brain_mask.nii.gz",
        ),
    ],
)
def test_derivative_names_follow_the_schema_entity_order(entities, kwargs, expected):
    assert derivative_name(entities, extension=".nii.gz", trc="FDG", **kwargs) == expected


def test_derivative_and_transform_paths():
    entities = {"sub": "01", "ses": "A", "run": "1"}
    pet = derivative_path(entities, space="T1w", desc="jdam", suffix="pet", extension=".json", trc="FDG")
    assert pet == Path("sub-01/ses-A/pet/sub-01_ses-A_trc-FDG_run-1_space-T1w_desc-jdam_pet.json")
    xfm = transform_path(entities, from_space="T1w", to_space=TEMPLATE_SPACE, extension=".h5")
    assert xfm == Path("sub-01/ses-A/anat/sub-01_ses-A_run-1_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5")
    with pytest.raises(ValueError, match="letters and digits"):
        derivative_name({"sub": "0_1"}, space="T1w", desc="jdam", suffix="pet", extension=".nii.gz")


def test_pet_sidecar_is_honest_about_what_the_image_is():
    source = anat_input(ses="A")
    native = pet_sidecar(source, provenance(), space="T1w")
    assert native["SkullStripped"] is True
    assert native["Sources"] == ["bids:raw:sub-01/ses-A/anat/sub-01_ses-A_T1w.nii.gz"]
    assert native["SpatialReference"] == native["Sources"][0]
    assert (native["TracerName"], native["TracerRadionuclide"], native["Units"]) == ("FDG", "F18", "unitless")
    assert "Synthetic FDG-PET" in native["Description"] and "cerebellum and pons" in native["Description"]
    assert "trained on phantoms, not for real patients" in native["Description"]
    assert (native["ModelSHA256"], native["Sampler"], native["SamplerSteps"]) == ("0" * 64, "heun", 18)
    assert (native["RandomSeed"], native["NoiseKey"], native["NumberOfSamples"]) == (0, "sub-01", 4)
    assert native["MagneticFieldStrength"] == 3.0
    assert not set(RAW_PET_ACQUISITION_FIELDS) & set(native)
    template_std = pet_sidecar(source, provenance(phantom_trained=False), space=TEMPLATE_SPACE, statistic="std")
    assert "SpatialReference" not in template_std
    assert "standard deviation" in template_std["Description"] and "phantoms" not in template_std["Description"]
    assert "NOT calibrated" in template_std["Description"]
    calibrated = dataclasses.replace(
        provenance(), model=dataclasses.replace(provenance().model, spread_scale=1.7)
    )  # K = 4: t(3) 95th percentile 2.353 x sqrt(1 + 1/4)
    calibrated_std = pet_sidecar(source, calibrated, space=TEMPLATE_SPACE, statistic="std")["Description"]
    assert "scaled by 1.7" in calibrated_std and "mean +- 2.631 x this SD" in calibrated_std
    view_std = pet_sidecar(source, provenance(), space=TEMPLATE_SPACE, statistic="viewstd")
    assert "each sampled plane" in view_std["Description"] and "phantoms" in view_std["Description"]
    with pytest.raises(ValueError, match="statistic"):
        pet_sidecar(source, provenance(), space=TEMPLATE_SPACE, statistic="variance")


def test_dataset_description_records_the_container_and_the_raw_link(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BIDS_JDAM_CONTAINER_TYPE", "docker")
    monkeypatch.setenv("BIDS_JDAM_CONTAINER_TAG", "bids-jdam:0.1.0")
    out = tmp_path / "out"
    write_dataset_description(out, source_dir=tmp_path / "bids", version="0.1.0")
    written = json.loads((out / "dataset_description.json").read_text())
    assert written["DatasetType"] == "derivative"
    assert written["GeneratedBy"] == [
        {
            "Name": "bids-jdam",
            "Version": "0.1.0",
            "Description": written["GeneratedBy"][0]["Description"],
            "Container": {"Type": "docker", "Tag": "bids-jdam:0.1.0"},
        }
    ]
    assert written["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert written["DatasetLinks"] == {"raw": (tmp_path / "bids").as_uri()}


def test_dataset_description_merges_with_a_previous_run(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    previous = {
        "Name": "my study",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "manual QC"}, {"Name": "bids-jdam", "Version": "0.0.1"}],
    }
    (out / "dataset_description.json").write_text(json.dumps(previous))
    write_dataset_description(out, source_dir=tmp_path / "bids", version="0.1.0")
    write_dataset_description(out, source_dir=tmp_path / "bids", version="0.1.0")
    written = json.loads((out / "dataset_description.json").read_text())
    assert written["Name"] == "my study"
    assert [(g["Name"], g.get("Version")) for g in written["GeneratedBy"]] == [
        ("manual QC", None),
        ("bids-jdam", "0.1.0"),
    ]
    assert written["SourceDatasets"] == [{"URL": "bids:raw:"}]
    assert [p.name for p in out.iterdir()] == ["dataset_description.json"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            json.dumps({"Name": "f", "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}),
            "belongs to another dataset \\(fMRIPrep\\)",
        ),
        (json.dumps({"Name": "raw", "BIDSVersion": "1.10.0"}), "not a bids-jdam derivative dataset"),
        ("{broken", "cannot read the existing dataset_description.json"),
    ],
)
def test_dataset_description_refuses_a_foreign_output_folder(tmp_path: Path, content: str, message: str):
    (tmp_path / "dataset_description.json").write_text(content)
    with pytest.raises(InputError, match=message):
        write_dataset_description(tmp_path, source_dir=tmp_path / "bids", version="0.1.0")
    assert (tmp_path / "dataset_description.json").read_text() == content


def test_bidsignore_keeps_existing_lines(tmp_path: Path):
    (tmp_path / ".bidsignore").write_text("figures/\n")
    write_bidsignore(tmp_path)
    write_bidsignore(tmp_path)
    assert (tmp_path / ".bidsignore").read_text() == "figures/\n*_xfm.*\n"


def test_atomic_writers_leave_only_the_target(tmp_path: Path):
    atomic.write_json(tmp_path / "a.json", {"x": 1})
    atomic.save_nifti(nifti(), tmp_path / "b.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.nii.gz"]
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert nib.load(tmp_path / "b.nii.gz").shape == (8, 8, 8)


def test_staging_publishes_all_outputs_on_success(tmp_path: Path):
    (tmp_path / "sub-01/pet").mkdir(parents=True)
    (tmp_path / "sub-01/pet/old.json").write_text("old")
    with ParticipantStaging(tmp_path, "01") as staging:
        atomic.write_json(staging.path("sub-01/pet/old.json"), {"new": True})
        atomic.write_json(staging.path("sub-01/anat/mask.json"), {})
        assert not (tmp_path / "sub-01/anat/mask.json").exists()
    assert json.loads((tmp_path / "sub-01/pet/old.json").read_text()) == {"new": True}
    assert (tmp_path / "sub-01/anat/mask.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub-01"]


def test_staging_leaves_nothing_after_a_failure(tmp_path: Path):
    with pytest.raises(RuntimeError, match="sampler crashed"):
        with ParticipantStaging(tmp_path, "01") as staging:
            atomic.save_nifti(nifti(), staging.path("sub-01/pet/sub-01_pet.nii.gz"))
            raise RuntimeError("sampler crashed")
    assert list(tmp_path.iterdir()) == []


def write_participant_outputs(out: Path, source: AnatInput) -> None:
    """What the participant workflow writes for one T1w, with these functions only."""
    with ParticipantStaging(out, source.subject) as staging:
        for space in ("T1w", TEMPLATE_SPACE):
            for desc, statistic in (
                ("jdam", "mean"),
                ("jdamstd", "std"),
                ("jdamviewstd", "viewstd"),
                ("jdampredsd", "predictivesd"),
            ):
                image = derivative_path(
                    source.entities, space=space, desc=desc, suffix="pet", extension=".nii.gz", trc="FDG"
                )
                atomic.save_nifti(nifti(), staging.path(image))
                atomic.write_json(
                    staging.path(image.with_name(image.name.replace(".nii.gz", ".json"))),
                    pet_sidecar(source, provenance(), space=space, statistic=statistic),
                )
            mask = derivative_path(source.entities, space=space, desc="brain", suffix="mask", extension=".nii.gz")
            atomic.save_nifti(nifti(np.uint8), staging.path(mask))
            atomic.write_json(
                staging.path(mask.with_name(mask.name.replace(".nii.gz", ".json"))), mask_sidecar(source, space=space)
            )
        for extension in (".h5", ".mat"):
            xfm = transform_path(source.entities, from_space="T1w", to_space=TEMPLATE_SPACE, extension=extension)
            staging.path(xfm).write_bytes(b"transform")


def test_a_written_derivative_dataset_indexes_and_validates(tmp_path: Path):
    raw = tmp_path / "bids"
    (raw / "sub-01/ses-A/anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text(json.dumps({"Name": "raw", "BIDSVersion": "1.10.0"}))
    for run in ("1", "2"):
        nib.save(nifti(), raw / f"sub-01/ses-A/anat/sub-01_ses-A_run-{run}_T1w.nii.gz")
    out = tmp_path / "out"
    write_dataset_description(out, source_dir=raw, version="0.1.0")
    write_bidsignore(out)
    for source in find_anatomicals(load_layout(raw, validate=False), participants=None, sessions=None).inputs:
        write_participant_outputs(out, source)

    result = run_bids_validator(out)
    assert result.ok, result.errors
    layout = BIDSLayout(raw, derivatives=out, validate=False)
    synthetic = layout.get(scope="derivatives", desc="jdam", suffix="pet", extension=".nii.gz")
    assert sorted(f.filename for f in synthetic) == [
        f"sub-01_ses-A_trc-FDG_run-{run}_space-{space}_desc-jdam_pet.nii.gz"
        for run in ("1", "2")
        for space in (TEMPLATE_SPACE, "T1w")
    ]
    assert synthetic[0].get_metadata()["TracerName"] == "FDG"
    transforms = layout.get(scope="derivatives", suffix="xfm", extension=".h5")
    assert {(f.entities["from"], f.entities["to"]) for f in transforms} == {("T1w", TEMPLATE_SPACE)}


def test_validator_reports_errors_of_a_broken_derivative(tmp_path: Path):
    write_dataset_description(tmp_path, source_dir=tmp_path / "bids", version="0.1.0")
    write_participant_outputs(tmp_path, anat_input())
    (tmp_path / "sub-01/pet/sub-01_trc-FDG_space-T1w_desc-jdam_pet.json").unlink()
    result = run_bids_validator(tmp_path)
    assert not result.ok
    assert any("_xfm.h5" in error for error in result.errors)
    assert any("SkullStripped" in error and "space-T1w_desc-jdam_pet" in error for error in result.errors)


def test_missing_validator_is_a_clear_error(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(InputError, match="bids-validator-deno is not installed"):
        run_bids_validator(tmp_path)


def test_a_crashed_validator_is_one_line_that_says_what_to_try(tmp_path, monkeypatch):
    """Under `ulimit -v` deno dies with a stack address and no report."""
    import subprocess

    from bids_jdam.bids import validator
    from bids_jdam.errors import InputError

    crashed = subprocess.CompletedProcess([], -6, stdout="", stderr="#\n# Fatal error\n#\n0x55d0c0ffee00\n")
    monkeypatch.setattr(validator, "find_validator", lambda: Path("bids-validator-deno"))
    monkeypatch.setattr(validator.subprocess, "run", lambda *args, **kwargs: crashed)
    with pytest.raises(InputError) as exc:
        validator.run_bids_validator(tmp_path)
    message = str(exc.value)
    assert "\n" not in message and "Fatal error" in message and "ulimit -v" in message
    assert "--skip-bids-validation" in message and "0x55" not in message
