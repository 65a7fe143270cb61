"""Training: data splits and slices, exact resume, the L1 baseline, and the bids-jdam-train command."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bids_jdam.cli.train import main as train_main
from bids_jdam.config import JDAMConfig, NetworkConfig, SamplerConfig, small_config
from bids_jdam.data.dataset import PairedSliceDataset, SubjectVolumes, read_splits, split_subjects
from bids_jdam.errors import InputError
from bids_jdam.evaluate.calibration import CALIBRATION_TEMPERATURES
from bids_jdam.evaluate.validation import predict_slices
from bids_jdam.methods import DEFAULT_METHOD, METHODS
from bids_jdam.methods.model_dir import PHANTOM_WARNING, WEIGHTS, load_model_dir
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.loop import Budget
from bids_jdam.training.network_trainer import NetworkTrainer
from bids_jdam.workflows.train import TrainingRun, train_model

SHAPE = (12, 14, 10)
DIAGNOSES = {"01": "CN", "02": "AD", "03": "CN", "04": "AD", "05": "CN"}


def synthetic_subjects(bids_dir, cfg, subjects):
    """Ellipsoid brains whose PET is a smooth function of the T1w: enough to exercise training."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    mask = (grid**2).sum(axis=0) < 0.8
    volumes = []
    for subject in subjects:
        rng = np.random.default_rng(int(subject))
        t1 = (0.6 + 0.3 * np.cos(3 * grid[0] + rng.uniform()) * mask).astype(np.float32) * mask
        pet = (1.5 - t1 + 0.1 * rng.normal(size=SHAPE)).astype(np.float32) * mask
        volumes.append(SubjectVolumes(subject, DIAGNOSES[subject], t1, pet, mask, np.diag([4.0, 4, 4, 1])))
    return volumes


@pytest.fixture
def tiny_cfg():
    cfg = small_config()
    cfg.grid.slice_size = 16
    cfg.network = NetworkConfig(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0, num_groups=4
    )
    cfg.train.batch_size = 4
    cfg.train.warmup_steps = 3
    cfg.train.checkpoint_every = 3
    cfg.train.planes = ("axial", "sagittal")
    cfg.sampler = SamplerConfig(name="heun", steps=3)  # every method's own (the calibrations sample with it)
    return cfg


@pytest.fixture
def bids_dir(tmp_path):
    path = tmp_path / "bids"
    path.mkdir()
    rows = "".join(f"sub-{s}\t{d}\n" for s, d in DIAGNOSES.items())
    (path / "participants.tsv").write_text("participant_id\tdiagnosis\n" + rows)
    return path


def test_split_is_seeded_balanced_and_disjoint():
    diagnoses = {f"{i:02d}": ("AD" if i % 2 else "CN") for i in range(20)}
    splits = split_subjects(diagnoses, 0.2, seed=3)
    assert splits == split_subjects(diagnoses, 0.2, seed=3)
    assert splits != split_subjects(diagnoses, 0.2, seed=4)
    assert sorted(diagnoses[s] for s in splits["validation"]) == ["AD", "AD", "CN", "CN"]
    assert not set(splits["train"]) & set(splits["validation"])
    assert len(splits["train"]) + len(splits["validation"]) == 20


def test_dataset_holds_only_brain_slices(tiny_cfg):
    volumes = synthetic_subjects(None, tiny_cfg, ["01", "02"])
    dataset = PairedSliceDataset(volumes, ("axial", "coronal"), 16)
    brain_axial = int(volumes[0].brain_mask.any(axis=(0, 1)).sum())
    brain_coronal = int(volumes[0].brain_mask.any(axis=(0, 2)).sum())
    assert len(dataset) == 2 * (brain_axial + brain_coronal) < 2 * (SHAPE[2] + SHAPE[1])
    item = dataset[0]
    assert item.pet.shape == item.mri.shape == (1, 16, 16)
    assert item.plane == "axial" and item.subject == "01"
    assert item.mri.sum() > 0


def _run(bids_dir, out_dir, cfg, max_steps, resume=False, method="jdam", minutes=None):
    run = TrainingRun(
        bids_dir,
        out_dir,
        method=method,
        load_subjects=synthetic_subjects,
        budget=Budget(max_steps=max_steps, minutes=minutes),
        resume=resume,
        device="cpu",
        progress=False,
        validation_sampler=SamplerConfig(name="heun", steps=3, corrector_steps=0),
    )
    return train_model(run, cfg)


def test_resume_is_bit_exact(bids_dir, tmp_path, tiny_cfg):
    straight = _run(bids_dir, tmp_path / "straight", tiny_cfg, 6)
    # nothing to resume yet
    halfway = load_file(_run(bids_dir, tmp_path / "resumed", tiny_cfg, 3, resume=True) / WEIGHTS)
    resumed = _run(bids_dir, tmp_path / "resumed", tiny_cfg, 6, resume=True)
    a, b = load_file(straight / WEIGHTS), load_file(resumed / WEIGHTS)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], halfway[k]) for k in a)
    card = json.loads((resumed / "model_card.json").read_text())
    assert card["steps"] == 6
    assert set(card["training_data"]["subjects"]["validation"]) == set(
        read_splits(resumed / "splits.json")["validation"]
    )
    assert card["validation"]["n_subjects"] == len(card["training_data"]["subjects"]["validation"]) > 0
    assert np.isfinite(card["validation"]["psnr_db"])
    calibration = card["calibration"]  # fitted on the held-out subjects' K samples
    assert calibration["spread_scale"] > 0 and calibration["num_samples"] == 4 and calibration["voxels"] > 0
    assert set(calibration["crps_by_temperature"]) == {f"{t:g}" for t in CALIBRATION_TEMPERATURES}
    assert calibration["crps_by_temperature"][f"{calibration['temperature']:g}"] == min(
        calibration["crps_by_temperature"].values()
    )  # the temperature chosen scores the lowest calibrated CRPS
    config = json.loads((resumed / "config.json").read_text())
    assert config["sde"]["sigma_max"] != tiny_cfg.sde.sigma_max  # chosen from the training slices
    with pytest.raises(InputError, match="not unet-l1"):
        _run(bids_dir, tmp_path / "resumed", tiny_cfg, 8, resume=True, method="unet-l1")


def test_l1_unet_learns_the_mapping(bids_dir, tmp_path, tiny_cfg):
    tiny_cfg.train.lr = 3e-3
    model_dir = _run(bids_dir, tmp_path / "l1", tiny_cfg, 20, method="unet-l1")
    model, cfg, card = load_model_dir(model_dir)
    assert card["method"] == "unet-l1" and cfg.sde.sigma_max == tiny_cfg.sde.sigma_max
    assert card["validation"]["mae_suvr"] < 0.45  # predicting zero would give about 0.8
    assert "deterministic" in card["calibration"]["note"]


def test_unconditional_trainer_never_sees_the_mri(tiny_cfg):
    method = METHODS.named("sde-unconditional")
    dataset = PairedSliceDataset(synthetic_subjects(None, tiny_cfg, ["01"]), ("axial",), 16)
    trainer = method.trainer(method.configure(tiny_cfg), dataset, torch.device("cpu"), seed=0, ranks=Ranks())
    assert trainer.net.conditional is False and tiny_cfg.network.conditional is True
    assert np.isfinite(trainer.train_step())


def test_held_out_subjects_do_not_share_sampling_noise(tiny_cfg):
    """Identical slices of two subjects get different samples, so their errors are independent across subjects."""
    jdam = METHODS.named("jdam")
    net = NetworkTrainer(
        jdam,
        tiny_cfg,
        PairedSliceDataset(synthetic_subjects(None, tiny_cfg, ["01"]), ("axial",), 16),
        torch.device("cpu"),
        seed=0,
    ).ema_model()
    mri = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)).repeat(3, 1, 1, 1)
    keys = [("01", "axial", 5), ("02", "axial", 5), ("01", "axial", 5)]
    sampler = SamplerConfig(name="ancestral", steps=4, seed=0)
    prediction = predict_slices(jdam, net, tiny_cfg, mri, keys, sampler, torch.device("cpu"))
    assert torch.equal(prediction[0], prediction[2])
    assert not torch.allclose(prediction[0], prediction[1])


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert train_main([str(tmp_path / "missing"), str(tmp_path / "out"), "--phantom-truth", "--small"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "participants.tsv" in error


def test_the_default_method_samples_with_its_own_sampler():
    cfg = METHODS.named(DEFAULT_METHOD).configure(small_config())
    assert DEFAULT_METHOD == "jdam-residual"
    assert (cfg.sampler.name, cfg.sampler.steps) == ("heun", 18)  # its own sampler, not the paper's PC-1000


def test_cli_trains_on_the_phantom(phantom_dataset, tmp_path):
    """The default method through the CLI; a two-step sampler in the configuration keeps the calibrations cheap."""
    out = tmp_path / "model"
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "network": {"channels": 8, "channel_mult": [1, 2], "num_groups": 4},
                "train": {"planes": ["axial"], "batch_size": 2},
                "sampler": {"name": "heun", "steps": 2},
            }
        )
    )
    args = [
        str(phantom_dataset),
        str(out),
        "--phantom-truth",
        "--small",
        "--config",
        str(config),
        "--max-steps",
        "2",
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert train_main(args) == 0
    _, cfg, card = load_model_dir(out)
    assert card["steps"] == 2 and cfg.network.channels == 8
    assert not (out / "work").exists()  # the slice store is gone and no empty work/ is left behind to upload
    assert card["method"] == "jdam-residual" and card["residual_diffusion"]  # the default method
    assert (cfg.sampler.name, cfg.sampler.steps) == ("heun", 2)  # the configuration's sampler stays
    calibration = card["calibration"]
    assert "spread_scale" not in calibration or (calibration["sampler"], calibration["steps"]) == ("heun", 2)
    regional = card["regional_interval"]  # fitted on the validation subjects for a default run
    assert (regional["sampler"], regional["steps"], regional["planes"]) == ("heun", 2, 1)
    held_out = card["training_data"]["subjects"]["validation"]
    assert regional["half_width_suvr"] > 0 and regional["subjects"] == len(held_out)
    assert PHANTOM_WARNING in card["intended_use"]
    assert PHANTOM_WARNING in (out / "README.md").read_text()  # the Hub model card, ready to upload
    assert (out / "checkpoints").is_dir()


@pytest.mark.slow
def test_cli_trains_on_raw_bids_pairs_through_preprocessing(phantom_dataset, tmp_path):
    """Without --phantom-truth the pairs come from pybids and the real preprocessing, cached per image."""
    out, work = tmp_path / "model", tmp_path / "work"
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "network": {"channels": 8, "channel_mult": [1, 2], "num_groups": 4},
                "train": {"planes": ["axial"], "batch_size": 2},
            }
        )
    )
    args = [
        str(phantom_dataset),
        str(out),
        "--small",
        "--config",
        str(config),
        "-w",
        str(work),
        "--max-steps",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--omp-nthreads",
        "1",
    ]
    assert train_main(args) == 0
    _, _, card = load_model_dir(out)
    assert card["steps"] == 2
    subjects = sorted(p.name for p in phantom_dataset.glob("sub-*"))
    assert sorted(p.name for p in work.iterdir() if p.name.startswith("sub-")) == subjects
    for subject in subjects:
        assert (work / subject / "pet_suvr_model.nii.gz").is_file()


@pytest.mark.parametrize("method", ["jdam", "cyclegan"])
def test_training_and_validation_run_with_subnormals_flushed(bids_dir, tmp_path, tiny_cfg, monkeypatch, method):
    """Training steps and held-out prediction run with subnormals flushed (Intel CPUs are slow on subnormals)."""
    from bids_jdam.runtime.denormals import flush_supported, subnormals_flushed
    from bids_jdam.training.trainer import Trainer

    if not flush_supported():
        pytest.skip("this CPU cannot flush subnormal floats")
    seen = []
    step_owner = Trainer
    original = step_owner.train_step
    monkeypatch.setattr(step_owner, "train_step", lambda self: (seen.append(subnormals_flushed()), original(self))[1])
    _run(bids_dir, tmp_path / method, tiny_cfg, 2, method=method)
    assert seen == [True, True]
    assert not subnormals_flushed()


@pytest.mark.parametrize("method", METHODS.names())
def test_a_first_resume_starts_fresh_for_every_method(bids_dir, tmp_path, tiny_cfg, method):
    """``--resume`` on a folder without checkpoints trains from scratch, whatever the method."""
    model_dir = _run(bids_dir, tmp_path / method, tiny_cfg, 2, resume=True, method=method)
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["method"] == method and card["steps"] == 2
    assert [point["step"] for point in card["training_curve"]] == [2]


@pytest.mark.parametrize("method", METHODS.names())
def test_zero_minutes_trains_no_step_for_every_method(bids_dir, tmp_path, tiny_cfg, method):
    """``--minutes 0`` means the same for every method: no training step in this run."""
    resumed = _run(bids_dir, tmp_path / method, tiny_cfg, 2, method=method)
    again = _run(bids_dir, tmp_path / method, tiny_cfg, 10, resume=True, method=method, minutes=0)
    card = json.loads((again / "model_card.json").read_text())
    assert card["steps"] == 2
    before, after = load_file(resumed / WEIGHTS), load_file(again / WEIGHTS)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_residual_jdam_samples_around_its_mean_network(tiny_cfg):
    """x = mu(y) + r: every sample is the mean network's output plus a sampled residual, with its own noise."""
    method = METHODS.named("jdam-residual")
    own = JDAMConfig.from_dict(tiny_cfg.to_dict())  # configure() edits the sections it is given
    own.sampler = dataclasses.replace(own.sampler, name="ancestral", steps=12)
    assert method.configure(own).sampler == own.sampler  # a sampler the configuration chose stays
    cfg = method.configure(tiny_cfg)
    assert cfg.sde.sigma_data == 0.1 and cfg.loss.p_mean < tiny_cfg.loss.p_mean  # rescaled to the residual
    dataset = PairedSliceDataset(synthetic_subjects(None, cfg, ["01"]), ("axial",), 16)
    trainer = method.trainer(cfg, dataset, torch.device("cpu"), seed=0, ranks=Ranks())
    assert np.isfinite(trainer.train_step())
    model = trainer.ema_model()
    mri = dataset.stacked([0, 1])[1]
    sampler = SamplerConfig(name="heun", steps=3, corrector_steps=0)
    keys = [(0, "sub-01", "axial", i, 0) for i in range(2)]
    first = method.predict(model, cfg, mri, keys, sampler, torch.device("cpu"))
    other = method.predict(
        model, cfg, mri, [(0, "sub-02", "axial", i, 0) for i in range(2)], sampler, torch.device("cpu")
    )
    with torch.no_grad():
        mean = model.mean(mri)
    assert first.shape == mean.shape == mri.shape and torch.isfinite(first).all()
    assert not torch.equal(first, other)  # another image's noise, another residual around the same mean


def test_residual_jdam_trains_its_mean_network_step_for_step_as_the_l1_unet(tiny_cfg):
    """Same initialization, batches, loss and its own gradient clipping: mu after n steps is the U-Net's."""
    tiny_cfg.train.grad_clip = 1e-3  # clipped on every step: a shared norm with the score network would show
    dataset = PairedSliceDataset(synthetic_subjects(None, tiny_cfg, ["01"]), ("axial",), 16)
    trained = {}
    for name in ("unet-l1", "jdam-residual"):
        method = METHODS.named(name)
        cfg = method.configure(JDAMConfig.from_dict(tiny_cfg.to_dict()))
        trainer = method.trainer(cfg, dataset, torch.device("cpu"), seed=0, ranks=Ranks())
        for _ in range(3):
            trainer.train_step()
        trained[name] = trainer.net
    unet, mean = trained["unet-l1"].state_dict(), trained["jdam-residual"].mean.state_dict()
    assert unet.keys() == mean.keys()
    for key in unet:
        torch.testing.assert_close(mean[key], unet[key], rtol=1e-5, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(unet.values(), _initial_unet_weights(tiny_cfg).values()))


def _initial_unet_weights(cfg):
    """The U-Net's weights before any step (so that the test above sees training, not two untouched copies)."""
    torch.manual_seed(0)
    return METHODS.named("unet-l1").build_network(cfg).state_dict()


def test_residual_jdam_trains_its_score_network_on_every_nth_step_only(tiny_cfg):
    """residual_score_every = 2: steps 0 and 2 move the score network, step 1 leaves it as it was."""
    tiny_cfg.train.residual_score_every = 2
    dataset = PairedSliceDataset(synthetic_subjects(None, tiny_cfg, ["01"]), ("axial",), 16)
    method = METHODS.named("jdam-residual")
    cfg = method.configure(JDAMConfig.from_dict(tiny_cfg.to_dict()))
    trainer = method.trainer(cfg, dataset, torch.device("cpu"), seed=0, ranks=Ranks())
    moved = []
    for _ in range(3):
        before = {k: v.clone() for k, v in trainer.net.score.state_dict().items()}
        trainer.train_step()
        moved.append(any(not torch.equal(before[k], v) for k, v in trainer.net.score.state_dict().items()))
    assert moved == [True, False, True]


def test_residual_jdam_refuses_a_score_step_interval_below_one(tiny_cfg):
    tiny_cfg.train.residual_score_every = 0
    with pytest.raises(ValueError, match="residual_score_every must be at least 1"):
        METHODS.named("jdam-residual").configure(tiny_cfg)
