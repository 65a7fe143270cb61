"""Every derivative file of a participant's image, written in one place (as sMRIPrep's outputs workflow does).

For each image: the synthetic PET and its standard-deviation maps in template and native space (the caller
resamples; this module names and writes), each with its sidecar (from the image's
:class:`~bids_jdam.synthesis.provenance.SynthesisProvenance`), the brain masks the synthesis was restricted to, and
the transforms between native and template space, all into the participant's staging folder. The dataset-level
files come first (:func:`start_derivative_dataset`); the metrics JSON and the report are written with the report
(:mod:`bids_jdam.reports.participant`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam.bids.naming import NATIVE_SPACE, TEMPLATE_SPACE, derivative_path, transform_path
from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.bids.query import AnatInput
from bids_jdam.bids.sidecars import mask_sidecar, pet_sidecar, write_bidsignore, write_dataset_description
from bids_jdam.data.template import TemplateImages
from bids_jdam.io import atomic
from bids_jdam.preprocess.pipeline import PreprocessedT1w
from bids_jdam.synthesis.provenance import SynthesisProvenance

# No trailing slash: the validator matches folders without it; nor a star inside the name after another star, which
# the validator does not match (hence the regional tables by their full ending).
BIDSIGNORE = ["*_xfm.*", "*.html", "sub-*/figures", "group_*.tsv", ".work", "*_seg-AAL3_desc-jdam_pet.*"]
# (desc- entity, sidecar statistic, SynthesisResult field) of each synthetic PET map
PET_MAPS = (
    ("jdam", "mean", "mean"),
    ("jdamstd", "std", "std"),
    ("jdamviewstd", "viewstd", "view_std"),
    ("jdampredsd", "predictivesd", "predictive_sd"),
    ("zscore", "zscore", "zscore"),
)


def start_derivative_dataset(output_dir: Path, *, source_dir: Path, version: str) -> None:
    """``dataset_description.json`` and ``.bidsignore`` of the derivative dataset, before any participant."""
    write_dataset_description(output_dir, source_dir=source_dir, version=version)
    write_bidsignore(output_dir, BIDSIGNORE)


def write_image_derivatives(
    anat: AnatInput,
    prep: PreprocessedT1w,
    maps: Mapping[str, np.ndarray],
    native: Mapping[str, nib.Nifti1Image],
    template: TemplateImages,
    provenance: SynthesisProvenance,
    staging: ParticipantStaging,
) -> dict[str, Path]:
    """Synthetic PET (and its SD and z-score maps), brain masks and transforms of one image, with their sidecars.

    ``maps`` holds the template-space maps by :class:`~bids_jdam.synthesis.volume.SynthesisResult` field name (and
    ``zscore``), ``native`` each of them on the subject's T1w grid. Returns the staged maps by ``template_pet``,
    ``template_std``, ..., and ``native_pet``, ``native_std``, ....
    """
    written = _write_pet_maps(anat, maps, native, template, provenance, staging)
    _write_brain_masks(anat, prep, staging)
    _copy_transforms(anat, prep, staging)
    return written


def _write_pet_maps(
    anat: AnatInput,
    maps: Mapping[str, np.ndarray],
    native: Mapping[str, nib.Nifti1Image],
    template: TemplateImages,
    provenance: SynthesisProvenance,
    staging: ParticipantStaging,
) -> dict[str, Path]:
    written: dict[str, Path] = {}
    for desc, statistic, field in PET_MAPS:
        if field not in maps:
            continue
        data = maps[field]
        template_rel = derivative_path(
            anat.entities, space=TEMPLATE_SPACE, desc=desc, suffix="pet", extension=".nii.gz", trc="FDG"
        )
        template_path = staging.path(template_rel)
        atomic.save_nifti(template.image(data), template_path)
        atomic.write_json(
            staging.path(_sidecar(template_rel)),
            pet_sidecar(anat, provenance, space=TEMPLATE_SPACE, statistic=statistic),
        )
        native_rel = derivative_path(
            anat.entities, space=NATIVE_SPACE, desc=desc, suffix="pet", extension=".nii.gz", trc="FDG"
        )
        atomic.save_nifti(native[field], staging.path(native_rel))
        atomic.write_json(
            staging.path(_sidecar(native_rel)), pet_sidecar(anat, provenance, space=NATIVE_SPACE, statistic=statistic)
        )
        key = "pet" if statistic == "mean" else statistic
        written[f"template_{key}"], written[f"native_{key}"] = template_path, staging.path(native_rel)
    return written


def _write_brain_masks(anat: AnatInput, prep: PreprocessedT1w, staging: ParticipantStaging) -> None:
    for space, source in ((TEMPLATE_SPACE, prep.brain_mask_model), (NATIVE_SPACE, prep.brain_mask_native)):
        rel = derivative_path(anat.entities, space=space, desc="brain", suffix="mask", extension=".nii.gz")
        img = nib.load(str(source))
        atomic.save_nifti(
            nib.Nifti1Image(np.asarray(img.dataobj).astype(np.uint8), img.affine, img.header), staging.path(rel)
        )
        atomic.write_json(staging.path(_sidecar(rel)), mask_sidecar(anat, space=space))


def _copy_transforms(anat: AnatInput, prep: PreprocessedT1w, staging: ParticipantStaging) -> None:
    transforms = prep.transforms
    for from_space, to_space, source in (
        (NATIVE_SPACE, TEMPLATE_SPACE, transforms.affine),
        (NATIVE_SPACE, TEMPLATE_SPACE, transforms.warp),
        (TEMPLATE_SPACE, NATIVE_SPACE, transforms.inverse_warp),
    ):
        extension = "".join(Path(source).suffixes)
        rel = transform_path(anat.entities, from_space=from_space, to_space=to_space, extension=extension)
        atomic.copy_file(source, staging.path(rel))


def _sidecar(nifti_rel: Path) -> Path:
    return Path(str(nifti_rel).removesuffix(".nii.gz") + ".json")
