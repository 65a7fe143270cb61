"""What the metrics JSON and the reports say of the spread calibration: coverage measured on a participant with a
known answer, the JSON round trip with and without the new fields, and the statement for each kind of model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bids_jdam.evaluate.participant_metrics import (
    BrainExtractionCheck,
    ParticipantMetrics,
    QualityMetrics,
    RegistrationCheck,
)
from bids_jdam.evaluate.participant_qc import quality_metrics, spread_scores
from bids_jdam.reports.participant import spread_statement
from bids_jdam.synthesis.provenance import ModelInfo, SamplerInfo
from bids_jdam.synthesis.spread import inflate
from bids_jdam.synthesis.volume import SynthesisResult

K = 4
SHAPE = (24, 24, 24)


def gaussian_case(spread: float) -> tuple[SynthesisResult, np.ndarray, np.ndarray]:
    """K samples and a truth drawn from the same Gaussian per voxel, the samples' deviations scaled by ``spread``.

    With ``spread`` 1 the truth is one more draw, so the prediction intervals of ``coverage`` hold exactly.
    """
    rng = np.random.default_rng(0)
    centre = 1.0 + rng.random(SHAPE)
    draws = centre + 0.1 * rng.standard_normal((K + 1, *SHAPE))
    samples, truth = draws[:K], draws[K]
    samples = samples.mean(axis=0) + spread * (samples - samples.mean(axis=0))
    mask = np.zeros(SHAPE, dtype=bool)
    mask[2:-2, 2:-2, 2:-2] = True
    return result_of(samples), truth, mask


def result_of(samples: np.ndarray) -> SynthesisResult:
    """A synthesis result of ``samples`` (K, *shape) as synthesize_volume makes it (SD with ddof = 1)."""
    return SynthesisResult(
        mean=samples.mean(axis=0),
        std=samples.std(axis=0, ddof=1) if len(samples) > 1 else None,
        view_std=None,
        samples=list(samples),
        per_plane={},
        network_evaluations=0,
        seconds=0.0,
        batch_size=1,
    )


def test_coverage_of_a_well_spread_gaussian_is_nominal():
    scores = spread_scores(*gaussian_case(spread=1.0))
    assert scores["coverage_50"] == pytest.approx(0.5, abs=0.02)
    assert scores["coverage_90"] == pytest.approx(0.9, abs=0.02)
    assert scores["spread_skill"] == pytest.approx(1.0, abs=0.05)


def test_a_map_of_constant_true_spread_ranks_nothing_and_a_varying_one_is_credited():
    flat = spread_scores(*gaussian_case(spread=1.0))
    assert flat["sd_ause_relative"] > 0.85 and flat["crps_over_constant_band"] > 0.98
    rng = np.random.default_rng(1)
    true_sd = np.where(np.arange(SHAPE[0])[:, None, None] < SHAPE[0] // 2, 0.05, 0.15) * np.ones(SHAPE)
    draws = 1.0 + true_sd * rng.standard_normal((K + 1, *SHAPE))
    varying = spread_scores(result_of(draws[:K]), draws[K], np.ones(SHAPE, dtype=bool))
    assert varying["sd_ause_relative"] < 0.8 and varying["crps_over_constant_band"] < 0.97


def test_the_calibrated_sd_map_restores_the_coverage_of_an_underdispersed_one():
    narrow, truth, mask = gaussian_case(spread=0.5)
    before = spread_scores(narrow, truth, mask)
    assert before["coverage_90"] < 0.7 and before["spread_skill"] == pytest.approx(0.5, abs=0.05)
    after = spread_scores(result_of(inflate(np.stack(narrow.samples), 2.0)), truth, mask)
    assert after["coverage_90"] == pytest.approx(0.9, abs=0.02)


def test_one_sample_records_no_coverage():
    result, truth, mask = gaussian_case(spread=1.0)
    quality = quality_metrics(result_of(np.stack(result.samples[:1])), truth, mask, spacing_mm=4.0)
    assert (quality.coverage_50, quality.coverage_90, quality.spread_skill) == (None, None, None)
    assert (quality.sd_ause_relative, quality.crps_over_constant_band) == (None, None)
    assert quality_metrics(result, truth, mask, spacing_mm=4.0).coverage_90 == pytest.approx(0.9, abs=0.02)


def test_one_sample_with_a_predictive_sd_map_is_scored_as_a_gaussian_interval():
    rng = np.random.default_rng(3)
    mean = 1.0 + rng.random(SHAPE)
    true_sd = np.where(np.arange(SHAPE[0])[:, None, None] < SHAPE[0] // 2, 0.05, 0.15) * np.ones(SHAPE)
    truth = mean + true_sd * rng.standard_normal(SHAPE)
    one = result_of(mean[None])
    one.predictive_sd = true_sd
    quality = quality_metrics(one, truth, np.ones(SHAPE, dtype=bool), spacing_mm=4.0)
    assert quality.coverage_90 == pytest.approx(0.9, abs=0.02) and quality.spread_skill == pytest.approx(1, abs=0.05)
    assert quality.crps_over_constant_band < 0.97 and quality.sd_ause_relative < 0.8


def metrics(model: ModelInfo, quality: QualityMetrics | None, calibration: dict | None) -> ParticipantMetrics:
    return ParticipantMetrics(
        participant_id="01",
        session=None,
        run=None,
        field_strength=None,
        model=model,
        sampler=SamplerInfo("pc", 10, K, 0),
        quality=quality,
        in_training_set=False,
        noise_index=1.0,
        regional_suvr_synthetic={},
        regional_suvr_real=None,
        brain_volume_ml=1500.0,
        registration=RegistrationCheck(0.8),
        brain_extraction=BrainExtractionCheck(0.95),
        model_calibration=calibration,
    )


CALIBRATED = ModelInfo("m", "0" * 64, False, spread_scale=1.25)
CALIBRATION = {
    "spread_scale": 1.25,
    "level": 0.9,
    "num_samples": 4,
    "voxels": 900,
    "subjects": 2,
    "fitted_on": "2 held-out validation subjects (split-conformal, brain mask, pc sampler)",
}


def test_metrics_json_round_trip_keeps_the_spread_scores_and_the_calibration(tmp_path):
    quality = QualityMetrics(30.0, 0.9, 0.05, 0.01, coverage_50=0.48, coverage_90=0.88, spread_skill=0.95)
    written = metrics(CALIBRATED, quality, CALIBRATION)
    read = ParticipantMetrics.from_json(written.to_json(tmp_path / "m.json"))
    assert read == written


def test_metrics_json_of_an_older_writer_loads_without_the_new_fields(tmp_path):
    data = metrics(ModelInfo("m", "0" * 64, False), QualityMetrics(30.0, 0.9, 0.05, 0.01), None).to_dict()
    for key in ("coverage_50", "coverage_90", "spread_skill", "sd_error_correlation"):
        del data["quality"][key]
    del data["model_calibration"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    read = ParticipantMetrics.from_json(path)
    assert read.quality == QualityMetrics(30.0, 0.9, 0.05, 0.01) and read.model_calibration is None
    assert spread_statement(read.model, read.model_calibration, K) == (
        "spread NOT calibrated: the SD map is likely too small"
    )


def test_the_statement_says_what_the_model_card_records():
    assert spread_statement(CALIBRATED, CALIBRATION, K) == (
        "spread calibrated: scale 1.25 fitted on 2 held-out subjects (level 90 %, K = 4 samples)"
    )
    assert spread_statement(CALIBRATED, {**CALIBRATION, "subjects": 1}, K).startswith(
        "spread calibrated: scale 1.25 fitted on 1 held-out subject ("
    )
    assert spread_statement(CALIBRATED, CALIBRATION, 2).endswith(
        "(level 90 %, K = 4 samples); here K = 2, so the coverage may differ"
    )
    uncalibrated = ModelInfo("m", "0" * 64, False)
    assert spread_statement(uncalibrated, {"note": "not calibrated: no held-out subjects"}, K) == (
        "spread NOT calibrated: the SD map is likely too small (not calibrated: no held-out subjects)"
    )
    assert spread_statement(uncalibrated, CALIBRATION, K) == (  # the card's scale was not applied to this image
        "spread NOT calibrated: the SD map is likely too small (the model card's scale was fitted for another "
        "sampler or plane count)"
    )
    assert spread_statement(CALIBRATED, CALIBRATION, 1) == "one sample (K = 1): no sampling SD map"
    deterministic = ModelInfo("m", "0" * 64, False, method="unet-l1", probabilistic=False)
    assert spread_statement(deterministic, {"note": "deterministic method: no spread to calibrate"}, 1) == (
        "deterministic method (unet-l1): one prediction, no spread"
    )
