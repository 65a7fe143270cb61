"""The packaged demo model: loadable, checksummed, small, fp16, and honest about being trained on phantoms."""

from __future__ import annotations

from safetensors import safe_open

from bids_jdam.methods.model_dir import PHANTOM_WARNING, load_model_dir
from bids_jdam.models.demo import DEMO_MODEL_DIR, demo_model_available, demo_model_config


def test_demo_model_is_packaged_small_and_fp16():
    assert demo_model_available()
    weights = DEMO_MODEL_DIR / "weights.safetensors"
    assert weights.stat().st_size < 25 * 1024**2
    with safe_open(str(weights), "pt") as handle:
        assert {
            str(handle.get_tensor(k).dtype) for k in handle.keys() if "float" in str(handle.get_tensor(k).dtype)
        } == {"torch.float16"}


def test_demo_model_loads_and_says_it_is_trained_on_phantoms():
    model, cfg, card = load_model_dir(DEMO_MODEL_DIR, "cpu")
    assert card["trained_on"] == "synthetic phantoms" and PHANTOM_WARNING in card["intended_use"]
    assert cfg.grid == demo_model_config().grid
    assert card["method"] == "jdam-residual" and cfg.sde.parameterization == "preconditioned"
    assert (cfg.sampler.name, cfg.sampler.steps) == ("heun", 18) and hasattr(model, "mean")


def test_demo_model_card_calibrates_the_spread_for_its_own_sampler():
    """The app applies the card's temperature and scale with the demo's default sampler on one plane."""
    from bids_jdam.synthesis.loaded_model import LoadedModel
    from bids_jdam.synthesis.sampling_plan import plan_sampling

    loaded = LoadedModel.from_dir(DEMO_MODEL_DIR, "cpu")
    plan = plan_sampling(loaded.card, loaded.cfg.sampler, ("axial",))
    calibration = loaded.card.calibration
    assert plan.spread_scale == calibration.spread_scale > 1 and plan.sampler.temperature == calibration.temperature
    crps = calibration.crps_by_temperature
    assert min(crps.values()) == crps[f"{calibration.temperature:g}"]
    assert plan.regional_interval is not None and plan.predictive_sd  # the default run: K = 1, one plane
    # the SD map the selection benchmark chose: image, healthy reference and the planes' regression means
    assert loaded.error_model.uses_healthy_reference and loaded.error_model.uses_views
    assert loaded.error_model.subjects == 24


def test_packaging_keeps_fp16_weights_and_names_the_sampler_it_sets(tiny_model_dir, tmp_path):
    import json

    from benchmarks.train_demo import JDAM_SAMPLER, package

    package(tiny_model_dir, tmp_path / "demo")
    model, cfg, card = load_model_dir(tmp_path / "demo", "cpu")  # the checksum of the fp16 weights holds
    assert card["method"] == "jdam" and card["name"] == "bids-jdam-demo" and card["weights_dtype"] == "float16"
    assert (cfg.sampler.name, cfg.sampler.steps) == (JDAM_SAMPLER["name"], JDAM_SAMPLER["steps"])
    assert card["default_sampler"]["name"] == JDAM_SAMPLER["name"] and "speed" in card["default_sampler"]["chosen_by"]
    assert json.loads((tiny_model_dir / "config.json").read_text())["sampler"]["name"] == "heun"  # source untouched


def test_demo_model_has_the_healthy_reference_of_its_cn_training_subjects_and_an_ad_pattern_interval():
    from bids_jdam.evaluate.atlas_suvr import META_ROI_INDEX
    from bids_jdam.synthesis.loaded_model import LoadedModel
    from bids_jdam.synthesis.sampling_plan import plan_sampling

    loaded = LoadedModel.from_dir(DEMO_MODEL_DIR, "cpu")
    train = loaded.card.record["training_data"]["subjects"]["train"]
    assert sorted(loaded.healthy_reference.subjects) == sorted(s for s, dx in train.items() if dx == "CN")
    assert loaded.healthy_reference.mean.shape == loaded.healthy_reference.sd.shape
    assert 1.0 < loaded.healthy_reference.region(META_ROI_INDEX).mean < 2.0
    plan = plan_sampling(loaded.card, loaded.cfg.sampler, ("axial",))
    assert plan.pattern_interval is not None and plan.pattern_interval.subjects >= 9  # the default run has one
