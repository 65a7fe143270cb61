"""What every method's trainer shares: a counted, timed training step and one checkpoint format.

A method's trainer implements ``update`` (one optimizer step), ``state``/``load_state`` (its tensors and JSON) and
``delivered`` (the network the model directory stores). The bookkeeping that makes budgets and resuming mean the
same for every method (steps, wall and CPU seconds inside steps, the loss curve, the checkpoint's header) is here.
"""

from __future__ import annotations

import abc
import time
from typing import Any

import torch

from bids_jdam.config import JDAMConfig
from bids_jdam.errors import InputError

CHECKPOINT_FORMAT = 2  # 1: bids-jdam 0.x before the single training loop (different keys per method)


class Trainer(abc.ABC):
    """One training run's state and its step; ``method_name`` and ``cfg`` go into every checkpoint."""

    def __init__(self, method_name: str, cfg: JDAMConfig, device: torch.device):
        self.method_name, self.cfg, self.device = method_name, cfg, torch.device(device)
        self.step = 0
        self.train_seconds = 0.0  # wall-clock seconds inside training steps, over all resumed runs
        self.cpu_seconds = 0.0  # this process's CPU seconds inside training steps (a fair budget on a shared CPU)
        self.curve: list[dict[str, Any]] = []  # one point per checkpoint: step, seconds, mean loss

    @property
    @abc.abstractmethod
    def batch_size(self) -> int:
        """Slices per step."""

    @abc.abstractmethod
    def update(self) -> float:
        """One optimizer step on a fresh batch; returns the loss."""

    @abc.abstractmethod
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every tensor of the run and the JSON-able rest (method-specific part)."""

    @abc.abstractmethod
    def load_state(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """The inverse of :meth:`state`."""

    @abc.abstractmethod
    def delivered(self) -> torch.nn.Module:
        """The trained network as the model directory stores it (EMA weights where the method keeps an EMA)."""

    def train_step(self) -> float:
        wall, cpu = time.perf_counter(), time.process_time()
        loss = self.update()
        self.step += 1
        self.train_seconds += time.perf_counter() - wall
        self.cpu_seconds += time.process_time() - cpu
        return loss

    def checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, state = self.state()
        header = {
            "format": CHECKPOINT_FORMAT,
            "method": self.method_name,
            "config": self.cfg.to_dict(),
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
            "curve": self.curve,
        }
        return tensors, header | state

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], where: str = "checkpoint") -> None:
        """Continue exactly where :meth:`checkpoint` left off."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise InputError(
                f"{where}: written by an older bids-jdam (checkpoint format {state.get('format', 1)}, "
                f"this version reads {CHECKPOINT_FORMAT}); start afresh without --resume"
            )
        self.load_state(tensors, state)
        self.step = state["step"]
        self.train_seconds, self.cpu_seconds = state["train_seconds"], state["cpu_seconds"]
        self.curve = state["curve"]
