"""Model directories and training checkpoints, stored without pickle.

A model directory holds ``weights.safetensors`` (and optionally ``weights-fp16.safetensors``), ``config.json``
(the full :class:`JDAMConfig` plus the method name) and ``model_card.json`` (what it was trained on, how long, how
well it did on held-out subjects, and the weights' sha256). Loading verifies the checksum first, so a truncated or
swapped file is reported instead of silently producing wrong images.

A checkpoint is a pair ``checkpoint-<step>.safetensors`` (every tensor: weights, EMA, optimizer moments, RNG states)
+ ``checkpoint-<step>.json`` (everything else). The JSON is written last, so a checkpoint counts only once both
files are complete.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bids_jdam import atomic
from bids_jdam.config import JDAMConfig
from bids_jdam.diffusion.parameterization import build_denoiser
from bids_jdam.errors import InputError
from bids_jdam.models.cyclegan import generator_from_card
from bids_jdam.models.unet import ScoreUNet

WEIGHTS = "weights.safetensors"
WEIGHTS_FP16 = "weights-fp16.safetensors"
CONFIG = "config.json"
MODEL_CARD = "model_card.json"
METHODS = ("jdam", "unet-l1")
PHANTOM_DATA = "synthetic phantoms"
PHANTOM_WARNING = "trained on synthetic phantoms, not for real patients"
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)\.json$")


def build_network(cfg: JDAMConfig, method: str) -> ScoreUNet:
    """The U-Net of ``method``: JDAM's score network, or the same-size U-Net with the MRI as its only input."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    network_cfg = cfg.network if method == "jdam" else dataclasses.replace(cfg.network, conditional=False)
    return ScoreUNet(network_cfg, cfg.grid.slice_size)


def intended_use(trained_on: str) -> str:
    """The model card's use statement; phantom-trained models say plainly that they are not for patients."""
    if trained_on == PHANTOM_DATA:
        return f"Demonstration and testing only: {PHANTOM_WARNING}."
    return "Research use only; not a medical device. Synthetic PET is not a substitute for a PET scan."


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}


def save_model_dir(
    path: Path, net: nn.Module, cfg: JDAMConfig, method: str, card: dict[str, Any], fp16: bool = False
) -> Path:
    """Write weights, config and model card to ``path``; ``card`` must name what the model was ``trained_on``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = _contiguous(net.state_dict())
    files = {WEIGHTS: weights}
    if fp16:
        files[WEIGHTS_FP16] = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    for name, tensors in files.items():
        atomic.write_with(path / name, lambda temp, t=tensors: save_file(t, str(temp), metadata={"method": method}))
    atomic.write_json(path / CONFIG, {"method": method, **cfg.to_dict()})
    full_card = {
        "method": method,
        "parameterization": cfg.sde.parameterization if method == "jdam" else None,
        **card,
        "intended_use": intended_use(card["trained_on"]),
        "sha256": {name: atomic.sha256_file(path / name) for name in files},
    }
    atomic.write_json(path / MODEL_CARD, full_card)
    return path


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path}: missing; a model directory holds {WEIGHTS}, {CONFIG} and {MODEL_CARD}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None


def load_model_dir(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, JDAMConfig, dict[str, Any]]:
    """(model, config, card) of a model directory: a JDAM denoiser, or the plain U-Net of ``unet-l1``.

    The weights' sha256 must match the model card; safetensors only, so loading never runs pickled code.
    """
    path = Path(path)
    card = _read_json(path / MODEL_CARD)
    config = _read_json(path / CONFIG)
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise InputError(f"{weights_path}: missing; a model directory holds {WEIGHTS}, {CONFIG} and {MODEL_CARD}")
    expected = card.get("sha256", {}).get(WEIGHTS)
    if expected is None:
        raise InputError(f"{path / MODEL_CARD}: no sha256 for {WEIGHTS}")
    if atomic.sha256_file(weights_path) != expected:
        raise InputError(f"{weights_path}: sha256 does not match the model card; the file is corrupt or was replaced")
    method = config.pop("method", None)
    try:
        cfg = JDAMConfig.from_dict(config)
        net = generator_from_card(card) if method == "cyclegan" else build_network(cfg, method)
    except (ValueError, TypeError) as error:
        raise InputError(f"{path / CONFIG}: {error}") from None
    try:
        net.load_state_dict(load_file(weights_path))
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise InputError(f"{weights_path}: weights do not fit the network in {CONFIG} ({first_line})") from None
    model = build_denoiser(net, cfg.sde) if method == "jdam" else net
    return model.to(device).eval(), cfg, card


def checkpoint_paths(directory: Path, step: int) -> tuple[Path, Path]:
    """(tensors, state) file paths of the checkpoint at ``step``."""
    stem = Path(directory) / f"checkpoint-{step:08d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(
    directory: Path, step: int, tensors: dict[str, torch.Tensor], state: dict[str, Any], keep: int = 2
) -> Path:
    """Write a resumable checkpoint and delete all but the ``keep`` newest; returns the state file's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensor_path, state_path = checkpoint_paths(directory, step)
    contiguous = _contiguous(tensors)
    atomic.write_with(tensor_path, lambda temp: save_file(contiguous, str(temp)))
    atomic.write_json(state_path, {"step": step, "tensors_sha256": atomic.sha256_file(tensor_path), **state})
    for old in checkpoint_steps(directory)[:-keep]:
        for old_path in checkpoint_paths(directory, old):
            old_path.unlink(missing_ok=True)
    return state_path


def checkpoint_steps(directory: Path) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, oldest first."""
    if not Path(directory).is_dir():
        return []
    steps = [int(m.group(1)) for p in Path(directory).iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(s for s in steps if checkpoint_paths(directory, s)[0].is_file())


def load_checkpoint(directory: Path, step: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of the checkpoint at ``step`` (default: the newest), checksum verified."""
    steps = checkpoint_steps(directory)
    if not steps:
        raise InputError(f"{directory}: no checkpoint to resume from")
    tensor_path, state_path = checkpoint_paths(directory, steps[-1] if step is None else step)
    state = _read_json(state_path)
    if atomic.sha256_file(tensor_path) != state.get("tensors_sha256"):
        raise InputError(f"{tensor_path}: sha256 does not match {state_path.name}; the checkpoint is corrupt")
    return load_file(tensor_path), state
