"""Publishing a participant's outputs whole: staged in a hidden folder, swapped in by renames on success."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from types import TracebackType

from bids_jdam.bids.naming import image_key
from bids_jdam.io import atomic, write_gate

STAGING_PREFIX = ".staging-sub-"
REPLACED_PREFIX = ".replaced-sub-"


class ParticipantStaging:
    """Build one participant's new outputs in a hidden folder of ``out_dir`` and swap them in whole on success.

    Use ``staging.path(relative)`` for every output (``sub-X/...`` and ``sub-X.html``). On a clean exit the new
    ``sub-X`` folder receives the earlier run's files of the images this run did not produce (another session, an
    image that failed now), then replaces the old folder by two renames, and the report follows; a reader sees the
    old folder, no folder (clearly incomplete, restored by the next run: :func:`recover_interrupted_publish`) or the
    new one, never a mix of two runs. On an exception the staging folder is deleted and ``out_dir`` is untouched.
    The caller holds the participant's lock.
    """

    def __init__(self, out_dir: Path, subject: str) -> None:
        self.out_dir = Path(out_dir)
        self.subject_id = f"sub-{subject}"
        self.staging_dir = self.out_dir / f"{STAGING_PREFIX}{subject}-{uuid.uuid4().hex}"
        self.abandoned = False

    @staticmethod
    def check_targets(out_dir: Path, subject: str) -> None:
        """The participant's folder and report must not lead into the input (a symlinked ``OUT/sub-X``)."""
        write_gate.check(Path(out_dir) / f"sub-{subject}", "participant folder")
        write_gate.check(Path(out_dir) / f"sub-{subject}.html", "participant report")

    def __enter__(self) -> ParticipantStaging:
        self.check_targets(self.out_dir, self.subject_id[4:])
        atomic.make_dirs(self.staging_dir)
        return self

    def path(self, relative: Path | str) -> Path:
        """Where to write the output that will end up at ``out_dir/relative`` (parent folders created)."""
        staged = self.staging_dir / relative
        atomic.make_dirs(staged.parent)
        return staged

    def files(self) -> list[Path]:
        """Every staged file, relative to the staging folder (= where it will be in ``out_dir``)."""
        return sorted(p.relative_to(self.staging_dir) for p in self.staging_dir.rglob("*") if p.is_file())

    def discard(self, key: tuple[str | None, str | None]) -> None:
        """Drop the staged files of one image (``image_key``): it failed, the others go on."""
        for relative in self.files():
            if image_key(relative.name) == key:
                (self.staging_dir / relative).unlink()

    def abandon(self) -> None:
        """Publish nothing at the end (no image succeeded): ``out_dir`` stays as it was."""
        self.abandoned = True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if exc_type is None and not self.abandoned:
                self._publish()
        finally:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def _publish(self) -> None:
        new_folder = self.staging_dir / self.subject_id
        old_folder = self.out_dir / self.subject_id
        atomic.make_dirs(new_folder)
        _carry_forward(old_folder, new_folder)
        report = self.out_dir / f"{self.subject_id}.html"
        staged_report = self.staging_dir / report.name
        if staged_report.exists():
            report.unlink(missing_ok=True)  # no report is better than one describing the old folder
        replaced = self.out_dir / f"{REPLACED_PREFIX}{self.subject_id[4:]}-{uuid.uuid4().hex}"
        if old_folder.exists() or old_folder.is_symlink():
            atomic.move(old_folder, replaced)
        atomic.move(new_folder, old_folder)
        if staged_report.exists():
            atomic.move(staged_report, report)
        _remove_tree(replaced)


def _carry_forward(old_folder: Path, new_folder: Path) -> None:
    """Hard-link (or copy) into ``new_folder`` the old files of images that have no output in ``new_folder``.

    Only real files inside real folders are carried: a symlink (to the input, say) is never followed.
    """
    if not old_folder.is_dir() or old_folder.is_symlink():
        return
    produced = {image_key(p.name) for p in new_folder.rglob("*") if p.is_file()}
    for old in sorted(p for p in old_folder.rglob("*") if p.is_file() and not _through_symlink(p, old_folder)):
        if image_key(old.name) in produced:
            continue
        target = new_folder / old.relative_to(old_folder)
        if target.exists():
            continue
        atomic.link_or_copy(old, target)


def _through_symlink(path: Path, root: Path) -> bool:
    """Whether ``path`` or a folder between it and ``root`` is a symlink."""
    folders = [root / parent for parent in path.relative_to(root).parents if parent != Path(".")]
    return path.is_symlink() or any(folder.is_symlink() for folder in folders)


def _remove_tree(path: Path) -> None:
    """Delete a replaced participant folder; a symlink is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def recover_interrupted_publish(out_dir: Path, subject: str) -> None:
    """Undo what a run killed while publishing left (the caller holds the participant's lock).

    A missing ``sub-X`` with a ``.replaced-sub-X-*`` beside it is the old folder, put back; a replaced folder
    beside a present ``sub-X`` and every staging folder of the participant are leftovers, deleted.
    """
    out_dir = Path(out_dir)
    folder = out_dir / f"sub-{subject}"
    for replaced in sorted(out_dir.glob(f"{REPLACED_PREFIX}{subject}-*")):
        if not (folder.exists() or folder.is_symlink()):
            atomic.move(replaced, folder)
        else:
            _remove_tree(replaced)
    for stale in out_dir.glob(f"{STAGING_PREFIX}{subject}-*"):
        shutil.rmtree(stale, ignore_errors=True)
