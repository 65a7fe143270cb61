"""The one training loop: every method, every benchmark, the same budget and the same resume rule.

A :class:`Budget` stops training at the first limit reached: a total number of steps, minutes of training in this
call (wall clock; 0 means no step), or total CPU minutes inside training steps (what the benchmarks give every
method on a shared CPU). Checkpoints are written every ``checkpoint_every`` steps and when the loop ends, each with a
point of the loss curve. Resuming is the caller's: ``Trainer.restore`` of the newest checkpoint, before ``fit``.
The steps run with subnormal floats flushed (:mod:`bids_jdam.runtime.denormals`), so every caller, a benchmark
too, trains at the speed the app trains at.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bids_jdam.io.checkpoints import save_checkpoint
from bids_jdam.runtime.denormals import without_subnormals
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    """When training stops; None = no limit of that kind (all None: train until interrupted)."""

    max_steps: int | None = None  # total steps, counting resumed ones
    minutes: float | None = None  # wall-clock minutes of training in this call; 0 = none
    cpu_minutes: float | None = None  # total CPU minutes inside training steps, counting resumed ones

    def timed(self) -> bool:
        return self.minutes is not None or self.cpu_minutes is not None


@without_subnormals
def fit(
    trainer: Trainer,
    budget: Budget,
    *,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int | None = None,
    ranks: Ranks = Ranks(),
    progress: bool = False,
) -> list[float]:
    """Train until ``budget`` is spent; returns this call's losses. Every rank stops at the same step."""
    deadline = time.perf_counter() + budget.minutes * 60 if budget.minutes is not None else math.inf
    every = checkpoint_every or trainer.cfg.train.checkpoint_every
    bar = tqdm(
        total=budget.max_steps,
        initial=trainer.step,
        desc=f"training {trainer.method_name}",
        unit="step",
        disable=not (progress and ranks.is_main),
    )
    losses: list[float] = []
    saved = trainer.step
    while not _spent(trainer, budget, deadline, ranks):
        losses.append(trainer.train_step())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.update(1)
        if trainer.step % every == 0:
            saved = _checkpoint(trainer, losses, checkpoint_dir, ranks)
    bar.close()
    if trainer.step != saved:
        _checkpoint(trainer, losses, checkpoint_dir, ranks)
    return losses


def _spent(trainer: Trainer, budget: Budget, deadline: float, ranks: Ranks) -> bool:
    if budget.max_steps is not None and trainer.step >= budget.max_steps:
        return True
    if not budget.timed():
        return False
    out_of_time = time.perf_counter() >= deadline or (
        budget.cpu_minutes is not None and trainer.cpu_seconds >= budget.cpu_minutes * 60
    )
    return ranks.any(out_of_time, trainer.device)  # decided together, so that every rank stops at the same step


def _checkpoint(trainer: Trainer, losses: list[float], checkpoint_dir: Path | None, ranks: Ranks) -> int:
    """A point of the loss curve, then (with a folder) a checkpoint: every rank gives its state, rank 0 writes."""
    since = trainer.step - (trainer.curve[-1]["step"] if trainer.curve else 0)
    recent = losses[-since:] if since else []
    trainer.curve.append(
        {
            "step": trainer.step,
            "train_seconds": round(trainer.train_seconds, 3),
            "cpu_seconds": round(trainer.cpu_seconds, 3),
            "mean_loss": float(np.mean(recent)) if recent else None,
        }
    )
    if checkpoint_dir is not None:
        tensors, state = trainer.checkpoint()
        if ranks.is_main:
            save_checkpoint(checkpoint_dir, trainer.step, tensors, state)
    return trainer.step
