"""Cached steps: a step runs only when its outputs are missing or its inputs, settings or versions changed.

Each step writes ``<name>.json`` next to its outputs with a key (a hash of the input files' contents, the
settings, the package versions and the step's own source code: the functions and modules it names as its code) and
the outputs' hashes. The source code is part of the key because a package version does not change with every
change to a step: after an upgrade exactly the steps whose code changed run again (and those whose inputs they
then change), never a step reused from other code. The record is written last and every output goes
through a temporary file and ``os.replace``, so a run killed at any point leaves either a valid step or one that
runs again; the temporary files and scratch folders a killed step left are deleted when a step next runs there.
Every output is read back whole before it gets its final name: on a full disk ANTs can write a truncated or empty
file without raising, and such a file must fail the step, not be cached.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

import nibabel as nib
import numpy as np

from bids_jdam.errors import InputError, StepError
from bids_jdam.io import atomic

log = logging.getLogger("bids_jdam.preprocess")

# Packages whose version can change any step's output (bids-jdam's own code is keyed per step instead).
BASE_PACKAGES = ("antspyx", "nibabel", "numpy", "scipy")


@dataclass
class StepResult:
    """What a step produced and whether it ran now or came from the cache."""

    name: str
    outputs: dict[str, Path]
    metadata: dict[str, Any]
    seconds: float  # wall time of the run that made the outputs
    cpu_seconds: float  # CPU time of that run, all threads and child processes (robust to other load)
    reused: bool


@dataclass
class StepRunner:
    """Runs the cached steps of one subject in one work directory and keeps their log."""

    work_dir: Path
    subject: str
    results: dict[str, StepResult] = field(default_factory=dict)

    def run(
        self,
        name: str,
        action: Callable[[dict[str, Path]], dict[str, Any] | None],
        *,
        inputs: Mapping[str, Path],
        outputs: Mapping[str, str],
        code: tuple[Any, ...],
        settings: Mapping[str, Any] | None = None,
        packages: tuple[str, ...] = (),
    ) -> StepResult:
        """Run ``action(temporary output paths)`` unless a valid cached result exists; return the step's result.

        ``outputs`` maps output names to file names inside the work directory; ``action`` writes each output to
        the temporary path it is given and may return JSON-serializable metadata to keep in the record. ``code``
        names the functions and modules whose source decides what the step computes (the function that defines
        ``action`` first).
        """
        atomic.make_dirs(self.work_dir)
        final = {key: self.work_dir / fname for key, fname in outputs.items()}
        record_path = self.work_dir / f"{name}.json"
        key = step_key(name, inputs, settings or {}, BASE_PACKAGES + packages, code_digest(code))
        cached = _valid_record(record_path, key, final)
        if cached is not None:
            result = StepResult(name, final, cached["metadata"], cached["seconds"], cached["cpu_seconds"], reused=True)
            log.info("sub-%s %s: reused cached outputs (ran in %.1f s)", self.subject, name, result.seconds)
        else:
            where = next(iter(inputs.values()), None) or self.work_dir
            meta, seconds, cpu_seconds = self._produce(name, action, final, where)
            atomic.write_json(
                record_path,
                {
                    "step": name,
                    "key": key,
                    "seconds": round(seconds, 3),
                    "cpu_seconds": round(cpu_seconds, 3),
                    "settings": dict(settings or {}),
                    "versions": package_versions(BASE_PACKAGES + packages),
                    "code": code_digest(code),
                    "inputs": {k: str(p) for k, p in inputs.items()},
                    "outputs": {k: atomic.sha256_file(p) for k, p in final.items()},
                    "metadata": meta,
                },
            )
            log.info("sub-%s %s: ran in %.1f s -> %s", self.subject, name, seconds, ", ".join(outputs.values()))
            result = StepResult(name, final, meta, seconds, cpu_seconds, reused=False)
        self.results[name] = result
        return result

    def _produce(
        self, name: str, action: Callable[[dict[str, Path]], dict[str, Any] | None], final: dict[str, Path], where: Path
    ) -> tuple[dict[str, Any], float, float]:
        """Run ``action`` on temporary paths, check and move its outputs into place; (metadata, wall s, CPU s).
        A failure removes what it wrote and names the subject, the step and ``where`` (its first input)."""
        _remove_leftovers(self.work_dir)
        temporary = {k: atomic.temporary_sibling(p) for k, p in final.items()}
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        try:
            meta = action(temporary) or {}
            for k, tmp in temporary.items():
                verify_output(tmp, final[k])
        except InputError:
            _remove(temporary.values())
            raise
        except Exception as exc:
            _remove(temporary.values())
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StepError(f"sub-{self.subject}: step {name} failed on {where}: {reason}") from exc
        seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
        for k, tmp in temporary.items():
            atomic.move(tmp, final[k])
        return meta, seconds, cpu_seconds


def verify_output(written: Path, final: Path) -> None:
    """Raise unless ``written`` (to become ``final``) exists, is not empty and reads back whole."""
    if not written.is_file():
        raise RuntimeError(f"the step did not write its output {final}")
    if written.stat().st_size == 0:
        raise RuntimeError(f"its output {final} is empty (is the disk full?)")
    name = final.name
    try:
        if name.endswith((".nii", ".nii.gz")):
            np.asarray(nib.load(str(written)).dataobj)  # decompresses and reads every voxel
        elif name.endswith(".gz"):
            with gzip.open(written, "rb") as handle:
                while handle.read(1 << 20):
                    pass
        elif name.endswith(".json"):
            json.loads(written.read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 - whatever the reader raises, the file is not usable
        raise RuntimeError(f"its output {final} is truncated or unreadable ({error}; is the disk full?)") from None


def step_key(
    name: str, inputs: Mapping[str, Path], settings: Mapping[str, Any], packages: tuple[str, ...], code: str
) -> str:
    """Hash of everything that determines a step's outputs (``code``: :func:`code_digest` of the step's code)."""
    payload = {
        "step": name,
        "inputs": {k: atomic.sha256_file(Path(p)) for k, p in sorted(inputs.items())},
        "settings": settings,
        "versions": package_versions(packages),
        "code": code,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(code: tuple[Any, ...]) -> str:
    """Hash of the source of each function or module in ``code``, in order."""
    digest = hashlib.sha256()
    for item in code:
        digest.update(_source_digest(item).encode())
    return digest.hexdigest()


@cache
def _source_digest(item: Any) -> str:
    """Hash of one function's or module's source text (read once per process)."""
    return hashlib.sha256(inspect.getsource(item).encode()).hexdigest()


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    """Installed versions of ``packages`` ("missing" for one that is not installed)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _valid_record(record_path: Path, key: str, outputs: Mapping[str, Path]) -> dict[str, Any] | None:
    if not record_path.exists() or not all(p.exists() for p in outputs.values()):
        return None
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("key") != key:
        return None
    if any(record["outputs"].get(k) != atomic.sha256_file(p) for k, p in outputs.items()):
        return None
    return record


def _remove_leftovers(work_dir: Path) -> None:
    """Unfinished writes and scratch folders of a killed run (one run works in an image's work dir at a time)."""
    for leftover in work_dir.glob(f"{atomic.TEMPORARY_PREFIX}*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _remove(paths) -> None:
    for p in paths:
        Path(p).unlink(missing_ok=True)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (registration runs in one)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime
