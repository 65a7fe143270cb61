"""The single-sample predictive SD map: fitted where the error depends on its features, it ranks and covers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_jdam.data.healthy_reference import HealthyReference
from bids_jdam.evaluate.error_ranking import error_ranking_scores
from bids_jdam.evaluate.single_sample_sd import case_design, fit_error_model, fit_on_designs
from bids_jdam.synthesis.error_model import FEATURES, ErrorModel

SPACING = 4.0


def case(seed: int):
    """A ball of uptake whose error SD is three times larger within 8 mm of the edge than deep inside."""
    rng = np.random.default_rng(seed)
    grid = np.indices((30, 30, 30)) - 14.5
    mask = np.sqrt((grid**2).sum(axis=0)) < 13
    mean = np.where(mask, 1.0 + 0.1 * rng.random(mask.shape), 0.0)
    depth_mm = ndimage.distance_transform_edt(mask) * SPACING
    true_sd = np.where(depth_mm <= 8, 0.3, 0.1)
    return mean, np.where(mask, 1.0, 0.0), mean + true_sd * rng.standard_normal(mask.shape), mask


def test_designs_computed_once_fit_the_same_model():
    """A selection over held-out subjects reuses each subject's design; the fit must not change with it."""
    cases = [case(1), case(2)]
    reused = fit_on_designs([case_design(c, SPACING) for c in cases], FEATURES)
    assert reused == fit_error_model(cases, SPACING)
    assert fit_on_designs([case_design(cases[0], SPACING)], FEATURES) != reused


def test_a_map_fitted_on_held_out_cases_ranks_and_covers_a_new_case():
    model = fit_error_model([case(1), case(2)], SPACING)
    mean, t1, reference, mask = case(3)
    sd = model.predictive_sd(mean, t1, mask, SPACING)
    assert (sd[~mask] == 0).all() and (sd[mask] > 0).all()
    scores = error_ranking_scores(sd, mean, reference, mask)
    assert 0.86 < scores["coverage_90"] < 0.94
    assert scores["rmse_top_over_bottom_fifth"] > 2.0 and scores["crps_over_constant_band"] < 0.97


def population_case(seed: int):
    """Uniform uptake whose error SD is three times larger in the half of the ball where healthy people's uptake
    varies more: nothing in the image says where, the healthy reference's SD does."""
    mean, t1, _, mask = case(seed)
    rng = np.random.default_rng(seed + 100)
    varied = np.indices(mask.shape)[0] < 15
    true_sd = np.where(varied, 0.3, 0.1)
    return mean, t1, mean + true_sd * rng.standard_normal(mask.shape), mask


def population_reference(mask: np.ndarray) -> HealthyReference:
    varied = np.indices(mask.shape)[0] < 15
    sd = np.where(mask, np.where(varied, 0.15, 0.05), 0.0)
    return HealthyReference(np.where(mask, 1.05, 0.0), sd, np.eye(4), (), ("h1", "h2", "h3"))


def test_the_healthy_reference_says_where_the_image_cannot():
    healthy = population_reference(case(1)[3])
    with_reference = fit_error_model([population_case(1), population_case(2)], SPACING, healthy=healthy)
    image_only = fit_error_model([population_case(1), population_case(2)], SPACING)
    assert with_reference.uses_healthy_reference and not image_only.uses_healthy_reference
    assert ErrorModel.from_dict(with_reference.to_dict()) == with_reference
    mean, t1, reference, mask = population_case(3)
    with pytest.raises(ValueError, match="healthy-control reference"):
        with_reference.predictive_sd(mean, t1, mask, SPACING)
    ranked = error_ranking_scores(with_reference.predictive_sd(mean, t1, mask, SPACING, healthy), mean, reference, mask)
    unranked = error_ranking_scores(image_only.predictive_sd(mean, t1, mask, SPACING), mean, reference, mask)
    assert ranked["rmse_top_over_bottom_fifth"] > 2.0 > unranked["rmse_top_over_bottom_fifth"]
    assert ranked["crps_over_constant_band"] < 0.97 < unranked["crps_over_constant_band"]
    assert 0.86 < ranked["coverage_90"] < 0.94


def view_case(seed: int):
    """Uniform uptake whose error SD is three times larger in a blob, somewhere else in each case, where the
    network's three planes disagree: nothing in the image or the population says where, the planes' means do."""
    mean, t1, _, mask = case(seed)
    rng = np.random.default_rng(seed + 200)
    centre = 14.5 + rng.uniform(-5, 5, 3)
    unsure = np.sqrt(((np.indices(mask.shape) - centre[:, None, None, None]) ** 2).sum(0)) < 7
    spread = np.where(unsure, 0.2, 0.02)
    views = mean + spread * rng.standard_normal((3, *mask.shape))
    true_sd = np.where(unsure, 0.3, 0.1)
    return mean, t1, mean + true_sd * rng.standard_normal(mask.shape), mask, views


def test_the_planes_disagreement_says_where_the_network_is_unsure():
    with_views = fit_error_model([view_case(1), view_case(2)], SPACING)
    image_only = fit_error_model([view_case(1)[:4], view_case(2)[:4]], SPACING)
    assert with_views.uses_views and not image_only.uses_views
    assert ErrorModel.from_dict(with_views.to_dict()) == with_views
    mean, t1, reference, mask, views = view_case(3)
    with pytest.raises(ValueError, match="regression means"):
        with_views.predictive_sd(mean, t1, mask, SPACING)
    ranked = error_ranking_scores(with_views.predictive_sd(mean, t1, mask, SPACING, views=views), mean, reference, mask)
    unranked = error_ranking_scores(image_only.predictive_sd(mean, t1, mask, SPACING), mean, reference, mask)
    assert ranked["ause_relative"] < 0.7 < unranked["ause_relative"]
    assert ranked["crps_over_constant_band"] < 0.97 < unranked["crps_over_constant_band"]
    assert 0.86 < ranked["coverage_90"] < 0.94


def test_views_are_on_every_held_out_case_or_on_none():
    with pytest.raises(ValueError, match="every held-out case"):
        fit_error_model([view_case(1), view_case(2)[:4]], SPACING)
    with pytest.raises(ValueError, match="3 volumes"):
        fit_error_model([(*view_case(1)[:4], view_case(1)[4][:2])], SPACING)


def test_the_residual_method_gives_its_regression_mean_along_each_plane(tiny_model_dir):
    """The demo (jdam-residual) has a one-evaluation mean to compare between planes; the paper's method has none."""
    from bids_jdam.models.demo import DEMO_MODEL_DIR
    from bids_jdam.synthesis.synthesizer import Synthesizer

    grid = np.indices((24, 28, 20)) - np.array([11.5, 13.5, 9.5])[:, None, None, None]
    mask = np.sqrt((grid**2).sum(axis=0)) < 9
    t1 = np.where(mask, 1.0 + 0.2 * np.cos(grid[0] / 2), 0.0).astype(np.float32)
    views = Synthesizer.from_model_dir(DEMO_MODEL_DIR, "cpu").regression_views(t1, mask, image="sub-01")
    assert views.shape == (3, *mask.shape) and np.isfinite(views).all()
    assert (views[:, ~mask] == 0).all() and (views[:, mask].mean(axis=1) > 0.3).all()
    assert not np.allclose(views[0], views[1]) and not np.allclose(views[0], views[2])
    assert Synthesizer.from_model_dir(tiny_model_dir, "cpu").regression_views(t1, mask, image="sub-01") is None


def test_the_model_survives_its_model_card():
    model = fit_error_model([case(1)], SPACING)
    assert ErrorModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="features"):
        ErrorModel.from_dict({**model.to_dict(), "features": ["constant"]})


def test_a_run_gets_the_map_only_for_the_synthesis_it_was_fitted_for():
    from pathlib import Path
    from types import SimpleNamespace

    from bids_jdam.config import SamplerConfig
    from bids_jdam.methods.model_card import SINGLE_SAMPLE_SD, ModelCard, RegionalInterval
    from bids_jdam.synthesis.sampling_plan import plan_sampling
    from bids_jdam.synthesis.volume import SynthesisResult
    from bids_jdam.workflows.participant import attach_predictive_sd

    mean, t1, _, mask = case(4)
    interval = RegionalInterval(
        half_width_suvr=0.1, level=0.9, sampler="heun", steps=18, num_samples=1, planes=1, subjects=2, pairs=300
    )
    record = {
        "method": "jdam-residual",
        "sha256": {"w": "0"},
        "training_data": {"subjects": {"train": []}},
        "regional_interval": interval.to_dict(),
        SINGLE_SAMPLE_SD: fit_error_model([case(1)], SPACING).to_dict(),
    }
    card = ModelCard.read(record, Path("card"), "m", "w")
    model = SimpleNamespace(
        card=card,
        cfg=SimpleNamespace(grid=SimpleNamespace(spacing_mm=SPACING)),
        healthy_reference=None,
        error_model=ErrorModel.from_dict(card.single_sample_sd),
    )
    synthesizer = SimpleNamespace(model=model)

    def result(steps: int) -> SynthesisResult:
        plan = plan_sampling(card, SamplerConfig(name="heun", steps=steps), ("axial",))
        return SynthesisResult(
            mean=mean,
            std=None,
            view_std=None,
            samples=[mean],
            per_plane={},
            network_evaluations=0,
            seconds=0.0,
            batch_size=1,
            plan=plan,
        )

    default = result(18)
    attach_predictive_sd(default, synthesizer, t1, mask, "sub-04")
    assert default.plan.regional_interval == interval and default.plan.predictive_sd
    assert default.predictive_sd is not None and (default.predictive_sd[mask] > 0).all()
    other = result(8)
    attach_predictive_sd(other, synthesizer, t1, mask, "sub-04")
    assert other.plan.regional_interval is None and other.predictive_sd is None
    assert "8 steps" in other.plan.interval_reason
    # every sidecar says how the map was fitted, or why the run has none
    assert "held-out subjects, split-conformal 90 % per fifth" in default.plan.notes()["predictive_sd"]
    assert (
        other.plan.notes()["predictive_sd"].startswith("no predictive SD map: ")
        and "8 steps" in other.plan.notes()["predictive_sd"]
    )


def heavy_tailed_edge_case(seed: int):
    """Gaussian errors deep inside, heavy-tailed (Student t, 3 degrees of freedom) ones within 8 mm of the edge: the
    log-error regression finds where the error is larger, but one conformal factor cannot cover both shapes."""
    mean, t1, _, mask = case(seed)
    rng = np.random.default_rng(seed + 100)
    depth_mm = ndimage.distance_transform_edt(mask) * SPACING
    noise = np.where(depth_mm <= 8, 0.2 * rng.standard_t(3, mask.shape), 0.1 * rng.standard_normal(mask.shape))
    return mean, t1, mean + noise, mask


def test_each_fifth_of_the_map_gets_its_own_conformal_factor():
    from dataclasses import replace

    from bids_jdam.evaluate.error_ranking import reliability_table

    model = fit_error_model([heavy_tailed_edge_case(1), heavy_tailed_edge_case(2)], SPACING)
    assert len(model.bin_factors) == 5 and len(model.bin_edges) == 4
    assert ErrorModel.from_dict(model.to_dict()) == model
    mean, t1, reference, mask = heavy_tailed_edge_case(3)
    adaptive = reliability_table(model.predictive_sd(mean, t1, mask, SPACING), mean, reference, mask)
    assert all(0.82 <= row["coverage"] <= 0.96 for row in adaptive), adaptive
    global_only = replace(model, bin_edges=(), bin_factors=())  # as a card fitted before the fifths
    one_factor = reliability_table(global_only.predictive_sd(mean, t1, mask, SPACING), mean, reference, mask)
    assert max(abs(row["coverage"] - 0.9) for row in one_factor) > max(abs(row["coverage"] - 0.9) for row in adaptive)
