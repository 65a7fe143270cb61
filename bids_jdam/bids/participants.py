"""The dataset's participants.tsv, read in one place for training (diagnoses) and the group level (groups, roster).

Rows are keyed by the participant label without ``sub-`` (``participant_id`` may be written with or without it);
``n/a`` and empty cells are None. The diagnosis is the first column named ``diagnosis``, ``dx`` or ``group`` (any
case), so that a dataset converted by another tool (Clinica writes ``diagnosis``, others ``dx`` or ``group``) keeps
its groups.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Mapping
from pathlib import Path

from bids_jdam.errors import InputError

PARTICIPANTS_FILE = "participants.tsv"
DIAGNOSIS_COLUMNS = ("diagnosis", "dx", "group")
MISSING_CELLS = ("", "n/a")

ParticipantRow = dict[str, str | None]


def participants_path(bids_dir: Path) -> Path:
    """Where the dataset's participants table is (whether or not it exists)."""
    return Path(bids_dir) / PARTICIPANTS_FILE


def read_participants(bids_dir: Path) -> dict[str, ParticipantRow]:
    """participants.tsv as rows keyed by label (``01`` for ``sub-01``), in file order; rows without an id skipped."""
    path = participants_path(bids_dir)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter="\t")
            header = next(reader, None)
            lines = list(reader)
    except OSError as error:
        raise InputError(f"{path}: cannot read the participants table ({error.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot parse the participants table ({error})") from None
    if not header or "participant_id" not in header:
        raise InputError(f"{path}: no participant_id column")
    rows: dict[str, ParticipantRow] = {}
    for number, cells in enumerate(lines, start=2):
        if len(cells) > len(header):
            raise InputError(
                f"{path}: cannot parse the participants table (line {number} has {len(cells)} cells, "
                f"the header {len(header)})"
            )
        row = {column: _cell(value) for column, value in itertools.zip_longest(header, cells, fillvalue="")}
        label = row.get("participant_id")
        if label is not None:
            rows[label.removeprefix("sub-")] = row
    return rows


def diagnosis_of(row: Mapping[str, str | None]) -> str | None:
    """The row's diagnosis: its first column named diagnosis, dx or group (any case); None without one."""
    by_lower_name = {column.lower(): column for column in row}
    column = next((by_lower_name[name] for name in DIAGNOSIS_COLUMNS if name in by_lower_name), None)
    return None if column is None else row[column]


def read_diagnoses(bids_dir: Path) -> dict[str, str]:
    """participant label (without ``sub-``) -> diagnosis (``n/a`` where the table gives none), for training."""
    path = participants_path(bids_dir)
    if not path.is_file():
        raise InputError(f"{path}: missing; training needs participant_id and diagnosis columns")
    return {label: diagnosis_of(row) or "n/a" for label, row in read_participants(bids_dir).items()}


def _cell(value: str) -> str | None:
    text = value.strip()
    return None if text in MISSING_CELLS else text
