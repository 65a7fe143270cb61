"""Adam's state as named tensors plus JSON scalars, so that a checkpoint needs no pickle."""

from __future__ import annotations

from typing import Any

import torch


def optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(``{prefix}.{param}.{key}`` -> tensor, JSON-able rest: non-tensor entries and the parameter groups)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"scalars": scalars, "param_groups": state["param_groups"]}


def load_optimizer_tensors(
    prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict
) -> None:
    """The inverse of :func:`optimizer_tensors`."""
    entries: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1 :].split(".", 1)
            entries.setdefault(int(index), {})[key] = value
    for index, values in rest["scalars"].items():
        entries.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": entries, "param_groups": rest["param_groups"]})
