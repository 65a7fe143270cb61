"""bids-jdam-calibrate: the spread scale of an existing model, fitted on held-out subjects only."""

import json
import shutil

from bids_jdam.cli.calibrate import main


def test_calibrates_on_held_out_subjects_and_refuses_training_subjects(
    tiny_model_dir, phantom_dataset, tmp_path, capsys
):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    card = json.loads((model / "model_card.json").read_text())
    held_out = list(card["training_data"]["subjects"]["validation"])
    trained = list(card["training_data"]["subjects"]["train"])
    weights = (model / "weights.safetensors").read_bytes()

    assert (
        main([str(model), str(phantom_dataset), "--phantom-truth", "--participant-label", *held_out, "--device", "cpu"])
        == 0
    )
    calibration = json.loads((model / "model_card.json").read_text())["calibration"]
    assert calibration["spread_scale"] > 0 and calibration["subjects"] == len(held_out)
    assert "held-out subjects of bids" in calibration["fitted_on"]
    regional = json.loads((model / "model_card.json").read_text())["regional_interval"]
    assert regional["half_width_suvr"] > 0 and regional["subjects"] == len(held_out)
    assert (model / "weights.safetensors").read_bytes() == weights  # the checksum still holds

    assert (
        main(
            [str(model), str(phantom_dataset), "--phantom-truth", "--participant-label", trained[0], "--device", "cpu"]
        )
        == 1
    )
    assert "trained the model" in capsys.readouterr().err
