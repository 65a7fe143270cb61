"""Regional intervals calibrated as regions: the conformal quantile, its coverage on a known case, the table."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.config import SamplerConfig
from bids_jdam.data.atlas import atlas_on_grid
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.template import grid_affine
from bids_jdam.errors import InputError
from bids_jdam.evaluate.atlas_suvr import regional_suvr
from bids_jdam.evaluate.calibration import conformal_quantile
from bids_jdam.evaluate.regional_interval import fit_regional_interval, regional_errors, regional_tables
from bids_jdam.methods.model_card import ModelCard, RegionalInterval
from bids_jdam.reports.regional_table import write_regional_table
from bids_jdam.synthesis.sampling_plan import plan_sampling
from tests.test_bids_derivatives import anat_input, provenance

SPACING = 4.0
SAMPLER = SamplerConfig(name="heun", steps=18, num_samples=1)


def test_conformal_quantile_is_the_finite_sample_quantile():
    assert conformal_quantile(np.arange(1.0, 10.0), 0.9) == 9.0  # ceil(10 * 0.9) = 9th of 9
    assert conformal_quantile(np.arange(1.0, 20.0), 0.9) == 18.0  # ceil(20 * 0.9) = 18th of 19
    assert math.isinf(conformal_quantile(np.arange(1.0, 6.0), 0.9))  # 5 scores cannot give 90 %


def subjects(count: int, seed: int) -> list[SubjectVolumes]:
    """Real PET with a uniform value per region; the 'synthesis' (below) misses each region by N(0, 0.1)."""
    labels = np.asarray(atlas_on_grid("AAL3", SPACING))
    rng = np.random.default_rng(seed)
    made = []
    for index in range(count):
        pet = (1.0 + 0.2 * rng.random(labels.max() + 1))[labels].astype(np.float32)
        made.append(
            SubjectVolumes(
                subject=f"{seed}{index:02d}",
                diagnosis="CN",
                t1=pet.copy(),
                pet=pet,
                brain_mask=labels > 0,
                affine=grid_affine(SPACING),
            )
        )
    return made


def synthesis(seed: int):
    rng = np.random.default_rng(seed)
    labels = np.asarray(atlas_on_grid("AAL3", SPACING))

    def synthesize(subject: SubjectVolumes) -> np.ndarray:
        return subject.pet + rng.normal(0.0, 0.1, labels.max() + 1)[labels]

    return synthesize


def test_the_interval_fitted_on_held_out_subjects_covers_new_subjects_regions_as_often_as_it_says():
    interval = fit_regional_interval(regional_tables(synthesis(1), subjects(4, seed=1), SPACING), SAMPLER, ("axial",))
    assert interval.subjects == 4 and interval.pairs > 4 * 150
    assert interval.half_width_suvr == pytest.approx(1.645 * 0.1, rel=0.15)
    errors = regional_errors(regional_tables(synthesis(2), subjects(10, seed=2), SPACING))
    assert 0.86 <= np.mean(errors <= interval.half_width_suvr) <= 0.94


def test_the_interval_applies_only_to_the_synthesis_it_was_fitted_for():
    interval = RegionalInterval(
        half_width_suvr=0.1, level=0.9, sampler="heun", steps=18, num_samples=1, planes=1, subjects=4, pairs=600
    )
    card = {"name": "m", "method": "jdam", "sha256": {"w": "0"}, "training_data": {"subjects": {"train": []}}}
    fitted = ModelCard.read(card | {"regional_interval": interval.to_dict()}, Path("card"), "m", "w")
    plan = plan_sampling(fitted, SAMPLER, ("axial",))
    assert plan.regional_interval == interval and "600 (subject, region) pairs" in plan.interval_reason
    plan = plan_sampling(fitted, SamplerConfig(name="heun", steps=18, num_samples=4), ("axial",))
    assert plan.regional_interval is None and "K = 1" in plan.interval_reason and "K = 4" in plan.interval_reason
    plan = plan_sampling(ModelCard.read(card, Path("card"), "m", "w"), SAMPLER, ("axial",))
    assert plan.interval_reason.startswith("the model m records no regional")
    with pytest.raises(InputError, match="regional_interval"):
        RegionalInterval.from_dict({**interval.to_dict(), "half_width_suvr": -1}, "card")


def test_the_table_gives_each_region_its_hand_computed_mean_and_bounds(tmp_path):
    labels = np.asarray(atlas_on_grid("AAL3", SPACING))
    synthetic = np.where(labels > 0, 1.0 + labels / 1000.0, 0.0)
    rows = regional_suvr(synthetic, labels > 0, SPACING)
    interval = RegionalInterval(
        half_width_suvr=0.25, level=0.9, sampler="heun", steps=18, num_samples=1, planes=1, subjects=4, pairs=600
    )
    with ParticipantStaging(tmp_path, "01") as staging:
        plan = SimpleNamespace(regional_interval=interval, interval_reason="fitted")
        table = write_regional_table(anat_input(sub="01"), rows, provenance(), staging, plan)
        lines = [line.split("\t") for line in table.read_text().splitlines()]
    header, by_name = lines[0], {line[1]: line for line in lines[1:]}
    assert header[3:6] == ["mean_synthetic_suvr", "ci90_lower", "ci90_upper"]
    precuneus = by_name["Precuneus_L"]
    expected = synthetic[labels == int(precuneus[0])].mean()
    assert float(precuneus[3]) == pytest.approx(expected, abs=1e-5)
    assert float(precuneus[4]) == pytest.approx(expected - 0.25, abs=1e-5)
    assert float(precuneus[5]) == pytest.approx(expected + 0.25, abs=1e-5)
