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
import struct
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
LOADABLE_METHODS = (*METHODS, "cyclegan")
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# Bounds that keep a malformed config.json from asking for absurd memory before any weight is read.
SLICE_SIZE_RANGE = (8, 1024)
GRID_SPACING_RANGE_MM = (0.5, 10.0)
MAX_SAFETENSORS_HEADER = 100 << 20
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
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: must hold a JSON object, not {type(data).__name__}")
    return data


def _expected_sha256(card: dict[str, Any], card_path: Path) -> str:
    checksums = card.get("sha256")
    expected = checksums.get(WEIGHTS) if isinstance(checksums, dict) else None
    if expected is None:
        raise InputError(f"{card_path}: no sha256 for {WEIGHTS} (\"sha256\": {{\"{WEIGHTS}\": \"<64 hex digits>\"}})")
    if not isinstance(expected, str) or not SHA256_PATTERN.fullmatch(expected):
        raise InputError(f"{card_path}: the sha256 of {WEIGHTS} must be 64 hex digits, got {expected!r}")
    return expected


def weights_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a safetensors header, read without loading any tensor (or any pickle)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if head[:1] == b"\x80" or head[:2] == b"PK":
            raise InputError(f"{path}: a Python pickle or torch.save file, not safetensors; bids-jdam never "
                             "unpickles weights (convert them with safetensors.torch.save_file)")
        size = path.stat().st_size
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        if not 0 < length <= min(MAX_SAFETENSORS_HEADER, size - 8):
            raise InputError(f"{path}: not a safetensors file (its header length {length} does not fit the file)")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise InputError(f"{path}: not a safetensors file (its header is not a JSON object)")
    return {name: list(entry.get("shape", [])) for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict)}


def _check_plausible(cfg: JDAMConfig, config_path: Path) -> None:
    low, high = SLICE_SIZE_RANGE
    if not low <= cfg.grid.slice_size <= high:
        raise InputError(f"{config_path}: grid.slice_size {cfg.grid.slice_size} is outside {low}..{high}")
    low, high = GRID_SPACING_RANGE_MM
    if not low <= cfg.grid.spacing_mm <= high:
        raise InputError(f"{config_path}: grid.spacing_mm {cfg.grid.spacing_mm} is outside {low}..{high} mm")
    if not 0 < cfg.sde.sigma_min < cfg.sde.sigma_max:
        raise InputError(f"{config_path}: the SDE needs 0 < sigma_min < sigma_max, got {cfg.sde.sigma_min}, "
                         f"{cfg.sde.sigma_max}")


def _network(cfg: JDAMConfig, method: str | None, card: dict[str, Any], path: Path) -> nn.Module:
    """The model's network, built on the meta device first so that its shapes are checked against the weights'
    header before any memory is allocated (a config asking for 100000 channels fails here, not in malloc)."""
    if method not in LOADABLE_METHODS:
        raise InputError(f"{path / CONFIG}: unknown method {method!r}; expected one of {', '.join(LOADABLE_METHODS)}")

    def build() -> nn.Module:
        return generator_from_card(card) if method == "cyclegan" else build_network(cfg, method)

    try:
        with torch.device("meta"):
            shapes = {name: list(t.shape) for name, t in build().state_dict().items()}
    except Exception as error:  # noqa: BLE001 - any construction error means the config is unusable
        raise InputError(f"{path / CONFIG}: cannot build the network ({type(error).__name__}: {error})") from None
    stored = weights_shapes(path / WEIGHTS)
    for name, shape in shapes.items():
        if stored.get(name) != shape:
            raise InputError(f"{path / WEIGHTS}: weights do not fit the network in {CONFIG} ({name}: "
                             f"{stored.get(name, 'missing')} stored, {shape} expected)")
    return build()


def load_model_dir(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, JDAMConfig, dict[str, Any]]:
    """(model, config, card) of a model directory: a JDAM denoiser, or the plain U-Net of ``unet-l1``.

    Everything is checked before the weights are loaded: JSON objects, value types and bounds, the sha256 from the
    model card, the network's shapes against the safetensors header; safetensors only, never a pickle.
    """
    path = Path(path)
    card = _read_json(path / MODEL_CARD)
    config = _read_json(path / CONFIG)
    weights_path = path / WEIGHTS
    if not weights_path.is_file():
        raise InputError(f"{weights_path}: missing; a model directory holds {WEIGHTS}, {CONFIG} and {MODEL_CARD}")
    if atomic.sha256_file(weights_path) != _expected_sha256(card, path / MODEL_CARD):
        raise InputError(f"{weights_path}: sha256 does not match the model card; the file is corrupt or was replaced")
    method = config.pop("method", None)
    try:
        cfg = JDAMConfig.from_dict(config)
    except (ValueError, TypeError) as error:
        raise InputError(f"{path / CONFIG}: {error}") from None
    _check_plausible(cfg, path / CONFIG)
    net = _network(cfg, method, card, path)
    try:
        net.load_state_dict(load_file(weights_path))
    except Exception as error:  # noqa: BLE001 - safetensors and torch raise several types
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
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
