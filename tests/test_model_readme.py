"""The README.md of a model directory: a Hugging Face Hub model card, with the phantom warning where it applies."""

import pytest
import torch
from huggingface_hub import ModelCard

from bids_jdam.config import NetworkConfig, small_config
from bids_jdam.methods import METHODS
from bids_jdam.methods.model_dir import PHANTOM_DATA, PHANTOM_WARNING, load_model_dir, save_model_dir
from bids_jdam.methods.readme import README

VALIDATION = {
    "psnr_db": 27.5,
    "ssim": 0.91,
    "mae_suvr": 0.08,
    "nmse": 0.012,
    "n_subjects": 2,
    "n_slices": 24,
    "per_subject": {"05": {"psnr_db": 27.0, "ssim": 0.9, "mae_suvr": 0.09, "nmse": 0.013}},
}


def _model_dir(tmp_path, trained_on, method="jdam", validation=VALIDATION):
    cfg = small_config()
    cfg.grid.slice_size = 16
    cfg.network = NetworkConfig(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0, num_groups=4
    )
    torch.manual_seed(0)
    card = {
        "trained_on": trained_on,
        "steps": 3,
        "validation": validation,
        "training_data": {"subjects": {"train": {"01": "CN", "02": "AD"}, "validation": {"05": "AD"}}},
    }
    return save_model_dir(
        tmp_path / "model", METHODS.named(method).build_network(cfg), cfg, METHODS.named(method), card
    )


def test_readme_is_a_hub_model_card_with_the_validation_figures(tmp_path):
    path = _model_dir(tmp_path, "paired T1w/FDG-PET of a local cohort")
    card = ModelCard.load(path / README)  # the Hub's own parser of the YAML front matter
    assert card.data.license == "other" and card.data.library_name == "bids-jdam"
    assert {"medical-imaging", "pet", "mri", "diffusion", "jdam"} <= set(card.data.tags)
    assert "synthetic-phantoms" not in card.data.tags and "WARNING" not in card.text
    for section in ("## Method", "## Training data", "## Validation", "## Intended use and limitations"):
        assert section in card.text
    assert "| all | 27.50 | 0.910 | 0.080 | 0.0120 |" in card.text and "| sub-05 | 27.00 |" in card.text
    assert "2 training subjects, 1 held-out validation subjects" in card.text


def test_a_phantom_model_card_opens_with_the_warning(tmp_path):
    path = _model_dir(tmp_path, PHANTOM_DATA)
    card = ModelCard.load(path / README)
    assert "synthetic-phantoms" in card.data.tags
    first_lines = card.text.strip().splitlines()[:3]
    assert any(f"WARNING: {PHANTOM_WARNING}" in line for line in first_lines)


@pytest.mark.parametrize("method", ["unet-l1", "cyclegan"])
def test_a_deterministic_model_without_validation_says_so(tmp_path, method):
    path = _model_dir(tmp_path, PHANTOM_DATA, method, validation={"note": "no held-out subjects"})
    card = ModelCard.load(path / README)
    assert "diffusion" not in card.data.tags and method in card.data.tags
    assert "Not validated: no held-out subjects." in card.text and "one deterministic prediction" in card.text


def test_an_edited_readme_does_not_stop_the_model_from_loading(tmp_path):
    path = _model_dir(tmp_path, PHANTOM_DATA)
    (path / README).write_text("edited on the Hub\n")
    load_model_dir(path)  # the checksums cover the weights only
