"""One run at a time per participant: an exclusive lock in the output directory and one in the work directory.

Two runs on the same output or work directory would delete each other's staging and scratch folders (clean-up
treats what is not locked as left over by a killed run). ``flock`` locks vanish with the process that held them, so
a killed run never leaves a participant locked; the lock files themselves stay (hidden, a few bytes) and name the
holder for the refusal message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from bids_jdam.errors import InputError
from bids_jdam.io import atomic, write_gate

LOCK_PREFIX = ".lock-sub-"


@contextlib.contextmanager
def participant_lock(output_dir: Path, work_dir: Path, subject: str) -> Iterator[None]:
    """Hold sub-``subject``'s locks in both directories; a second run is refused with a message naming the first."""
    with contextlib.ExitStack() as stack:
        for folder in dict.fromkeys((Path(output_dir), Path(work_dir))):  # the same folder is locked once
            stack.enter_context(_exclusive(folder / f"{LOCK_PREFIX}{subject}", subject))
        yield


@contextlib.contextmanager
def _exclusive(path: Path, subject: str) -> Iterator[None]:
    atomic.make_dirs(path.parent)
    write_gate.check(path, "lock file")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip() or "another process"
            raise InputError(
                f"{path}: sub-{subject} is being processed by another bids-jdam run ({holder}); wait for it to "
                "finish or use another output and work directory"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(
            descriptor,
            f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(),
            0,
        )
        yield
    finally:
        os.close(descriptor)  # releases the lock
