"""Data of the quality benchmark: phantom subjects' T1w on the model grid as the app makes it, or ideally placed.

``load_participant_subjects`` (the default input): each subject's raw T1w goes through the app's own cached
preprocessing (N4, HD-BET, registration to the template, intensity scaling: ``preprocess_t1w``, what
``bids-jdam participant`` feeds the model), so training, calibration and scoring see what users' runs see. The
PET target stays the noise-free template-space truth in the truth's brain mask: the benchmark scores the T1w the
app makes against the PET the subject really has.

``load_acquired_subjects`` (``--input template``) skips the preprocessing:

The phantom's template-space truth T1w is the same noise-free image at every field strength (the subject draw does
not depend on it), so training and testing on that truth could not tell 3T-like from 7T-like input. Instead each
subject's RAW T1w (the field strength's resolution, bias field, Rician noise, MP2RAGE UNIT1 contrast at 7T) is
brought onto the model grid with the phantom's own true transform (an ideal registration), masked with the true
brain mask (an ideal skull-strip, no N4) and scaled by the configured T1w percentile. The PET target is the
phantom's noise-free template-space SUVR truth, exactly as ``bids-jdam-train --phantom-truth`` uses it. No ANTs,
HD-BET or N4 runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine
from scipy import ndimage

from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.config import JDAMConfig
from bids_jdam.data.dataset import SubjectVolumes
from bids_jdam.data.phantom import phantom_truth
from bids_jdam.data.phantom.writer import Layout, raw_names
from bids_jdam.data.template import grid_affine, grid_shape
from bids_jdam.preprocess.pipeline import preprocess_t1w
from bids_jdam.workflows.training_data import volumes_from_images

# Fixed-point iterations that invert the phantom's smooth displacement (2-4 mm): the residual falls ~10x each.
INVERSION_ITERATIONS = 8


def template_points_in_scanner(transforms: dict, displacement: nib.Nifti1Image, points_mm: np.ndarray) -> np.ndarray:
    """Scanner points p (N, 3) that the phantom maps onto template points q: solves p + u(p) = A q.

    The phantom's convention is q = inv(A) (p + u(p)) with u sampled trilinearly in T1w scanner space.
    """
    target = apply_affine(np.asarray(transforms["TemplateToScannerAffine"]), points_mm)
    field = np.asarray(displacement.dataobj, dtype=np.float64)[:, :, :, 0, :]
    to_field = np.linalg.inv(displacement.affine)
    p = target.copy()
    for _ in range(INVERSION_ITERATIONS):
        ijk = apply_affine(to_field, p).T
        u = np.stack([ndimage.map_coordinates(field[..., c], ijk, order=1, mode="nearest") for c in range(3)], axis=1)
        p = target - u
    return p


def scanner_image_in_template(
    image: nib.Nifti1Image, bids_dir: Path, subject: str, spacing_mm: float, order: int = 1
) -> np.ndarray:
    """An image in the subject's T1w scanner space (any grid) resampled onto the model grid by the phantom's true
    transform: an ideal registration."""
    truth = phantom_truth(bids_dir, subject)
    shape = grid_shape(spacing_mm)
    points = apply_affine(grid_affine(spacing_mm), np.indices(shape).reshape(3, -1).T)
    scanner = template_points_in_scanner(json.loads(truth.transforms.read_text()), nib.load(truth.displacement), points)
    ijk = apply_affine(np.linalg.inv(image.affine), scanner).T
    values = ndimage.map_coordinates(image.get_fdata(dtype=np.float32), ijk, order=order, mode="constant", cval=0.0)
    return values.reshape(shape).astype(np.float32)


def acquired_t1w_in_template(bids_dir: Path, subject: str, spacing_mm: float) -> np.ndarray:
    """The subject's raw T1w resampled (trilinear) onto the model grid by the phantom's true transform."""
    raw = nib.load(Path(bids_dir) / raw_names(Layout("bids"), subject, None)["t1w"])
    return scanner_image_in_template(raw, bids_dir, subject, spacing_mm)


def load_acquired_subjects(bids_dir: Path, cfg: JDAMConfig, subjects: list[str]) -> list[SubjectVolumes]:
    """A ``SubjectLoader`` (:mod:`bids_jdam.workflows.training_data`): acquired T1w in, PET SUVR truth out."""
    diagnoses = read_diagnoses(bids_dir)
    volumes = []
    for subject in subjects:
        truth = phantom_truth(bids_dir, subject)
        mask_img = nib.load(truth.brain_mask)
        t1w = nib.Nifti1Image(acquired_t1w_in_template(bids_dir, subject, cfg.grid.spacing_mm), mask_img.affine)
        volumes.append(volumes_from_images(subject, diagnoses[subject], t1w, nib.load(truth.pet_suvr), mask_img, cfg))
    return volumes


def load_participant_subjects(
    bids_dir: Path, cfg: JDAMConfig, subjects: list[str], prep_dir: Path, threads: int
) -> list[SubjectVolumes]:
    """The app's preprocessed T1w (cached per subject in ``prep_dir``) in, the PET SUVR truth out.

    The T1w is exactly the participant workflow's model input (scaled and masked by the app's brain mask); the mask
    (loss and score region) and the PET are the truth's.
    """
    diagnoses = read_diagnoses(bids_dir)
    volumes = []
    for subject in subjects:
        truth = phantom_truth(bids_dir, subject)
        raw = Path(bids_dir) / raw_names(Layout("bids"), subject, None)["t1w"]
        prep = preprocess_t1w(raw, Path(prep_dir) / f"sub-{subject}", cfg, subject_label=subject, nthreads=threads)
        mask_img = nib.load(truth.brain_mask)
        mask = np.asarray(mask_img.dataobj) > 0
        t1 = nib.load(prep.t1w_model).get_fdata(dtype=np.float32)
        pet = np.where(mask, nib.load(truth.pet_suvr).get_fdata(dtype=np.float32), 0).astype(np.float32)
        volumes.append(SubjectVolumes(subject, diagnoses[subject], t1, pet, mask, mask_img.affine))
    return volumes


def white_matter_probability(bids_dir: Path, subject: str) -> np.ndarray:
    """The truth's white-matter probability on the model grid (for the noise index's uniform region)."""
    return nib.load(phantom_truth(bids_dir, subject).wm_probseg).get_fdata(dtype=np.float32)


def subjects_of(bids_dir: Path) -> list[str]:
    """Every participant label of a dataset, in participants.tsv order."""
    return list(read_diagnoses(bids_dir))
