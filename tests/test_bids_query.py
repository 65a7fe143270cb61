"""Input selection on small hand-made BIDS trees: labels, sessions, runs, inheritance, filters, PET lookup."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids.layout import Query

from bids_jdam.bids.query import (
    find_anatomicals,
    find_fdg_pet,
    find_training_pairs,
    load_filters,
    load_layout,
    normalize_labels,
    participants_with_broken_sidecars,
)
from bids_jdam.errors import InputError


def write_nifti(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_dataset(root: Path, images: list[str], sidecars: dict[str, dict] | None = None) -> Path:
    write_json(root / "dataset_description.json", {"Name": "test", "BIDSVersion": "1.10.0"})
    for relative in images:
        write_nifti(root / relative)
    for relative, data in (sidecars or {}).items():
        write_json(root / relative, data)
    return root


def make_read_only(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            os.chmod(Path(folder) / name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every path under root with its mtime and size: any write (even by root, who ignores modes) changes it."""
    entries = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            entries.append((path.relative_to(root).as_posix(), info.st_mtime_ns, info.st_size))
    info = root.lstat()
    return sorted(entries) + [(".", info.st_mtime_ns, info.st_size)]


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    """sub-01: two runs in ses-A (+ FDG and PIB PET), one in ses-B with its own field strength; sub-02: no T1w;
    sub-03: T1w and an MP2RAGE UNIT1. The top-level T1w.json gives MagneticFieldStrength 3 to all T1w."""
    root = make_dataset(
        tmp_path / "bids",
        [
            "sub-01/ses-A/anat/sub-01_ses-A_run-1_T1w.nii.gz",
            "sub-01/ses-A/anat/sub-01_ses-A_run-2_T1w.nii.gz",
            "sub-01/ses-A/pet/sub-01_ses-A_trc-FDG_pet.nii.gz",
            "sub-01/ses-A/pet/sub-01_ses-A_trc-PIB_pet.nii.gz",
            "sub-01/ses-B/anat/sub-01_ses-B_T1w.nii.gz",
            "sub-02/ses-A/anat/sub-02_ses-A_T2w.nii.gz",
            "sub-03/ses-A/anat/sub-03_ses-A_T1w.nii.gz",
            "sub-03/ses-A/anat/sub-03_ses-A_acq-mp2rage_UNIT1.nii.gz",
        ],
        {
            "T1w.json": {"MagneticFieldStrength": 3},
            "sub-01/ses-B/anat/sub-01_ses-B_T1w.json": {"MagneticFieldStrength": 7},
        },
    )
    make_read_only(root)
    yield root
    for folder, _, _ in os.walk(root):
        os.chmod(folder, stat.S_IRWXU)


@pytest.mark.parametrize(
    ("labels", "prefix", "expected"),
    [
        (["01", "sub-02", "01"], "sub", ["01", "02"]),
        (["sub-ADNI002S0295"], "sub", ["ADNI002S0295"]),
        (["ses-M000", "bl"], "ses", ["M000", "bl"]),
        (None, "sub", None),
    ],
)
def test_normalize_labels(labels, prefix, expected):
    assert normalize_labels(labels, prefix) == expected


@pytest.mark.parametrize("bad", ["sub-0_1", "", "sub-"])
def test_normalize_labels_rejects_non_bids_labels(bad):
    with pytest.raises(InputError, match="label"):
        normalize_labels([bad])


def test_load_layout_rejects_what_is_not_a_bids_dataset(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        load_layout(tmp_path / "absent", validate=False)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        load_layout(a_file, validate=False)
    with pytest.raises(InputError, match="no dataset_description.json"):
        load_layout(tmp_path, validate=False)
    (tmp_path / "dataset_description.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset_description.json is not valid JSON"):
        load_layout(tmp_path, validate=False)
    (tmp_path / "dataset_description.json").write_text("[]")
    with pytest.raises(InputError, match="must hold a JSON object"):
        load_layout(tmp_path, validate=False)


def test_queries_never_write_under_bids_dir(dataset: Path):
    before = snapshot(dataset)
    layout = load_layout(dataset, validate=False)
    find_anatomicals(layout, participants=None, sessions=None)
    find_fdg_pet(layout, "01", "A")
    assert snapshot(dataset) == before


def test_validation_passes_a_valid_dataset_without_writing(tmp_path: Path):
    root = make_dataset(tmp_path / "bids", ["sub-01/anat/sub-01_T1w.nii.gz"])
    make_read_only(root)
    before = snapshot(root)
    layout = load_layout(root, validate=True)
    assert layout.get_subjects() == ["01"]
    assert snapshot(root) == before


def test_validation_failure_is_one_input_error(tmp_path: Path):
    root = make_dataset(tmp_path / "bids", ["sub-01/anat/sub-01_T1w.nii.gz", "sub-01/anat/scan_T1.nii.gz"])
    with pytest.raises(InputError, match="BIDS validator found .*scan_T1.nii.gz.*--skip-bids-validation"):
        load_layout(root, validate=True)


def test_labels_with_and_without_prefix_select_the_same_images(dataset: Path):
    layout = load_layout(dataset, validate=False)
    bare = find_anatomicals(layout, participants=["01"], sessions=None)
    prefixed = find_anatomicals(layout, participants=["sub-01"], sessions=None)
    assert [a.path for a in bare.inputs] == [a.path for a in prefixed.inputs]
    assert {a.subject for a in bare.inputs} == {"01"}


def test_every_run_gets_its_own_entry_and_the_choice_is_logged(dataset: Path, caplog):
    layout = load_layout(dataset, validate=False)
    with caplog.at_level(logging.INFO, logger="bids_jdam.bids.query"):
        selection = find_anatomicals(layout, participants=["01"], sessions=["ses-A"])
    assert [(a.session, a.run) for a in selection.inputs] == [("A", "1"), ("A", "2")]
    assert "sub-01: 2 T1w images" in caplog.text


def test_sessions_and_sidecar_inheritance(dataset: Path):
    layout = load_layout(dataset, validate=False)
    session_b = find_anatomicals(layout, participants=["01"], sessions=["B"]).inputs
    assert [a.relative_path for a in session_b] == ["sub-01/ses-B/anat/sub-01_ses-B_T1w.nii.gz"]
    assert session_b[0].field_strength == 7.0
    assert session_b[0].bids_uri == "bids:raw:sub-01/ses-B/anat/sub-01_ses-B_T1w.nii.gz"
    session_a = find_anatomicals(layout, participants=["01"], sessions=["A"]).inputs
    assert [a.field_strength for a in session_a] == [3.0, 3.0]
    assert session_a[0].metadata["MagneticFieldStrength"] == 3


def test_unknown_participants_and_sessions_are_named(dataset: Path):
    layout = load_layout(dataset, validate=False)
    with pytest.raises(InputError, match="sub-99, sub-98"):
        find_anatomicals(layout, participants=["01", "sub-99", "98"], sessions=None)
    with pytest.raises(InputError, match="ses-C"):
        find_anatomicals(layout, participants=["01"], sessions=["C"])


def test_a_subject_without_t1w_is_reported_missing_not_fatal(dataset: Path):
    layout = load_layout(dataset, validate=False)
    selection = find_anatomicals(layout, participants=None, sessions=None)
    assert selection.missing == ["02"]
    assert {a.subject for a in selection.inputs} == {"01", "03"}
    with pytest.raises(InputError, match="no T1w image for the selected participants \\(sub-02\\)"):
        find_anatomicals(layout, participants=["02"], sessions=None)


def test_unit1_suffix_selects_mp2rage_images(dataset: Path):
    layout = load_layout(dataset, validate=False)
    selection = find_anatomicals(layout, participants=None, sessions=None, suffix="UNIT1")
    assert [a.path.name for a in selection.inputs] == ["sub-03_ses-A_acq-mp2rage_UNIT1.nii.gz"]
    assert selection.inputs[0].acquisition == "mp2rage"
    assert selection.missing == ["01", "02"]


def test_images_that_would_share_outputs_are_refused_with_a_hint(tmp_path: Path):
    root = make_dataset(
        tmp_path / "bids", ["sub-01/anat/sub-01_acq-fast_T1w.nii.gz", "sub-01/anat/sub-01_acq-slow_T1w.nii.gz"]
    )
    layout = load_layout(root, validate=False)
    with pytest.raises(InputError, match="--bids-filter-file"):
        find_anatomicals(layout, participants=None, sessions=None)
    chosen = find_anatomicals(layout, participants=None, sessions=None, filters={"acquisition": "slow"})
    assert [a.path.name for a in chosen.inputs] == ["sub-01_acq-slow_T1w.nii.gz"]


def test_load_filters_reads_fmriprep_style_files(tmp_path: Path):
    path = tmp_path / "filters.json"
    path.write_text(json.dumps({"t1w": {"run": 1, "acquisition": None}, "pet": {"reconstruction": "*"}}))
    filters = load_filters(path)
    assert filters["t1w"]["run"] == 1
    assert filters["t1w"]["acquisition"] is Query.NONE
    assert filters["pet"]["reconstruction"] is Query.ANY


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"t1w": ', "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (json.dumps({"bold": {"task": "rest"}}), "unknown query name\\(s\\) bold"),
        (json.dumps({"t1w": ["run", 1]}), '"t1w" must map entity names to values'),
        (json.dumps({"t1w": {"run": {"a": 1}}}), "unusable value"),
    ],
)
def test_load_filters_errors_name_the_file(tmp_path: Path, content: str, message: str):
    path = tmp_path / "filters.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as error:
        load_filters(path)
    assert str(path) in str(error.value)


def test_filters_restrict_the_selection_and_unknown_entities_are_refused(dataset: Path):
    layout = load_layout(dataset, validate=False)
    selection = find_anatomicals(layout, participants=["01"], sessions=None, filters={"run": 2})
    assert [a.path.name for a in selection.inputs] == ["sub-01_ses-A_run-2_T1w.nii.gz"]
    with pytest.raises(InputError, match="entities this dataset does not have: echoo"):
        find_anatomicals(layout, participants=None, sessions=None, filters={"echoo": 1})


def test_fdg_pet_lookup_ignores_other_tracers(dataset: Path):
    layout = load_layout(dataset, validate=False)
    pet = find_fdg_pet(layout, "01", "A")
    assert pet is not None and pet.name == "sub-01_ses-A_trc-FDG_pet.nii.gz"
    assert find_fdg_pet(layout, "01", "B") is None
    pairs = find_training_pairs(layout)
    assert [(p.t1w.path.name, p.pet.name) for p in pairs] == [
        ("sub-01_ses-A_run-1_T1w.nii.gz", "sub-01_ses-A_trc-FDG_pet.nii.gz"),
        ("sub-01_ses-A_run-2_T1w.nii.gz", "sub-01_ses-A_trc-FDG_pet.nii.gz"),
    ]


def test_clinica_adni_names(tmp_path: Path):
    session = "sub-ADNI002S0295/ses-M000"
    root = make_dataset(
        tmp_path / "adni",
        [
            f"{session}/anat/sub-ADNI002S0295_ses-M000_T1w.nii.gz",
            f"{session}/pet/sub-ADNI002S0295_ses-M000_trc-18FFDG_rec-uniform_pet.nii.gz",
            f"{session}/pet/sub-ADNI002S0295_ses-M000_trc-18FFDG_rec-coregavg_pet.nii.gz",
        ],
    )
    layout = load_layout(root, validate=False)
    anat = find_anatomicals(layout, participants=["sub-ADNI002S0295"], sessions=["M000"]).inputs
    assert [(a.subject, a.session) for a in anat] == [("ADNI002S0295", "M000")]
    with pytest.raises(InputError, match="rec-coregavg.*rec-uniform.*--pet-rec"):
        find_fdg_pet(layout, "ADNI002S0295", "M000")
    pet = find_fdg_pet(layout, "ADNI002S0295", "M000", rec="Uniform")
    assert pet is not None and pet.name.endswith("_trc-18FFDG_rec-uniform_pet.nii.gz")
    pairs = find_training_pairs(layout, participants=["ADNI002S0295"], rec="uniform")
    assert len(pairs) == 1 and pairs[0].pet == pet


def test_training_pairs_need_both_images(dataset: Path):
    layout = load_layout(dataset, validate=False)
    with pytest.raises(InputError, match="no subject has both"):
        find_training_pairs(layout, participants=["03"])


def test_read_only_copy_of_a_dataset_is_left_untouched(dataset: Path, tmp_path: Path):
    """The read-only fixture stays byte-identical through a full query, validation included."""
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    for relative in ("sub-01/ses-A/pet", "sub-02"):
        shutil.rmtree(copy / relative)
    make_read_only(copy)
    before = snapshot(copy)
    layout = load_layout(copy, validate=True)
    assert len(find_anatomicals(layout, participants=None, sessions=None).inputs) == 4
    assert snapshot(copy) == before
    for folder, _, _ in os.walk(copy):
        os.chmod(folder, stat.S_IRWXU)


def _overwrite(path: Path, text: str) -> None:
    os.chmod(path.parent, stat.S_IRWXU)
    if path.exists():
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(text)


def test_a_broken_sidecar_fails_only_its_participant(dataset: Path):
    sidecar = dataset / "sub-01" / "ses-B" / "anat" / "sub-01_ses-B_T1w.json"
    _overwrite(sidecar, '{"MagneticFieldStrength": 7,')
    layout = load_layout(dataset, validate=False)  # the other participants stay indexed
    assert {a.subject for a in find_anatomicals(layout, participants=["03"], sessions=None).inputs} == {"03"}
    failures = participants_with_broken_sidecars(dataset)
    assert list(failures) == ["01"] and str(sidecar) in failures["01"] and "not valid JSON" in failures["01"]


def test_a_broken_top_level_sidecar_stops_the_run_naming_it(dataset: Path):
    _overwrite(dataset / "T1w.json", "{")
    with pytest.raises(InputError, match=r"T1w\.json: not valid JSON .* every participant"):
        load_layout(dataset, validate=False)
