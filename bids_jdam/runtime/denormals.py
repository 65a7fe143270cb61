"""CPU torch work with subnormal floats flushed to zero, in a thread of its own so the caller's state is untouched.

Why: on Intel Xeon CPUs an operation on a subnormal float32 (0 < |x| < 1.2e-38) takes about a hundred times longer
than on a normal one; HD-BET's network produces many of them (one fast-mode phantom: 875 CPU-s instead of 26),
while AMD EPYC CPUs barely slow down. Flushing them to zero changes results only below 1.2e-38 before rounding.

``torch.set_flush_denormal`` sets the flag of the calling thread only, and OpenMP's worker threads copy the flag
of the thread that creates them, once. So the work runs in a new thread that sets the flag first: its OpenMP team
is created with it, and neither the caller's thread nor its worker threads ever see the flag (bids-jdam used as a
library changes nothing in the user's own computations). Calls nested inside such a thread run in place.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch

P = ParamSpec("P")
T = TypeVar("T")

SMALLEST_NORMAL_FLOAT32 = 1.1754944e-38
_inside = threading.local()


def subnormals_flushed() -> bool:
    """Whether this thread's floating-point unit flushes subnormal float32 values to zero (measured, not assumed)."""
    tiny = torch.tensor([SMALLEST_NORMAL_FLOAT32 / 4], dtype=torch.float32)
    return bool((tiny * 1.0).item() == 0.0)


def flush_supported() -> bool:
    """Whether this CPU and torch build can flush subnormals (x86 with SSE3; answered once, in a scratch thread)."""
    return _run_in_thread(torch.set_flush_denormal, True)


def without_subnormals(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorate ``fn`` so that it runs with subnormals flushed to zero (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_without_subnormals(fn, *args, **kwargs)

    return wrapper


def run_without_subnormals(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a thread (with its own OpenMP team) that flushes subnormals; exceptions propagate.

    The caller's torch thread count, autograd and inference modes are carried into the thread (they are
    per-thread state in torch); on a CPU that cannot flush, ``fn`` runs unchanged.
    """
    if getattr(_inside, "active", False):
        return fn(*args, **kwargs)
    threads, grad, inference = torch.get_num_threads(), torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def flushed() -> T:
        _inside.active = True
        torch.set_flush_denormal(True)
        torch.set_num_threads(threads)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(*args, **kwargs)

    return _run_in_thread(flushed)


def _run_in_thread(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn`` in a fresh daemon thread and return its result or raise its exception (Ctrl-C still reaches us)."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
            outcome["error"] = error

    worker = threading.Thread(target=target, name="bids-jdam-flushed", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
