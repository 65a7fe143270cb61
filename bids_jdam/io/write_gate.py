"""The one check every write of a run passes: nothing lands under the input dataset, whatever symlinks lie between.

The app protects the input root for the length of a run (:func:`protecting`); atomic writes, moves, copies and new
folders (:mod:`bids_jdam.io.atomic`), the step cache's work folders and the participant staging call :func:`check` on
their target. A path is refused when it, or the folder it would be created in, resolves under a protected root: a
symlinked ``OUT/sub-01``, ``figures`` folder, work or staging folder cannot redirect a write into the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bids_jdam.errors import InputError

_protected: list[Path] = []


@contextlib.contextmanager
def protecting(root: Path) -> Iterator[None]:
    """Refuse writes under ``root`` (resolved) until the block ends."""
    resolved = resolve(Path(root))
    _protected.append(resolved)
    try:
        yield
    finally:
        _protected.remove(resolved)


def resolve(path: Path) -> Path:
    """``path`` with every symlink followed; a symlink loop is an InputError naming the path."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as error:  # Python raises RuntimeError (3.11/3.12) or OSError (3.13) on a loop
        raise InputError(f"{path}: cannot resolve the path (symlink loop?): {error}") from None


def check(path: Path, what: str = "output") -> Path:
    """Return ``path`` if writing it cannot touch a protected root; raise InputError otherwise."""
    path = Path(path)
    candidates = (resolve(path), resolve(path.parent) / path.name)
    for root in _protected:
        for candidate in candidates:
            if candidate == root or candidate.is_relative_to(root):
                raise InputError(
                    f"{path}: this {what} resolves to {candidate}, inside the input dataset {root}; "
                    "bids-jdam never writes there (remove the symlink or choose another folder)"
                )
    return path
