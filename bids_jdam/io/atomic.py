"""Atomic file writes: a reader (another job, a browser, a resumed run) sees the old file or the new one, never half.

Every write goes to a hidden file in the same folder (same filesystem, so ``os.replace`` is atomic) that keeps the
extension (nibabel picks the format from it), and is renamed into place only once complete. Every target, and
every move, copy and new folder, first passes :func:`bids_jdam.io.write_gate.check` (never under the input dataset).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib

from bids_jdam.io import write_gate

# Names of unfinished writes (and of steps' scratch folders): what a killed run leaves behind, safe to delete.
TEMPORARY_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# What a plain open() would create: 0666 less the process's umask (read once: os.umask is process-wide).
_FILE_MODE = 0o666 & ~_umask()


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique name next to ``path`` with the same extension (``.nii.gz`` included)."""
    path = Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}-{path.name}")


def write_with(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary)`` on a sibling of ``path`` and move the result into place; clean up on failure."""
    path = write_gate.check(Path(path))
    make_dirs(path.parent)
    temporary = temporary_sibling(path)
    try:
        write(temporary)
        os.chmod(temporary, _FILE_MODE)  # some writers (safetensors) create 0600 files other users cannot read
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def make_dirs(folder: Path) -> Path:
    """``mkdir -p`` after the write gate."""
    folder = write_gate.check(Path(folder), "folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def move(source: Path, target: Path) -> Path:
    """Rename ``source`` to ``target`` (same filesystem, atomic; replaces a file) after the write gate."""
    target = write_gate.check(Path(target))
    os.replace(source, target)
    return target


def copy_file(source: Path, target: Path) -> Path:
    """Copy ``source``'s contents to ``target`` atomically."""
    return write_with(Path(target), lambda temporary: shutil.copyfile(source, temporary))


def link_or_copy(source: Path, target: Path) -> Path:
    """Hard-link ``source`` at ``target`` (no data copied), or copy it where the filesystem cannot link."""
    target = write_gate.check(Path(target))
    make_dirs(target.parent)
    try:
        os.link(source, target)
    except OSError:
        copy_file(source, target)
    return target


def write_bytes(path: Path, data: bytes) -> Path:
    return write_with(path, lambda temporary: temporary.write_bytes(data))


def write_text(path: Path, text: str) -> Path:
    return write_with(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Indented JSON; values JSON does not know (paths, numpy scalars) are written as strings."""
    return write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def save_nifti(image: nib.Nifti1Image, path: Path) -> Path:
    return write_with(path, lambda temporary: nib.save(image, str(temporary)))


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's contents, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
