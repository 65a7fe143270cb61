"""Which torch device a run uses: ``auto`` takes a visible GPU and otherwise says it falls back to the CPU."""

from __future__ import annotations

import logging

import torch

from bids_jdam.errors import InputError

log = logging.getLogger("bids_jdam")


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu`` or ``cuda``; an explicit ``cuda`` without a GPU is an input error, not a silent fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("no CUDA GPU is visible (in a container, pass --gpus all or --nv): running on CPU")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "--device cuda: no CUDA GPU is visible (in a container pass --gpus all / --nv); "
            "use --device auto to fall back to CPU"
        )
    return torch.device(name)
