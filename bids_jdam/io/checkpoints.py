"""Training checkpoints, stored without pickle: one format for every method.

A checkpoint is a pair ``checkpoint-<step>.safetensors`` (every tensor: weights, EMA, optimizer moments, RNG states)
+ ``checkpoint-<step>.json`` (everything else). The JSON is written last, so a checkpoint counts only once both
files are complete; the JSON records the tensors' sha256, so a truncated file is reported, not resumed from.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bids_jdam.errors import InputError
from bids_jdam.io import atomic

CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)\.json$")


def contiguous_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies: what safetensors can write."""
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}


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
    stored = contiguous_cpu(tensors)
    atomic.write_with(tensor_path, lambda temp: save_file(stored, str(temp)))
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
    try:
        state = json.loads(state_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{state_path}: not valid JSON ({error})") from None
    if not isinstance(state, dict) or atomic.sha256_file(tensor_path) != state.get("tensors_sha256"):
        raise InputError(f"{tensor_path}: sha256 does not match {state_path.name}; the checkpoint is corrupt")
    return load_file(tensor_path), state
