"""Model directories and training checkpoints, stored without pickle.

A model directory holds ``weights.safetensors`` (and optionally ``weights-fp16.safetensors``), ``config.json``
(the full :class:`JDAMConfig` plus the method name), ``model_card.json`` (what it was trained on, how long, how
well it did on held-out subjects, and the weights' sha256) and ``README.md`` (the same card for people, in the
Hugging Face Hub's format: :mod:`bids_jdam.methods.readme`). Loading verifies the checksum first, so a truncated or
swapped file is reported instead of silently producing wrong images.

Which network the weights belong to is the method's business (:mod:`bids_jdam.methods`); training
checkpoints are :mod:`bids_jdam.io.checkpoints`.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bids_jdam.config import JDAMConfig
from bids_jdam.errors import InputError
from bids_jdam.io import atomic
from bids_jdam.io.checkpoints import contiguous_cpu
from bids_jdam.methods import METHODS, Method
from bids_jdam.methods.readme import README, render_readme

WEIGHTS = "weights.safetensors"
WEIGHTS_FP16 = "weights-fp16.safetensors"
CONFIG = "config.json"
MODEL_CARD = "model_card.json"
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
# Bounds that keep a malformed config.json from asking for absurd memory before any weight is read.
SLICE_SIZE_RANGE = (8, 1024)
GRID_SPACING_RANGE_MM = (0.5, 10.0)
MAX_SAFETENSORS_HEADER = 100 << 20
PHANTOM_DATA = "synthetic phantoms"
PHANTOM_WARNING = "trained on synthetic phantoms, not for real patients"


def intended_use(trained_on: str) -> str:
    """The model card's use statement; phantom-trained models say plainly that they are not for patients."""
    if trained_on == PHANTOM_DATA:
        return f"Demonstration and testing only: {PHANTOM_WARNING}."
    return "Research use only; not a medical device. Synthetic PET is not a substitute for a PET scan."


def save_model_dir(
    path: Path, net: nn.Module, cfg: JDAMConfig, method: Method, card: dict[str, Any], fp16: bool = False
) -> Path:
    """Write weights, config, model card and README to ``path``; ``card`` must name what it was ``trained_on``."""
    path = Path(path)
    atomic.make_dirs(path)
    weights = contiguous_cpu(net.state_dict())
    files = {WEIGHTS: weights}
    if fp16:
        files[WEIGHTS_FP16] = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    for name, tensors in files.items():
        atomic.write_with(
            path / name, lambda temp, t=tensors: save_file(t, str(temp), metadata={"method": method.name})
        )
    atomic.write_json(path / CONFIG, {"method": method.name, **cfg.to_dict()})
    full_card = {
        "method": method.name,
        **method.card_fields(cfg),
        **card,
        "intended_use": intended_use(card["trained_on"]),
        "sha256": {name: atomic.sha256_file(path / name) for name in files},
    }
    atomic.write_json(path / MODEL_CARD, full_card)
    warning = PHANTOM_WARNING if card["trained_on"] == PHANTOM_DATA else None
    atomic.write_text(path / README, render_readme(full_card.get("name", path.name), full_card, cfg, method, warning))
    return path


def update_model_card(path: Path, fields: dict[str, Any]) -> Path:
    """Add or replace ``fields`` of a model directory's card, removing those set to None (never the checksums of
    its weights)."""
    if "sha256" in fields:
        raise ValueError("the weights' checksums are written by save_model_dir only")
    card_path = Path(path) / MODEL_CARD
    card = {**_read_json(card_path), **fields}
    return atomic.write_json(card_path, {key: value for key, value in card.items() if value is not None})


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
        raise InputError(f'{card_path}: no sha256 for {WEIGHTS} ("sha256": {{"{WEIGHTS}": "<64 hex digits>"}})')
    if not isinstance(expected, str) or not SHA256_PATTERN.fullmatch(expected):
        raise InputError(f"{card_path}: the sha256 of {WEIGHTS} must be 64 hex digits, got {expected!r}")
    return expected


def weights_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a safetensors header, read without loading any tensor (or any pickle)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if head[:1] == b"\x80" or head[:2] == b"PK":
            raise InputError(
                f"{path}: a Python pickle or torch.save file, not safetensors; bids-jdam never "
                "unpickles weights (convert them with safetensors.torch.save_file)"
            )
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
    return {
        name: list(entry.get("shape", []))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }


def _check_plausible(cfg: JDAMConfig, config_path: Path) -> None:
    low, high = SLICE_SIZE_RANGE
    if not low <= cfg.grid.slice_size <= high:
        raise InputError(f"{config_path}: grid.slice_size {cfg.grid.slice_size} is outside {low}..{high}")
    low, high = GRID_SPACING_RANGE_MM
    if not low <= cfg.grid.spacing_mm <= high:
        raise InputError(f"{config_path}: grid.spacing_mm {cfg.grid.spacing_mm} is outside {low}..{high} mm")
    if not 0 < cfg.sde.sigma_min < cfg.sde.sigma_max:
        raise InputError(
            f"{config_path}: the SDE needs 0 < sigma_min < sigma_max, got {cfg.sde.sigma_min}, {cfg.sde.sigma_max}"
        )


def _network(cfg: JDAMConfig, method: Method, path: Path) -> nn.Module:
    """The model's network, built on the meta device first so that its shapes are checked against the weights'
    header before any memory is allocated (a config asking for 100000 channels fails here, not in malloc)."""
    try:
        with torch.device("meta"):
            shapes = {name: list(t.shape) for name, t in method.build_network(cfg).state_dict().items()}
    except Exception as error:  # noqa: BLE001 - any construction error means the config is unusable
        raise InputError(f"{path / CONFIG}: cannot build the network ({type(error).__name__}: {error})") from None
    stored = weights_shapes(path / WEIGHTS)
    for name, shape in shapes.items():
        if stored.get(name) != shape:
            raise InputError(
                f"{path / WEIGHTS}: weights do not fit the network in {CONFIG} ({name}: "
                f"{stored.get(name, 'missing')} stored, {shape} expected)"
            )
    return method.build_network(cfg)


def load_model_dir(path: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, JDAMConfig, dict[str, Any]]:
    """(model, config, card) of a model directory: the method's ``as_model`` (a JDAM denoiser, the U-Net, ...).

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
    method = METHODS.named(config.pop("method", None), str(path / CONFIG))
    try:
        cfg = JDAMConfig.from_dict(method.stored_config(config, card))
    except (ValueError, TypeError) as error:
        raise InputError(f"{path / CONFIG}: {error}") from None
    _check_plausible(cfg, path / CONFIG)
    net = _network(cfg, method, path)
    try:
        net.load_state_dict(load_file(weights_path))
    except Exception as error:  # noqa: BLE001 - safetensors and torch raise several types
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{weights_path}: weights do not fit the network in {CONFIG} ({first_line})") from None
    return method.as_model(net, cfg).to(device).eval(), cfg, {**card, "method": method.name}
