"""Training slices on disk: each subject's padded (PET, MRI) slice pairs, cut once into a NumPy file.

At cohort scale (ADNI: about 450 subjects) the volumes do not fit in memory, and every torchrun rank would hold its
own copy of them. The training workflow streams the subjects through :func:`write_slice_store` one at a time (rank 0
alone), and every rank opens the store with :func:`open_slice_store`, which reads the rows a batch asks for by
their offset: the operating system's page cache holds the files once for all ranks, and a process's own memory
holds only its batch, so memory stays flat as the cohort grows. A batch is a few reads of contiguous rows, cheap
enough that no loader worker processes are needed. The ``.npy`` format is
NumPy's own and readable without bids-jdam; ``slices.json`` lists each file's subject, planes and
slice indices.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bids_jdam.data.dataset import PairedSliceDataset, SubjectSlices, SubjectVolumes, subject_slices
from bids_jdam.io import atomic

MANIFEST = "slices.json"
STORE_FORMAT = 1


def write_slice_store(
    volumes: Iterable[SubjectVolumes],
    folder: Path,
    planes: tuple[str, ...],
    slice_size: int,
    range_mm: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """Cut each subject of ``volumes`` (consumed one at a time) into ``folder``; the manifest is written last, so a
    store without one is incomplete."""
    folder = atomic.make_dirs(Path(folder))
    entries = []
    for number, volume in enumerate(volumes):
        slices = subject_slices(volume, planes, slice_size, range_mm=range_mm)
        name = f"subject-{number:05d}.npy"
        atomic.write_with(folder / name, functools.partial(_save, array=slices.pairs))
        entries.append(
            {"file": name, "subject": slices.subject, "planes": list(slices.planes), "indices": list(slices.indices)}
        )
    atomic.write_json(folder / MANIFEST, {"format": STORE_FORMAT, "slice_size": slice_size, "subjects": entries})
    return folder


def open_slice_store(folder: Path) -> PairedSliceDataset:
    """The training dataset of a store written by :func:`write_slice_store`, its slices read from disk on demand."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    if manifest.get("format") != STORE_FORMAT:
        raise ValueError(f"{folder}: slice store format {manifest.get('format')}, this version reads {STORE_FORMAT}")
    return PairedSliceDataset.from_slices(
        [
            SubjectSlices(
                entry["subject"],
                tuple(entry["planes"]),
                tuple(entry["indices"]),
                StoredPairs(Path(folder) / entry["file"]),
            )
            for entry in manifest["subjects"]
            if entry["indices"]
        ]
    )


class StoredPairs:
    """One subject's slice pairs in a ``.npy`` file, read a row at a time: only the rows a batch asks for enter the
    process's memory (the operating system's page cache holds the file once for every rank)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as stream:
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[
                np.lib.format.read_magic(stream)
            ]
            shape, fortran_order, self.dtype = read_header(stream)
            self.offset = stream.tell()
        if fortran_order:
            raise ValueError(f"{path}: not a slice store file (Fortran order)")
        self.rows, self.row_shape = shape[0], tuple(shape[1:])
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row: int) -> np.ndarray:
        """Row ``row``: the (PET, MRI) pair ``[2, size, size]``."""
        if not 0 <= row < self.rows:
            raise IndexError(f"{self.path}: row {row} of {self.rows}")
        with open(self.path, "rb") as stream:
            data = os.pread(stream.fileno(), self.row_bytes, self.offset + row * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(self.row_shape)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as stream:
        np.save(stream, array)
