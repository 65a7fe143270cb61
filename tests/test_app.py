"""The BIDS-App end to end on the phantom: derivatives, validation, reuse of the work dir, failures, model rule."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bids import BIDSLayout

from bids_jdam.bids.validator import find_validator, run_bids_validator
from bids_jdam.cli.run import build_parser, main, run_config
from bids_jdam.methods.registry import Method
from bids_jdam.runtime.denormals import flush_supported
from bids_jdam.workflows.run_config import RunConfig
from tests.conftest import copy_preprocessed

FAST = ["--sampler", "heun", "--steps", "2", "--skip-bids-validation"]


def snapshot(root: Path) -> dict[str, tuple[int, float]]:
    """Every file under root with its size and mtime: proof that nothing was written there."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(root.rglob("*"))}


def with_healthy_reference(model_dir: Path, bids_dir: Path, target: Path) -> Path:
    """A copy of ``model_dir`` with a healthy reference of the phantom's four subjects' truth (all taken as CN)
    and an AD-pattern interval of 0.5 z fitted for the app run below (heun, 2 steps, K = 2, two planes)."""
    from bids_jdam.config import JDAMConfig
    from bids_jdam.methods.model_card import PatternInterval
    from bids_jdam.methods.model_dir import update_model_card
    from bids_jdam.workflows.healthy_reference import record_healthy_reference
    from bids_jdam.workflows.training_data import load_phantom_truth_subjects

    shutil.copytree(model_dir, target)
    cfg = JDAMConfig.from_dict(
        {k: v for k, v in json.loads((target / "config.json").read_text()).items() if k != "method"}
    )
    truth = load_phantom_truth_subjects(bids_dir, cfg, ["01", "02", "03", "04"])
    assert record_healthy_reference(target, [replace(v, diagnosis="CN") for v in truth], cfg.grid.spacing_mm)
    interval = PatternInterval(half_width_z=0.5, level=0.9, sampler="heun", steps=2, num_samples=2, planes=2,
                               subjects=9, reference_subjects=4)  # fmt: skip
    update_model_card(target, {"ad_pattern_interval": interval.to_dict()})
    return target


@pytest.fixture(scope="module")
def app_run(phantom_dataset, tiny_model_dir, preprocessed_work, tmp_path_factory):
    """One participant-level run (2 subjects, K=2, two planes) shared by the assertions below; the T1w steps come
    from the session's cache, the synthesis, the outputs and the PET in T1w space are this run's. Its model has a
    healthy reference."""
    before = snapshot(phantom_dataset)
    out = tmp_path_factory.mktemp("app") / "out"
    model = with_healthy_reference(tiny_model_dir, phantom_dataset, out.parent / "model")
    work = copy_preprocessed(preprocessed_work, out.parent / "work")
    args = [
        str(phantom_dataset),
        str(out),
        "participant",
        "--participant-label",
        "01",
        "sub-02",
        "--model",
        str(model),
        "--num-samples",
        "2",
        "--planes",
        "axial",
        "coronal",
        "-w",
        str(work),
        *FAST,
    ]
    rc = main(args)
    return {"rc": rc, "out": out, "work": work, "args": args, "before": before}


def test_participant_level_writes_bids_derivatives(app_run, phantom_dataset):
    assert app_run["rc"] == 0
    out = app_run["out"]
    for sub in ("01", "02"):
        pet = out / f"sub-{sub}" / "pet"
        for space in ("T1w", "MNI152NLin2009aSym"):
            for desc in ("jdam", "jdamstd", "jdamviewstd", "zscore"):
                image = pet / f"sub-{sub}_trc-FDG_space-{space}_desc-{desc}_pet.nii.gz"
                assert image.is_file(), image
                sidecar = json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
                assert sidecar["SkullStripped"] is True and sidecar["Units"] == "unitless"
                assert sidecar["Sources"] == [f"bids:raw:sub-{sub}/anat/sub-{sub}_T1w.nii.gz"]
                assert sidecar["NetworkPrecision"] == "fp32" and sidecar["SamplingPlanes"] == ["axial", "coronal"]
                assert sidecar["SamplingDevice"] == "cpu" and sidecar["NoiseKey"] == f"sub-{sub}"
                assert sidecar["SubnormalFloatsFlushedToZero"] is flush_supported()
                notes = sidecar["CalibrationNotes"]  # two planes: neither calibration was fitted for this run
                assert "this run uses" in notes["regional_interval"] or "records no" in notes["regional_interval"]
                assert "2 plane(s)" in notes["spread"] or "records no spread calibration" in notes["spread"]
        native = nib.load(pet / f"sub-{sub}_trc-FDG_space-T1w_desc-jdam_pet.nii.gz")
        source = nib.load(phantom_dataset / f"sub-{sub}" / "anat" / f"sub-{sub}_T1w.nii.gz")
        assert native.shape == source.shape and np.allclose(native.affine, source.affine, atol=1e-4)
        assert (out / f"sub-{sub}.html").is_file()
        assert (out / f"sub-{sub}" / "figures" / f"sub-{sub}_desc-jdam_metrics.json").is_file()
        assert list((out / f"sub-{sub}" / "anat").glob("*_xfm.*"))
    assert not (out / "sub-03").exists()
    assert not list(out.glob(".staging-*"))
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "bids-jdam"


def test_each_image_has_an_aal3_regional_table_with_its_real_pet(app_run):
    table = app_run["out"] / "sub-01" / "pet" / "sub-01_trc-FDG_space-MNI152NLin2009aSym_seg-AAL3_desc-jdam_pet.tsv"
    rows = [line.split("\t") for line in table.read_text().splitlines()]
    assert rows[0] == [
        "index",
        "label_name",
        "voxels",
        "mean_synthetic_suvr",
        "ci90_lower",
        "ci90_upper",
        "mean_synthetic_sd",
        "mean_real_suvr",
        "healthy_mean_suvr",
        "healthy_sd_suvr",
        "zscore",
        "zscore_ci90_lower",
        "zscore_ci90_upper",
        "real_zscore",
    ]
    by_name = {row[1]: row for row in rows[1:]}
    assert {"Precuneus_L", "Cingulate_Post_R", "Cerebellum_Crus1_L", "AD_metaROI"} <= set(by_name)
    assert by_name["AD_metaROI"][0] == "1000" and int(by_name["AD_metaROI"][2]) > int(by_name["Angular_L"][2])
    # the test model is untrained, so its synthetic values are only finite; the real PET's are uptake
    bad = [row for row in rows[1:] if not (np.isfinite(float(row[3])) and float(row[6]) >= 0 and float(row[7]) > 0)]
    assert not bad, bad
    assert all(row[4] == row[5] == "n/a" for row in rows[1:])  # K = 2 and two planes: not what it was fitted for
    sidecar = json.loads(table.with_suffix(".json").read_text())
    assert set(rows[0]) <= set(sidecar) and "phantoms" in sidecar["Description"]
    assert "n/a in this table: the regional interval was fitted for" in sidecar["ci90_lower"]["Description"]
    meta = by_name["AD_metaROI"]
    z = (float(meta[3]) - float(meta[8])) / float(meta[9])
    assert float(meta[10]) == pytest.approx(z, abs=1e-3) and float(meta[13]) > float(meta[10])  # real PET's z
    score = sidecar["ADPatternScore"]  # the meta-ROI's z with the interval the card's AD-pattern record gives
    assert score["z"] == pytest.approx(z, abs=1e-3) and score["upper"] - score["lower"] == pytest.approx(1.0)
    assert score["reference_subjects"] == 4 and "9 held-out subjects" in score["interval"]


def test_the_report_reads_the_regional_table_against_the_healthy_reference(app_run):
    metrics = json.loads((app_run["out"] / "sub-01" / "figures" / "sub-01_desc-jdam_metrics.json").read_text())
    assert metrics["ad_pattern"]["upper"] - metrics["ad_pattern"]["lower"] == pytest.approx(1.0)
    report = (app_run["out"] / "sub-01.html").read_text()
    assert "Regional FDG against healthy controls" in report and "AD-pattern score (meta-ROI z)" in report
    assert (app_run["out"] / "sub-01" / "figures" / "sub-01_desc-zscore_pet.png").is_file()


def test_input_dataset_is_never_written(app_run, phantom_dataset):
    assert snapshot(phantom_dataset) == app_run["before"]


def test_outputs_index_with_pybids_and_pass_the_validator(app_run, phantom_dataset):
    layout = BIDSLayout(phantom_dataset, derivatives=str(app_run["out"]), validate=False)
    found = layout.derivatives.get_pipeline("bids-jdam").get(desc="jdam", suffix="pet", extension=".nii.gz")
    assert len(found) == 4
    try:
        find_validator()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"bids-validator-deno unavailable: {error}")
    result = run_bids_validator(app_run["out"])
    assert result.ok, result.errors


def test_phantom_quality_is_scored_against_the_real_pet(app_run):
    metrics = json.loads((app_run["out"] / "sub-01" / "figures" / "sub-01_desc-jdam_metrics.json").read_text())
    assert metrics["quality"] is not None and np.isfinite(metrics["quality"]["psnr"])
    assert np.isfinite(metrics["quality"]["native_psnr"]) and 0 < metrics["quality"]["native_ssim"] <= 1  # T1w space
    assert -1.0 <= metrics["quality"]["sd_error_correlation"] <= 1.0  # K = 2: the sampling SD map is scored
    assert -1.0 <= metrics["quality"]["view_sd_error_correlation"] <= 1.0  # two planes: so is the view SD map
    assert metrics["model"]["trained_on_phantoms"] is True
    assert metrics["in_training_set"] is not None


@pytest.mark.slow  # a second whole run; the step cache's reuse is tested directly in test_preprocess_pipeline.py
def test_second_run_reuses_the_work_dir(app_run):
    records = sorted(app_run["work"].glob("sub-*/*.json"))
    assert len(records) >= 2 * 8  # every T1w and PET step of both subjects
    before = {record: record.stat().st_mtime_ns for record in records}
    assert main(app_run["args"]) == 0
    assert {record: record.stat().st_mtime_ns for record in records} == before  # no step ran again


def test_options_not_given_keep_the_model_s_sampler_settings(app_run, phantom_dataset, tiny_model_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["sampler"].update(num_samples=2, seed=5)
    (model / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    rc = main(
        [
            str(phantom_dataset),
            str(out),
            "participant",
            "--participant-label",
            "01",
            "--model",
            str(model),
            "-w",
            str(app_run["work"]),
            "--skip-bids-validation",
        ]
    )
    assert rc == 0
    sidecar = json.loads((out / "sub-01" / "pet" / "sub-01_trc-FDG_space-T1w_desc-jdam_pet.json").read_text())
    assert (sidecar["Sampler"], sidecar["SamplerSteps"]) == (config["sampler"]["name"], config["sampler"]["steps"])
    assert sidecar["NumberOfSamples"] == 2 and sidecar["RandomSeed"] == 5
    calibration = json.loads((model / "model_card.json").read_text())["calibration"]
    calibrated = (calibration.get("sampler"), calibration.get("steps")) == (sidecar["Sampler"], sidecar["SamplerSteps"])
    temperature = calibration["temperature"] if calibrated else 1.0  # the card's, for the sampler it was fitted with
    assert sidecar["SamplerTemperature"] == temperature
    assert (out / "sub-01" / "pet" / "sub-01_trc-FDG_space-T1w_desc-jdamstd_pet.nii.gz").is_file()  # K = 2
    metrics = json.loads((out / "sub-01" / "figures" / "sub-01_desc-jdam_metrics.json").read_text())
    assert metrics["sampler"] == {
        "name": config["sampler"]["name"],
        "steps": config["sampler"]["steps"],
        "num_samples": 2,
        "seed": 5,
        "temperature": temperature,
    }


def test_the_cli_builds_one_run_configuration_from_the_options_given(tmp_path):
    plain = run_config(build_parser().parse_args([str(tmp_path), str(tmp_path / "out"), "participant"]))
    assert plain == RunConfig(tmp_path, tmp_path / "out", "participant")
    assert (plain.sampler, plain.steps, plain.num_samples, plain.seed) == (None, None, None, None)
    assert plain.work_directory == tmp_path / "out" / ".work"
    given = run_config(
        build_parser().parse_args(
            [
                str(tmp_path),
                str(tmp_path / "out"),
                "participant",
                "--participant-label",
                "01",
                "sub-02",
                "--seed",
                "0",
                "--planes",
                "axial",
                "coronal",
                "--compile",
                "-w",
                str(tmp_path / "w"),
                "-vv",
            ]
        )
    )
    assert given.participant_labels == ("01", "sub-02") and given.seed == 0 and given.compile_network
    assert given.planes == ("axial", "coronal") and given.work_directory == tmp_path / "w" and given.verbose == 2


def test_group_level_summarises_participants(app_run, phantom_dataset):
    assert main([str(phantom_dataset), str(app_run["out"]), "group"]) == 0
    table = (app_run["out"] / "group_metrics.tsv").read_text().splitlines()
    assert len(table) == 1 + 2
    html = (app_run["out"] / "group_report.html").read_text()
    assert "sub-03" in html and "sub-04" in html  # listed as without outputs


def test_corrupt_t1w_fails_only_that_participant(app_run, phantom_dataset, tiny_model_dir, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(phantom_dataset, bids, ignore=shutil.ignore_patterns("derivatives"))
    (bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "out"
    rc = main(
        [
            str(bids),
            str(out),
            "participant",
            "--participant-label",
            "01",
            "02",
            "--model",
            str(tiny_model_dir),
            "-w",
            str(app_run["work"]),
            *FAST,
        ]
    )
    assert rc == 1
    assert (out / "sub-01" / "pet" / "sub-01_trc-FDG_space-MNI152NLin2009aSym_desc-jdam_pet.nii.gz").is_file()
    assert not (out / "sub-02").exists()
    assert "sub-02" in capsys.readouterr().err


@pytest.mark.parametrize("labels", [["99"], ["sub-99"]])
def test_unknown_participant_is_an_error(phantom_dataset, tiny_model_dir, tmp_path, capsys, labels):
    rc = main(
        [
            str(phantom_dataset),
            str(tmp_path / "out"),
            "participant",
            "--participant-label",
            *labels,
            "--model",
            str(tiny_model_dir),
            *FAST,
        ]
    )
    assert rc == 1 and "99" in capsys.readouterr().err


def test_not_a_bids_dataset(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "out"), "participant"]) == 1
    assert "dataset_description.json" in capsys.readouterr().err


def test_demo_model_refused_on_a_non_phantom_dataset(phantom_dataset, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(phantom_dataset, bids, ignore=shutil.ignore_patterns("derivatives"))
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "real study", "BIDSVersion": "1.10.0"}))
    assert main([str(bids), str(tmp_path / "out"), "participant", *FAST]) == 1
    err = capsys.readouterr().err
    assert "bids-jdam-train" in err and "--model demo" in err


def test_output_inside_the_input_dataset_is_refused(phantom_dataset, capsys):
    assert main([str(phantom_dataset), str(phantom_dataset / "derivatives" / "x"), "participant"]) == 1
    assert "never writes" in capsys.readouterr().err


def test_cuda_requested_without_gpu(phantom_dataset, tiny_model_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    rc = main(
        [
            str(phantom_dataset),
            str(tmp_path / "out"),
            "participant",
            "--device",
            "cuda",
            "--model",
            str(tiny_model_dir),
            *FAST,
        ]
    )
    assert rc == 1 and "--device auto" in capsys.readouterr().err


class ToyLinear(Method):
    """A method registered by this test only (on the registry's base class, as any new method would be): one 1x1
    convolution from MRI to PET, trained by L1."""

    name = "toy-linear"
    summary = "a 1x1 convolution (test only)"
    probabilistic = False
    multi_process = True
    condition_channels = 1

    def configure(self, cfg):
        return cfg

    def prepare(self, cfg, training, from_data):
        return cfg

    def build_network(self, cfg):
        return torch.nn.Conv2d(1, 1, 1)

    def as_model(self, net, cfg):
        return net

    def loss(self, model, cfg, pet, mri, generator, step):
        return (model(mri) - pet).abs().mean()

    def trainer(self, cfg, dataset, device, seed, ranks):
        from bids_jdam.training.network_trainer import NetworkTrainer

        return NetworkTrainer(self, cfg, dataset, device, seed, ranks)

    def predict(self, model, cfg, mri, keys, sampler, device):
        return model(mri.to(device))

    def network_evaluations(self, sampler):
        return 1

    def card_fields(self, cfg):
        return {"toy": True}

    def stored_config(self, config, card):
        return config


@pytest.fixture
def toy_method():
    from bids_jdam.methods import METHODS

    METHODS.register(ToyLinear())
    yield ToyLinear.name
    METHODS.unregister(ToyLinear.name)


def test_a_method_registered_elsewhere_trains_saves_loads_and_predicts_through_the_cli(
    toy_method, app_run, phantom_dataset, tmp_path
):
    """Adding a method is one registry entry: no other file knows about it, yet both commands run it."""
    from bids_jdam.cli.train import main as train_main

    model_dir = tmp_path / "toy"
    assert (
        train_main(
            [
                str(phantom_dataset),
                str(model_dir),
                "--phantom-truth",
                "--small",
                "--method",
                toy_method,
                "--max-steps",
                "3",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["method"] == toy_method and card["toy"] is True and card["steps"] == 3
    out = tmp_path / "out"
    assert (
        main(
            [
                str(phantom_dataset),
                str(out),
                "participant",
                "--participant-label",
                "01",
                "--model",
                str(model_dir),
                "-w",
                str(app_run["work"]),
                "--skip-bids-validation",
            ]
        )
        == 0
    )
    pet = out / "sub-01" / "pet" / "sub-01_trc-FDG_space-MNI152NLin2009aSym_desc-jdam_pet.nii.gz"
    sidecar = json.loads(pet.with_name(pet.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["ModelMethod"] == toy_method and "one deterministic prediction" in sidecar["Description"]
    assert np.isfinite(nib.load(pet).get_fdata()).all()
    assert not list((out / "sub-01" / "pet").glob("*desc-jdamstd*"))  # one prediction: no spread map


def test_group_level_fails_naming_an_unreadable_metrics_file(app_run, phantom_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(app_run["out"], out)
    broken = next(out.glob("sub-*/figures/*_desc-jdam_metrics.json"))
    broken.write_text("{ truncated")
    assert main([str(phantom_dataset), str(out), "group"]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "left out of the group table" in err and "Traceback" not in err
