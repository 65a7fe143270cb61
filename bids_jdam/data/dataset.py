"""Training slices: paired (PET, MRI) 2D slices of model-grid volumes, and subject-level splits.

Volumes arrive in model units (T1w normalized, PET in SUVR with background 0). Splits are made per subject, never
per slice, so no held-out subject leaks into training through a neighbouring slice; they are balanced by diagnosis
and written to ``splits.json`` next to the model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from bids_jdam.data.slices import cut_slice, pad_slice, select_slices
from bids_jdam.io import atomic


@dataclass(frozen=True)
class SubjectVolumes:
    """One subject's co-registered volumes on the model grid, in model units."""

    subject: str
    diagnosis: str
    t1: np.ndarray  # normalized T1w
    pet: np.ndarray  # SUVR, background 0
    brain_mask: np.ndarray  # bool
    affine: np.ndarray


class SliceSample(NamedTuple):
    """One training example; ``pet`` and ``mri`` are ``[1, size, size]`` float32 tensors."""

    pet: torch.Tensor
    mri: torch.Tensor
    plane: str
    subject: str
    index: int


@dataclass(frozen=True)
class SubjectSlices:
    """One subject's training slices: ``pairs[i]`` is (PET, MRI) of slice ``indices[i]`` along ``planes[i]``."""

    subject: str
    planes: tuple[str, ...]
    indices: tuple[int, ...]
    pairs: Sequence[np.ndarray]  # n rows of [2, size, size] float32: an array, or a slice store's file


def subject_slices(
    volume: SubjectVolumes,
    planes: tuple[str, ...],
    slice_size: int,
    min_brain_voxels: int = 1,
    range_mm: dict[str, tuple[float, float]] | None = None,
) -> SubjectSlices:
    """Every brain-containing slice of ``volume`` in ``planes``, padded to ``slice_size``."""
    keys = [
        (plane, int(index))
        for plane in planes
        for index in select_slices(volume.brain_mask, volume.affine, plane, min_brain_voxels, range_mm)
    ]
    pairs = np.zeros((len(keys), 2, slice_size, slice_size), np.float32)
    for row, (plane, index) in enumerate(keys):
        for channel, image in enumerate((volume.pet, volume.t1)):
            pairs[row, channel] = pad_slice(cut_slice(image, plane, index).astype(np.float32), plane, slice_size)
    return SubjectSlices(volume.subject, tuple(p for p, _ in keys), tuple(i for _, i in keys), pairs)


class PairedSliceDataset(Dataset):
    """Every brain-containing slice of every subject in the configured planes, padded to ``slice_size``.

    Built from volumes in memory, or (:func:`bids_jdam.data.slice_store.open_slice_store`) from slices read from
    disk on demand, which is what training at cohort scale uses.
    """

    def __init__(
        self,
        volumes: Iterable[SubjectVolumes],
        planes: tuple[str, ...],
        slice_size: int,
        min_brain_voxels: int = 1,
        range_mm: dict[str, tuple[float, float]] | None = None,
    ):
        self._index([subject_slices(v, planes, slice_size, min_brain_voxels, range_mm) for v in volumes])

    @classmethod
    def from_slices(cls, subjects: list[SubjectSlices]) -> PairedSliceDataset:
        dataset = cls.__new__(cls)
        dataset._index(subjects)
        return dataset

    def _index(self, subjects: list[SubjectSlices]) -> None:
        self.subjects = subjects
        self.items = [(s, row) for s, subject in enumerate(subjects) for row in range(len(subject.indices))]
        if not self.items:
            raise ValueError("no slice with brain in the given volumes and planes")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: int) -> SliceSample:
        s, row = self.items[item]
        subject = self.subjects[s]
        pair = torch.from_numpy(np.array(subject.pairs[row]))
        return SliceSample(pair[0:1], pair[1:2], subject.planes[row], subject.subject, subject.indices[row])

    def stacked(self, items: list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(PET, MRI) batches ``[len(items), 1, size, size]`` of the given dataset positions."""
        pairs = np.stack([self.subjects[s].pairs[row] for s, row in (self.items[int(i)] for i in items)])
        return torch.from_numpy(pairs[:, 0:1].copy()), torch.from_numpy(pairs[:, 1:2].copy())


def split_subjects(diagnoses: dict[str, str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Seeded subject-level train/validation split, balanced by diagnosis.

    Each diagnosis group gives ``round(val_fraction * n)`` subjects to validation; at least one subject is held out
    overall when ``val_fraction > 0`` and there are two or more subjects.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for subject in sorted(diagnoses):
        groups[diagnoses[subject]].append(subject)
    validation: list[str] = []
    leftovers: list[str] = []
    for diagnosis in sorted(groups):
        members = list(rng.permutation(groups[diagnosis]))
        n_val = int(round(val_fraction * len(members)))
        validation += members[:n_val]
        leftovers += members[n_val:]
    if val_fraction > 0 and not validation and len(leftovers) >= 2:
        validation.append(leftovers.pop(int(rng.integers(len(leftovers)))))
    return {"train": sorted(leftovers), "validation": sorted(validation)}


def write_splits(path: Path, splits: dict[str, list[str]], diagnoses: dict[str, str], seed: int) -> None:
    """Write the split with each subject's diagnosis and the seed to ``path`` (atomically)."""
    path = Path(path)
    payload = {
        "seed": seed,
        **{name: {subject: diagnoses[subject] for subject in subjects} for name, subjects in splits.items()},
    }
    atomic.write_json(path, payload)


def read_splits(path: Path) -> dict[str, list[str]]:
    """The subject lists of a ``splits.json`` written by :func:`write_splits`."""
    payload = json.loads(Path(path).read_text())
    return {name: sorted(payload[name]) for name in ("train", "validation")}
