"""Training subjects as model-grid volumes: the phantom's template-space truth, or preprocessed BIDS pairs.

A loader is ``(bids_dir, cfg, subjects) -> Iterator[SubjectVolumes]``, so that every source of training data is an
interchangeable input of the training workflow (and of the benchmarks, which render acquisitions their own way);
it yields one subject at a time, so that the training slices go into a slice store without the cohort in memory.
It lives with the workflows because it sequences the BIDS query and the preprocessing pipeline; ``data/`` cannot
import ``preprocess/``, which imports ``data/``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.config import JDAMConfig
from bids_jdam.data.dataset import PairedSliceDataset, SubjectVolumes
from bids_jdam.data.slice_store import open_slice_store, write_slice_store
from bids_jdam.data.template import grid_shape
from bids_jdam.errors import InputError
from bids_jdam.preprocess.intensity import scale_t1w
from bids_jdam.training.distributed import Ranks

SubjectLoader = Callable[[Path, JDAMConfig, list[str]], Iterator[SubjectVolumes]]


def volumes_from_images(
    subject: str,
    diagnosis: str,
    t1w: nib.Nifti1Image,
    pet_suvr: nib.Nifti1Image,
    brain_mask: nib.Nifti1Image,
    cfg: JDAMConfig,
) -> SubjectVolumes:
    """Model units from model-grid images: the T1w percentile-scaled in the mask, the PET SUVR zero outside it."""
    mask = np.asarray(brain_mask.dataobj) > 0
    t1, _ = scale_t1w(t1w.get_fdata(dtype=np.float32), mask, cfg.intensity.t1_percentile)
    pet = np.where(mask, pet_suvr.get_fdata(dtype=np.float32), 0).astype(np.float32)
    return SubjectVolumes(subject, diagnosis, t1, pet, mask, t1w.affine)


def load_phantom_truth_subjects(bids_dir: Path, cfg: JDAMConfig, subjects: list[str]) -> Iterator[SubjectVolumes]:
    """The phantom's template-space truth (T1w, PET SUVR, brain mask) of ``subjects``, in model units."""
    from bids_jdam.data.phantom import phantom_truth  # only this data path needs the phantom module

    diagnoses = read_diagnoses(bids_dir)
    expected = grid_shape(cfg.grid.spacing_mm)
    for subject in subjects:
        truth = phantom_truth(bids_dir, subject)
        images = {name: nib.load(getattr(truth, name)) for name in ("t1w", "pet_suvr", "brain_mask")}
        for name, image in images.items():
            if image.shape != expected:
                raise InputError(
                    f"{getattr(truth, name)}: shape {image.shape} is not the {cfg.grid.spacing_mm:g} mm model grid "
                    f"{expected}; set grid.spacing_mm to the phantom's grid"
                )
        yield volumes_from_images(
            subject, diagnoses[subject], images["t1w"], images["pet_suvr"], images["brain_mask"], cfg
        )


def preprocessed_pairs_loader(work_dir: Path, nthreads: int = 2, pet_rec: str | None = None) -> SubjectLoader:
    """A loader that finds each subject's T1w/FDG-PET pairs with pybids and runs the preprocessing pipeline.

    Every session with both images is one training pair; the steps are cached per image in ``work_dir``.
    """
    from bids_jdam.bids.query import find_training_pairs, load_layout, participants_with_broken_sidecars
    from bids_jdam.preprocess.pipeline import preprocess_pair

    def load(bids_dir: Path, cfg: JDAMConfig, subjects: list[str]) -> Iterator[SubjectVolumes]:
        layout = load_layout(Path(bids_dir), validate=False)
        broken = [line for subject, line in participants_with_broken_sidecars(bids_dir).items() if subject in subjects]
        if broken:  # training on what the sidecars' metadata would have left out is not what was asked for
            raise InputError(broken[0])
        diagnoses = read_diagnoses(bids_dir)
        for pair in find_training_pairs(layout, participants=subjects, rec=pet_rec):
            stem = f"sub-{pair.subject}" + (f"_ses-{pair.session}" if pair.session else "")
            prep = preprocess_pair(
                pair.t1w.path,
                pair.pet,
                Path(work_dir) / stem,
                cfg,
                subject_label=stem.removeprefix("sub-"),
                nthreads=nthreads,
            )
            mask_img = nib.load(prep.brain_mask_model)
            mask = np.asarray(mask_img.dataobj) > 0
            t1 = nib.load(prep.t1w_model).get_fdata(dtype=np.float32) * mask
            pet = np.where(mask, nib.load(prep.pet_suvr_model).get_fdata(dtype=np.float32), 0).astype(np.float32)
            yield SubjectVolumes(pair.subject, diagnoses.get(pair.subject, "n/a"), t1, pet, mask, mask_img.affine)

    return load


@contextlib.contextmanager
def training_slices(
    volumes: Callable[[], Iterator[SubjectVolumes]], folder: Path, cfg: JDAMConfig, ranks: Ranks
) -> Iterator[PairedSliceDataset]:
    """The training dataset, read by every rank from a slice store that rank 0 cuts from ``volumes()``
    into ``folder`` (:mod:`bids_jdam.data.slice_store`); the store is removed on the way out, and so is the folder
    above it where this run made it and left it empty (no empty ``work/`` in a model directory to upload)."""
    folder = Path(folder)
    made_parent = not folder.parent.exists()
    with ranks.main_first():  # rank 0 writes the store (filling the preprocessing cache), the others then open it
        if ranks.is_main:
            shutil.rmtree(folder, ignore_errors=True)  # an interrupted run's store
            write_slice_store(volumes(), folder, cfg.train.planes, cfg.grid.slice_size, cfg.grid.slice_range_mm)
    try:
        yield open_slice_store(folder)
    finally:
        if ranks.is_main:
            shutil.rmtree(folder, ignore_errors=True)
            if made_parent and folder.parent.is_dir() and not any(folder.parent.iterdir()):
                folder.parent.rmdir()
