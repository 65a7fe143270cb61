"""Session fixtures: small phantom datasets built once per test session (fast mode, 4 mm model grid)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bids_jdam.data.phantom import generate_phantom_dataset

PHANTOM_SEED = 0

# The test networks are tiny: a second torch thread only adds synchronisation (and on a busy machine it is ~9x
# slower). Production code sets its threads from --omp-nthreads.
torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running tests (deselect with -m 'not slow')")


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fast-mode BIDS phantom: 4 subjects (2 CN, 2 AD), seed 0, 3 T, 4 mm grid; read-only for tests."""
    out = tmp_path_factory.mktemp("phantom") / "bids"
    return generate_phantom_dataset(out, 4, PHANTOM_SEED, fast=True, grid_spacing_mm=4.0, field_strength=3)


@pytest.fixture(scope="session")
def phantom_dataset_clinica(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fast-mode phantom with Clinica adni-to-bids names (sub-ADNI002S0001/ses-M000), 2 subjects."""
    out = tmp_path_factory.mktemp("phantom_clinica") / "bids"
    return generate_phantom_dataset(out, 2, PHANTOM_SEED, fast=True, grid_spacing_mm=4.0, layout="clinica")


@pytest.fixture(scope="session")
def tiny_model_dir(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JDAM model directory with a tiny network trained for two steps on the phantom's truth (plumbing only)."""
    from bids_jdam.config import NetworkConfig, small_config
    from bids_jdam.training.loop import Budget
    from bids_jdam.workflows.train import TrainingRun, train_model

    cfg = small_config()
    cfg.network = NetworkConfig(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(32,), dropout=0.0, num_groups=4
    )
    cfg.train.batch_size = 4
    cfg.train.planes = ("axial",)
    cfg.sampler.name, cfg.sampler.steps = "heun", 2
    out = tmp_path_factory.mktemp("tiny_model") / "model"
    return train_model(
        TrainingRun(phantom_dataset, out, method="jdam", budget=Budget(max_steps=2), device="cpu", progress=False), cfg
    )


PREPROCESSED_SUBJECTS = ("01", "02")


@pytest.fixture(scope="session")
def preprocessed_work(phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The participant workflow's step cache (``-w``) of subjects 01 and 02, T1w and PET, filled once per session.

    Read-only: a test that runs the app on these subjects starts from a copy (:func:`copy_preprocessed`), so each
    image is preprocessed once per session instead of once per run.
    """
    from bids_jdam.config import small_config
    from bids_jdam.preprocess.pipeline import preprocess_pair

    work = tmp_path_factory.mktemp("preprocessed") / "work"
    for subject in PREPROCESSED_SUBJECTS:
        anat = phantom_dataset / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz"
        pet = phantom_dataset / f"sub-{subject}" / "pet" / f"sub-{subject}_trc-FDG_pet.nii.gz"
        preprocess_pair(anat, pet, work / f"sub-{subject}", small_config(), subject_label=subject, nthreads=2)
    return work


def copy_preprocessed(preprocessed_work: Path, work: Path, *, without: tuple[str, ...] = ()) -> Path:
    """A private copy of the session's step cache at ``work``; the steps named in ``without`` are run again."""
    shutil.copytree(preprocessed_work, work)
    for step in without:
        for record in work.glob(f"sub-*/{step}.json"):
            record.unlink()
    return work
