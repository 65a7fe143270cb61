"""Training slices on disk: each subject's padded (PET, MRI) slice pairs, cut once into a memory-mapped NumPy file.

At cohort scale (ADNI: about 450 subjects) the volumes do not fit in memory, and every torchrun rank would hold its
own copy of them. The training workflow streams the subjects through :func:`write_slice_store` one at a time (rank 0
alone), and every rank opens the store with :func:`open_slice_store`: the operating system pages in the slices a
batch touches and shares those pages between the ranks, so memory stays flat as the cohort grows. A batch is a
gather of memory-mapped rows, cheap enough that no loader worker processes are needed. The ``.npy`` format is
NumPy's own, memory-mappable and readable without bids-jdam; ``slices.json`` lists each file's subject, planes and
slice indices.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bids_jdam import atomic
from bids_jdam.data.dataset import PairedSliceDataset, SubjectSlices, SubjectVolumes, subject_slices

MANIFEST = "slices.json"
STORE_FORMAT = 1


def write_slice_store(volumes: Iterable[SubjectVolumes], folder: Path, planes: tuple[str, ...], slice_size: int,
                      range_mm: dict[str, tuple[float, float]] | None = None) -> Path:
    """Cut each subject of ``volumes`` (consumed one at a time) into ``folder``; the manifest is written last, so a
    store without one is incomplete."""
    folder = atomic.make_dirs(Path(folder))
    entries = []
    for number, volume in enumerate(volumes):
        slices = subject_slices(volume, planes, slice_size, range_mm=range_mm)
        name = f"subject-{number:05d}.npy"
        atomic.write_with(folder / name, functools.partial(_save, array=slices.pairs))
        entries.append({"file": name, "subject": slices.subject, "planes": list(slices.planes),
                        "indices": list(slices.indices)})
    atomic.write_json(folder / MANIFEST, {"format": STORE_FORMAT, "slice_size": slice_size, "subjects": entries})
    return folder


def open_slice_store(folder: Path) -> PairedSliceDataset:
    """The training dataset of a store written by :func:`write_slice_store`, its slices memory-mapped read-only."""
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    if manifest.get("format") != STORE_FORMAT:
        raise ValueError(f"{folder}: slice store format {manifest.get('format')}, this version reads {STORE_FORMAT}")
    return PairedSliceDataset.from_slices([
        SubjectSlices(entry["subject"], tuple(entry["planes"]), tuple(entry["indices"]),
                      np.load(Path(folder) / entry["file"], mmap_mode="r"))
        for entry in manifest["subjects"] if entry["indices"]
    ])


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as stream:
        np.save(stream, array)
