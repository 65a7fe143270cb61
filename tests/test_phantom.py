"""The phantom dataset: deterministic, valid BIDS in both layouts, and its ground truth says what was applied."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_jdam.bids.validator import run_bids_validator
from bids_jdam.cli.phantom import main as phantom_main
from bids_jdam.data.atlas import load_atlas
from bids_jdam.data.phantom import generate_phantom_dataset, is_phantom_dataset, phantom_truth
from bids_jdam.data.phantom.anatomy import build_anatomy
from bids_jdam.data.phantom.fdg_norms import group_masks, group_of_region, phantom_regions, region_groups
from bids_jdam.data.phantom.model import GM_WM_RATIO_RANGE, draw_subject
from bids_jdam.data.phantom.partial_volume import fit_activity_uptake, gray_matter_support, measured_pattern
from bids_jdam.data.phantom.pet import template_pet
from bids_jdam.data.regions import REGION_IDS, coarse_regions
from bids_jdam.data.template import load_template
from bids_jdam.errors import InputError

SPACING = 4.0  # the fixtures' model grid


def _participants(bids_dir: Path) -> list[dict[str, str]]:
    with open(bids_dir / "participants.tsv", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32))


def _activity_sidecar(truth) -> dict:
    return json.loads(truth.pet_activity.with_name(truth.pet_activity.name.replace(".nii.gz", ".json")).read_text())


def _away_from_spots(parameters: dict) -> np.ndarray:
    """Model-grid voxels that no hot/cold spot touches."""
    template = load_template(SPACING)
    mm = np.indices(template.shape) * SPACING + template.affine[:3, 3].reshape(3, 1, 1, 1)
    keep = np.ones(template.shape, dtype=bool)
    for spot in parameters["pet"]["spots"]:
        distance = np.sqrt(np.sum((mm - np.reshape(spot["centre_mm"], (3, 1, 1, 1))) ** 2, axis=0))
        keep &= distance > 4 * spot["radius_mm"]
    return keep


def test_participants_are_balanced_and_described(phantom_dataset):
    rows = _participants(phantom_dataset)
    assert [row["participant_id"] for row in rows] == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert sorted(row["diagnosis"] for row in rows) == ["AD", "AD", "CN", "CN"]
    assert {row["field_strength"] for row in rows} == {"3"}
    assert all(row["sex"] in ("F", "M") and 55 <= int(row["age"]) <= 95 for row in rows)
    described = json.loads((phantom_dataset / "participants.json").read_text())
    assert set(rows[0]) == set(described)


def test_dataset_is_marked_as_a_phantom(phantom_dataset, tmp_path):
    assert is_phantom_dataset(phantom_dataset)
    description = json.loads((phantom_dataset / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Name"] == "bids-jdam-phantom" and description["GeneratedBy"][0]["Version"]
    (tmp_path / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.10.0"}))
    assert not is_phantom_dataset(tmp_path)
    assert not is_phantom_dataset(tmp_path / "missing")


def test_same_seed_same_bytes_and_subject_k_independent_of_n(phantom_dataset, tmp_path):
    out = tmp_path / "one"
    generate_phantom_dataset(out, 1, 0, fast=True, grid_spacing_mm=SPACING)
    generate_phantom_dataset(out, 1, 0, fast=True, grid_spacing_mm=SPACING)  # replaces an earlier phantom
    one = _digests(out / "sub-01")
    assert one and one == _digests(phantom_dataset / "sub-01")
    truth_one = _digests(out / "derivatives" / "phantom" / "sub-01")
    assert truth_one == _digests(phantom_dataset / "derivatives" / "phantom" / "sub-01")

    other = tmp_path / "other_seed"
    generate_phantom_dataset(other, 1, 1, fast=True, grid_spacing_mm=SPACING)
    assert _digests(other / "sub-01") != one


def test_refuses_to_overwrite_a_folder_that_is_not_a_phantom(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a bids-jdam phantom dataset"):
        generate_phantom_dataset(tmp_path, 1, 0, fast=True)
    assert phantom_main([str(tmp_path), "--subjects", "1", "--fast"]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")] == []


def test_t1w_and_pet_differ_in_affine_and_resolution(phantom_dataset):
    for subject in ("01", "02", "03", "04"):
        t1w = nib.load(phantom_dataset / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz")
        pet = nib.load(phantom_dataset / f"sub-{subject}" / "pet" / f"sub-{subject}_trc-FDG_pet.nii.gz")
        assert t1w.header.get_zooms()[:3] != pet.header.get_zooms()[:3]
        assert t1w.shape != pet.shape and not np.allclose(t1w.affine, pet.affine)
        sidecar = json.loads((phantom_dataset / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.json").read_text())
        assert sidecar["MagneticFieldStrength"] == 3 and sidecar["Manufacturer"] == "bids-jdam phantom"


def test_pet_sidecar_has_what_bids_pet_requires(phantom_dataset):
    sidecar = json.loads((phantom_dataset / "sub-01" / "pet" / "sub-01_trc-FDG_pet.json").read_text())
    assert sidecar["TracerName"] == "FDG" and sidecar["TracerRadionuclide"] == "F18"
    assert sidecar["Units"] == "Bq/mL" and sidecar["InjectedRadioactivityUnits"] == "MBq"
    for key in (
        "InjectedRadioactivity",
        "ModeOfAdministration",
        "TimeZero",
        "ScanStart",
        "InjectionStart",
        "FrameTimesStart",
        "FrameDuration",
        "AttenuationCorrection",
        "ReconMethodName",
    ):
        assert key in sidecar
    pet = _load(phantom_dataset / "sub-01" / "pet" / "sub-01_trc-FDG_pet.nii.gz")
    assert 3000 < np.percentile(pet, 99.5) < 60000  # Bq/mL of a brain FDG scan, not SUV or counts


def test_pybids_finds_every_t1w_and_pet(phantom_dataset, phantom_dataset_clinica):
    from bids import BIDSLayout

    for bids_dir, tracer in ((phantom_dataset, "FDG"), (phantom_dataset_clinica, "18FFDG")):
        layout = BIDSLayout(bids_dir, validate=False)
        subjects = [row["participant_id"].removeprefix("sub-") for row in _participants(bids_dir)]
        assert sorted(layout.get_subjects()) == sorted(subjects)
        for subject in subjects:
            assert len(layout.get(subject=subject, suffix="T1w", extension=".nii.gz")) == 1
            assert len(layout.get(subject=subject, suffix="pet", tracer=tracer, extension=".nii.gz")) == 1


def test_clinica_layout_names(phantom_dataset_clinica):
    pet = sorted(phantom_dataset_clinica.glob("sub-*/ses-*/pet/*_pet.nii.gz"))
    t1w = sorted(phantom_dataset_clinica.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))
    assert [p.name for p in t1w] == ["sub-ADNI002S0001_ses-M000_T1w.nii.gz", "sub-ADNI002S0002_ses-M000_T1w.nii.gz"]
    assert pet[0].name == "sub-ADNI002S0001_ses-M000_trc-18FFDG_rec-uniform_pet.nii.gz"
    truth = phantom_truth(phantom_dataset_clinica, "sub-ADNI002S0001")
    assert truth.session == "M000" and truth.pet_suvr.is_file()


@pytest.mark.parametrize("fixture", ["phantom_dataset", "phantom_dataset_clinica"])
def test_bids_validator_passes(fixture, request):
    bids_dir = request.getfixturevalue(fixture)
    try:
        results = [run_bids_validator(bids_dir), run_bids_validator(bids_dir / "derivatives" / "phantom")]
    except InputError as error:
        if "not installed" in str(error):
            pytest.skip(f"bids-validator-deno is not installed: {error}")
        raise
    for result in results:
        assert result.ok, result.errors


def test_truth_is_on_the_model_grid(phantom_dataset):
    template = load_template(SPACING)
    labels, _ = coarse_regions(SPACING)
    truth = phantom_truth(phantom_dataset, "01")
    assert truth.grid_spacing_mm == SPACING
    for path in (
        truth.t1w,
        truth.brain_mask,
        truth.dseg,
        truth.gm_probseg,
        truth.pet_activity,
        truth.pet_bqml,
        truth.pet_suvr,
    ):
        image = nib.load(path)
        assert image.shape == template.shape and np.allclose(image.affine, template.affine), path.name
    assert np.array_equal(_load(truth.dseg), labels)
    assert np.array_equal(_load(truth.brain_mask) > 0, template.brain_mask)
    names = truth.dseg_tsv.read_text().splitlines()
    assert names[0] == "index\tname" and "10\tpons" in names


def test_noise_free_pet_has_the_configured_uptake(phantom_dataset):
    labels, _ = coarse_regions(SPACING)
    aal3 = phantom_regions(SPACING)
    atlas = load_atlas("AAL3")
    for subject in ("01", "02", "03", "04"):
        truth = phantom_truth(phantom_dataset, subject)
        sidecar = _activity_sidecar(truth)
        activity, gm, wm = _load(truth.pet_activity), _load(truth.gm_probseg), _load(truth.wm_probseg)
        clear = _away_from_spots(sidecar["PhantomParameters"]) & (labels != REGION_IDS["pons"])

        def fit(voxels, gm=gm, wm=wm, activity=activity):
            """Least-squares (GM uptake, WM uptake) of activity = GM fraction x a + WM fraction x b."""
            design = np.stack([gm[voxels], wm[voxels]], axis=1)
            return np.linalg.lstsq(design, activity[voxels], rcond=None)[0]

        pure_wm = clear & (gm < 0.01) & (wm > 0.5) & ~gray_matter_support(np.zeros_like(gm), wm, SPACING)
        wm_uptake = float(np.median(activity[pure_wm] / wm[pure_wm]))
        assert wm_uptake == pytest.approx(sidecar["WhiteMatterUptakeBqml"], rel=0.01)
        checked = 0
        for index, region in atlas.labels.items():
            voxels = clear & (aal3 == index)
            group = region_groups()[group_of_region(region)[0]]
            if voxels.sum() < 40 or gm[voxels].std() < 0.05:
                continue
            expected = sidecar["GrayMatterUptakeBqml"][region]
            if group.all_tissue:
                assert np.median(activity[voxels] / (gm + wm)[voxels]) == pytest.approx(expected, rel=0.01), region
            else:
                assert fit(voxels)[0] == pytest.approx(expected, rel=0.01), region
            checked += 1
        assert checked > 60

        pons = labels == REGION_IDS["pons"]
        pons_uptake = np.median(activity[pons] / (gm[pons] + wm[pons]))
        assert pons_uptake == pytest.approx(sidecar["GrayMatterUptakeBqml"]["pons"], rel=0.01)
        # The subject's cortical GM level over WM: within the configured range.
        assert (
            GM_WM_RATIO_RANGE[0]
            <= sidecar["PhantomParameters"]["pet"]["gm_uptake_bqml"] / wm_uptake
            <= GM_WM_RATIO_RANGE[1]
        )

        suvr = _load(truth.pet_suvr)
        reference = np.isin(labels, [REGION_IDS["cerebellum"], REGION_IDS["pons"]])
        assert suvr[reference].mean() == pytest.approx(1.0, abs=1e-3)


def test_ad_subjects_have_lower_posterior_uptake_than_cn(phantom_dataset):
    posterior = group_masks(SPACING)["cingulate_posterior"] | group_masks(SPACING)["precuneus"]
    uptake = {"AD": [], "CN": []}
    for row in _participants(phantom_dataset):
        truth = phantom_truth(phantom_dataset, row["participant_id"])
        uptake[row["diagnosis"]].append(float(_load(truth.pet_suvr)[posterior].mean()))
    assert max(uptake["AD"]) < min(uptake["CN"])


def test_healthy_pattern_measures_like_the_real_norms():
    """A CN subject's noise-free PET, measured as the norms were, follows them across the AAL3 groups."""
    draw = draw_subject(1001, 0, field_strength=3, n_sessions=1, pet_voxel_mm=SPACING)
    anatomy = build_anatomy(draw.anatomy, 2, SPACING)
    pet = template_pet(anatomy, draw.pet, SPACING)
    pattern = measured_pattern(pet.noise_free, gray_matter_support(anatomy.gm, anatomy.wm, SPACING), SPACING)
    table = [g for g in region_groups().values() if g.source == "table"]
    assert draw.diagnosis == "CN"
    assert np.corrcoef([g.uptake for g in table], [pattern[g.name] for g in table])[0, 1] > 0.95
    assert pattern["hippocampus_parahippocampal"] < 0.9 < 1.3 < pattern["precuneus"]


def test_activity_uptake_column_is_the_partial_volume_fit():
    """fdg_norms.tsv's activity_uptake is what partial_volume.py fits (rerun it after changing the phantom)."""
    fitted = fit_activity_uptake(iterations=8)
    for name, group in region_groups().items():
        assert group.activity_uptake == pytest.approx(fitted[name], abs=0.002), name


def _template_points(t1w: nib.Nifti1Image, transforms: dict, displacement: nib.Nifti1Image) -> np.ndarray:
    """Template mm of every native T1w voxel, written from the documented convention q = inv(A) (p + u(p))."""
    ijk = np.indices(t1w.shape, dtype=np.float64).reshape(3, -1)
    points = t1w.affine[:3, :3] @ ijk + t1w.affine[:3, 3:4]
    field = np.asarray(displacement.dataobj, dtype=np.float64)[:, :, :, 0, :]
    field_ijk = np.linalg.inv(displacement.affine)[:3, :3] @ points + np.linalg.inv(displacement.affine)[:3, 3:4]
    u = np.stack([ndimage.map_coordinates(field[..., c], field_ijk, order=1, mode="nearest") for c in range(3)])
    inverse = np.linalg.inv(np.asarray(transforms["TemplateToScannerAffine"]))
    return inverse[:3, :3] @ (points + u) + inverse[:3, 3:4]


def test_stored_transforms_map_the_truth_onto_the_native_t1w(phantom_dataset):
    truth = phantom_truth(phantom_dataset, "02")
    t1w = nib.load(phantom_dataset / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    q = _template_points(t1w, json.loads(truth.transforms.read_text()), nib.load(truth.displacement))
    grid = np.linalg.inv(load_template(SPACING).affine)
    q_ijk = grid[:3, :3] @ q + grid[:3, 3:4]
    mask = ndimage.map_coordinates(_load(truth.brain_mask), q_ijk, order=1) > 0.5
    truth_t1 = ndimage.map_coordinates(_load(truth.t1w), q_ijk, order=1)
    native = t1w.get_fdata().reshape(-1)
    assert mask.sum() > 1000
    assert np.corrcoef(truth_t1[mask], native[mask])[0, 1] > 0.8
    assert native[mask].mean() > 2 * native[~mask].mean()  # the head outside the brain is darker on average


def test_seven_tesla_option_imitates_mp2rage_unit1(tmp_path):
    out = tmp_path / "seven"
    assert phantom_main([str(out), "--subjects", "1", "--seed", "3", "--fast", "--field-strength", "7"]) == 0
    image = nib.load(out / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_T1w.json").read_text())
    assert sidecar["MagneticFieldStrength"] == 7 and sidecar["PulseSequenceType"] == "MP2RAGE"
    assert image.get_data_dtype() == np.uint16 and image.header.get_zooms()[0] < 3.0
    corner = np.asarray(image.dataobj)[:8, :8, -8:].astype(float)  # air: salt-and-pepper noise, not near-zero
    assert corner.std() > 0.2 * 4095 and (corner == 0).mean() > 0.2
    assert phantom_truth(out, "01").t1w.is_file()


def test_phantom_truth_names_a_missing_subject(phantom_dataset):
    with pytest.raises(InputError, match="sub-99"):
        phantom_truth(phantom_dataset, "99")


def test_sessions_share_the_anatomy_and_differ_in_pose(tmp_path):
    out = generate_phantom_dataset(tmp_path / "sessions", 1, 5, fast=True, grid_spacing_mm=SPACING, sessions=2)
    assert sorted(p.name for p in (out / "sub-01").iterdir()) == ["ses-01", "ses-02"]
    with pytest.raises(InputError, match="has sessions 01, 02"):
        phantom_truth(out, "01")
    first, second = phantom_truth(out, "01", "ses-01"), phantom_truth(out, "01", "02")
    assert np.array_equal(_load(first.t1w), _load(second.t1w))
    assert np.array_equal(_load(first.pet_activity), _load(second.pet_activity))
    poses = [json.loads(t.transforms.read_text())["TemplateToScannerAffine"] for t in (first, second)]
    assert not np.allclose(poses[0], poses[1])
