"""participants.tsv is read in one place: rows by label, diagnoses for training, groups for the group level."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_jdam.bids.participants import diagnosis_of, read_diagnoses, read_participants
from bids_jdam.errors import InputError
from bids_jdam.reports.group import expected_participants, metrics_table


def write_table(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text(text, encoding="utf-8")
    return root


def test_rows_are_keyed_by_label_with_missing_cells_as_none(tmp_path):
    bids = write_table(tmp_path, "participant_id\tage\tdiagnosis\nsub-01\t71\tAD\n02\tn/a\t\nn/a\t60\tCN\n")
    assert read_participants(bids) == {
        "01": {"participant_id": "sub-01", "age": "71", "diagnosis": "AD"},
        "02": {"participant_id": "02", "age": None, "diagnosis": None},
    }


@pytest.mark.parametrize("column", ["diagnosis", "dx", "group", "DX", "Group"])
def test_the_diagnosis_column_may_be_named_as_the_group_level_accepts(tmp_path, column):
    bids = write_table(tmp_path, f"participant_id\t{column}\nsub-01\tAD\nsub-02\tn/a\n")
    assert read_diagnoses(bids) == {"01": "AD", "02": "n/a"}


def test_diagnosis_is_the_first_accepted_column_even_when_its_cell_is_empty():
    assert diagnosis_of({"participant_id": "sub-01", "dx": "CN", "diagnosis": None}) is None
    assert diagnosis_of({"participant_id": "sub-01", "age": "70"}) is None


def test_a_short_row_has_its_missing_cells_as_none(tmp_path):
    bids = write_table(tmp_path, "participant_id\tsex\tdiagnosis\nsub-01\tF\n")
    assert read_diagnoses(bids) == {"01": "n/a"}


def test_without_a_diagnosis_column_every_participant_is_n_a(tmp_path):
    bids = write_table(tmp_path, "participant_id\tage\nsub-01\t70\n")
    assert read_diagnoses(bids) == {"01": "n/a"}


def test_training_without_participants_tsv_says_what_it_needs(tmp_path):
    with pytest.raises(InputError, match=r"participants\.tsv: missing; training needs participant_id and diagnosis"):
        read_diagnoses(tmp_path)


@pytest.mark.parametrize("text", ["", "subject\tdiagnosis\nsub-01\tAD\n"])
def test_a_table_without_participant_id_is_refused(tmp_path, text):
    bids = write_table(tmp_path, text)
    with pytest.raises(InputError, match=r"participants\.tsv: no participant_id column$"):
        read_diagnoses(bids)


def test_a_row_with_more_cells_than_the_header_is_refused_in_one_line(tmp_path):
    bids = write_table(tmp_path, "participant_id\tdiagnosis\nsub-01\tAD\textra\n")
    with pytest.raises(InputError, match=r"cannot parse the participants table \(line 2 has 3 cells, the header 2\)"):
        read_participants(bids)


def test_a_table_that_is_not_text_is_refused_in_one_line(tmp_path):
    (tmp_path / "participants.tsv").write_bytes(b"participant_id\n\xff\xfe\x00sub-01\n")
    with pytest.raises(InputError, match="cannot parse the participants table"):
        read_participants(tmp_path)


def test_the_group_level_reads_the_same_rows(tmp_path):
    bids = write_table(tmp_path, "participant_id\tdx\n01\tAD\nsub-02\tn/a\n")
    participants = read_participants(bids)
    assert expected_participants(tmp_path, bids, participants) == ["sub-01", "sub-02"]
    assert metrics_table([], participants).empty
