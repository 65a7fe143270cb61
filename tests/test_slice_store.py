"""The slice store: training slices cut once to disk and memory-mapped, the same slices as in memory."""

import json

import numpy as np
import pytest
import torch

from bids_jdam.data.dataset import PairedSliceDataset
from bids_jdam.data.slice_store import MANIFEST, StoredPairs, open_slice_store, write_slice_store
from tests.test_train import synthetic_subjects

PLANES = ("axial", "coronal")


def test_store_gives_the_slices_of_the_volumes_memory_mapped(tmp_path):
    volumes = synthetic_subjects(None, None, ["01", "02", "03"])
    in_memory = PairedSliceDataset(volumes, PLANES, 16)
    consumed = []

    def one_at_a_time():
        for volume in volumes:
            consumed.append(volume.subject)
            yield volume

    store = open_slice_store(write_slice_store(one_at_a_time(), tmp_path / "store", PLANES, 16))
    assert consumed == ["01", "02", "03"] and len(store) == len(in_memory)
    assert all(isinstance(subject.pairs, StoredPairs) for subject in store.subjects)  # on disk, not in memory
    items = torch.tensor([0, len(store) - 1, 7, 3])
    for from_store, from_memory in zip(store.stacked(items), in_memory.stacked(items)):
        assert from_store.shape == (4, 1, 16, 16) and torch.equal(from_store, from_memory)
    assert store[5].plane == in_memory[5].plane and store[5].index == in_memory[5].index
    assert store[5].subject == in_memory[5].subject and torch.equal(store[5].mri, in_memory[5].mri)
    # A hand-cut slice: subject 02's first coronal slice is the volume's plane y = index, padded to 16 x 16.
    position = next(i for i in range(len(store)) if store[i].subject == "02" and store[i].plane == "coronal")
    sample = store[position]
    cut = volumes[1].t1[:, sample.index, :]
    assert np.array_equal(sample.mri[0, 2:14, 3:13].numpy(), cut) and float(sample.mri[0, :2].abs().sum()) == 0


def test_a_store_without_its_manifest_or_of_another_format_is_not_read(tmp_path):
    folder = write_slice_store(synthetic_subjects(None, None, ["01"]), tmp_path / "store", PLANES, 16)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ValueError, match="slice store format 99"):
        open_slice_store(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError):
        open_slice_store(folder)
