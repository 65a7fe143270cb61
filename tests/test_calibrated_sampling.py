"""The model card's calibration at synthesis: its temperature and scale apply to the sampler they were fitted for."""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from bids_jdam.config import SamplerConfig
from bids_jdam.errors import InputError
from bids_jdam.synthesis.loaded_model import LoadedModel
from bids_jdam.synthesis.sampling_plan import _warn_once, plan_sampling

CALIBRATION = {
    "spread_scale": 2.5,
    "level": 0.9,
    "num_samples": 4,
    "voxels": 100,
    "subjects": 2,
    "sampler": "heun",
    "steps": 18,
    "planes": 1,
    "temperature": 0.5,
}


def _model(tiny_model_dir, tmp_path, calibration):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    card_path = model_dir / "model_card.json"
    card = json.loads(card_path.read_text())
    card["calibration"] = calibration
    card_path.write_text(json.dumps(card))
    return LoadedModel.from_dir(model_dir, "cpu")


def test_the_calibrated_sampler_is_drawn_at_the_card_temperature(tiny_model_dir, tmp_path, caplog):
    _warn_once.cache_clear()
    model = _model(tiny_model_dir, tmp_path, CALIBRATION)
    with caplog.at_level(logging.WARNING, logger="bids_jdam.synthesis"):
        plan = plan_sampling(model.card, SamplerConfig(name="heun", steps=18, num_samples=4), ("axial",))
        sampler, scale = plan.sampler, plan.spread_scale
    assert (sampler.temperature, scale, sampler.num_samples) == (0.5, 2.5, 4)
    assert "not calibrated" not in caplog.text
    for other, planes in (
        (SamplerConfig(name="heun", steps=30), ("axial",)),
        (SamplerConfig(name="heun", steps=18), ("axial", "coronal")),
    ):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bids_jdam.synthesis"):
            plan = plan_sampling(model.card, other, planes)
            assert (plan.sampler, plan.spread_scale) == (other, None)  # fitted for another sampler or planes
        assert "its SD maps are not calibrated" in caplog.text  # said in the log, not silently
        assert "the spread calibration was fitted for sampler heun, 18 steps, 1 plane(s)" in plan.notes()["spread"]


def test_a_card_without_a_temperature_keeps_the_plain_sampler(tiny_model_dir, tmp_path):
    older = {k: v for k, v in CALIBRATION.items() if k != "temperature"}
    plan = plan_sampling(_model(tiny_model_dir, tmp_path, older).card, SamplerConfig(name="heun", steps=18), ("axial",))
    sampler, scale = plan.sampler, plan.spread_scale
    assert (sampler.temperature, scale) == (1.0, 2.5)


@pytest.mark.parametrize("temperature", [0, 1.5, "cold", True])
def test_a_card_temperature_outside_0_1_is_refused_in_one_line(tiny_model_dir, tmp_path, temperature):
    with pytest.raises(InputError, match=r"model_card.json: calibration.temperature must be a number in \(0, 1\]"):
        _model(tiny_model_dir, tmp_path, CALIBRATION | {"temperature": temperature})
