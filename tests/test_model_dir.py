"""Model directories and training checkpoints: no pickle, checksums verified, bit-exact round trips."""

import json

import pytest
import torch

from bids_jdam.config import NetworkConfig, small_config
from bids_jdam.errors import InputError
from bids_jdam.io.checkpoints import checkpoint_steps, load_checkpoint, save_checkpoint
from bids_jdam.methods import METHODS
from bids_jdam.methods.model_dir import (
    MODEL_CARD,
    PHANTOM_DATA,
    PHANTOM_WARNING,
    WEIGHTS,
    WEIGHTS_FP16,
    load_model_dir,
    save_model_dir,
)


@pytest.fixture
def tiny_cfg():
    cfg = small_config()
    cfg.grid.slice_size = 16
    cfg.network = NetworkConfig(
        channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.0, num_groups=4
    )
    return cfg


def _saved(tmp_path, cfg, method="jdam"):
    torch.manual_seed(0)
    net = METHODS.named(method).build_network(cfg)
    card = {"trained_on": PHANTOM_DATA, "steps": 3, "training_data": {"subjects": {"train": {"01": "CN"}}}}
    return net, save_model_dir(tmp_path / "model", net, cfg, METHODS.named(method), card, fp16=True)


def test_model_dir_round_trip(tmp_path, tiny_cfg):
    net, path = _saved(tmp_path, tiny_cfg)
    model, cfg, card = load_model_dir(path)
    assert cfg.to_dict() == tiny_cfg.to_dict()
    assert card["method"] == "jdam" and card["parameterization"] == tiny_cfg.sde.parameterization
    assert PHANTOM_WARNING in card["intended_use"]
    assert set(card["sha256"]) == {WEIGHTS, WEIGHTS_FP16}
    assert json.loads((path / "config.json").read_text())["method"] == "jdam"
    for name, value in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[name], value)
    x, sigma, cond = torch.randn(2, 1, 16, 16), torch.tensor([0.5, 2.0]), torch.randn(2, 1, 16, 16)
    assert model(x, sigma, cond).shape == (2, 1, 16, 16)


def test_unet_l1_has_the_mri_as_its_only_input(tmp_path, tiny_cfg):
    net, path = _saved(tmp_path, tiny_cfg, method="unet-l1")
    model, _, card = load_model_dir(path)
    assert "parameterization" not in card
    assert model(torch.randn(2, 1, 16, 16), torch.zeros(2)).shape == (2, 1, 16, 16)
    jdam_params = sum(p.numel() for p in METHODS.named("jdam").build_network(tiny_cfg).parameters())
    l1_params = sum(p.numel() for p in net.parameters())
    assert 0 < jdam_params - l1_params < 0.01 * jdam_params  # same size but for the first convolution


def test_changed_weights_fail_the_checksum(tmp_path, tiny_cfg):
    _, path = _saved(tmp_path, tiny_cfg)
    data = bytearray((path / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 does not match"):
        load_model_dir(path)


def test_missing_file_is_named(tmp_path, tiny_cfg):
    _, path = _saved(tmp_path, tiny_cfg)
    (path / MODEL_CARD).unlink()
    with pytest.raises(InputError, match="model_card.json: missing"):
        load_model_dir(path)


def test_checkpoint_round_trip_is_bit_exact_and_pruned(tmp_path):
    tensors = {"net.w": torch.randn(3, 4), "rng.torch": torch.get_rng_state(), "step": torch.tensor(7.0)}
    state = {"method": "jdam", "lr": 1.2345678901234567e-4, "groups": [{"betas": [0.9, 0.999]}]}
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, tensors, state, keep=2)
    assert checkpoint_steps(tmp_path) == [10, 15]
    loaded, loaded_state = load_checkpoint(tmp_path)
    assert loaded_state["step"] == 15 and loaded_state["lr"] == state["lr"]
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in tensors.items())


def test_no_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no checkpoint"):
        load_checkpoint(tmp_path / "checkpoints")


def test_weights_are_readable_by_others_under_the_usual_umask(tmp_path, tiny_cfg):
    """safetensors creates 0600 files; a model directory must be readable by another user or container uid."""
    import os
    import stat

    from bids_jdam.io import atomic

    _, path = _saved(tmp_path, tiny_cfg)
    plain = tmp_path / "plain"
    plain.write_text("")  # what open() gives under this process's umask
    expected = stat.S_IMODE(os.stat(plain).st_mode)
    assert expected == atomic._FILE_MODE
    for name in (WEIGHTS, WEIGHTS_FP16, MODEL_CARD):
        assert stat.S_IMODE(os.stat(path / name).st_mode) == expected
