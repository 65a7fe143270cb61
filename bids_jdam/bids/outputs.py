"""Every derivative file of a participant's image, written in one place (as sMRIPrep's outputs workflow does).

For each image: the synthetic PET and its standard-deviation maps in template and native space, each with its
sidecar (from the image's :class:`~bids_jdam.synthesis.provenance.SynthesisProvenance`), the brain masks the
synthesis was restricted to, and the transforms between native and template space, all into the participant's
staging folder. The dataset-level files come first (:func:`start_derivative_dataset`); the metrics JSON and the
report are written with the report (:mod:`bids_jdam.reports.participant`).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bids_jdam import atomic
from bids_jdam.bids.derivatives import (
    NATIVE_SPACE,
    TEMPLATE_SPACE,
    ParticipantStaging,
    derivative_path,
    mask_sidecar,
    pet_sidecar,
    transform_path,
    write_bidsignore,
    write_dataset_description,
)
from bids_jdam.bids.query import AnatInput
from bids_jdam.data.template import TemplateImages
from bids_jdam.evaluate.atlas_suvr import ATLAS, META_ROI_NAME, META_ROI_REGIONS, RegionRow
from bids_jdam.preprocess.pipeline import PreprocessedT1w, to_native
from bids_jdam.synthesis.provenance import SynthesisProvenance
from bids_jdam.synthesis.volume import SynthesisResult

# No trailing slash: the validator matches folders without it.
BIDSIGNORE = ["*_xfm.*", "*.html", "sub-*/figures", "group_metrics.tsv", ".work", "*_seg-*_pet.tsv",
              "*_seg-*_pet.json"]
# (desc- entity, sidecar statistic, SynthesisResult field) of each synthetic PET map
PET_MAPS = (("jdam", "mean", "mean"), ("jdamstd", "std", "std"), ("jdamviewstd", "viewstd", "view_std"))


def start_derivative_dataset(output_dir: Path, *, source_dir: Path, version: str) -> None:
    """``dataset_description.json`` and ``.bidsignore`` of the derivative dataset, before any participant."""
    write_dataset_description(output_dir, source_dir=source_dir, version=version)
    write_bidsignore(output_dir, BIDSIGNORE)


def write_image_derivatives(
    anat: AnatInput, prep: PreprocessedT1w, result: SynthesisResult, template: TemplateImages,
    provenance: SynthesisProvenance, staging: ParticipantStaging,
) -> dict[str, Path]:
    """Synthetic PET (and SD maps), brain masks and transforms of one image, with their sidecars.

    Returns the staged template-space maps by ``template_pet``, ``template_std`` and ``template_viewstd``.
    """
    written = _write_pet_maps(anat, prep, result, template, provenance, staging)
    _write_brain_masks(anat, prep, staging)
    _copy_transforms(anat, prep, staging)
    return written


def _write_pet_maps(
    anat: AnatInput, prep: PreprocessedT1w, result: SynthesisResult, template: TemplateImages,
    provenance: SynthesisProvenance, staging: ParticipantStaging,
) -> dict[str, Path]:
    written: dict[str, Path] = {}
    for desc, statistic, field in PET_MAPS:
        data = getattr(result, field)
        if data is None:
            continue
        template_rel = derivative_path(anat.entities, space=TEMPLATE_SPACE, desc=desc, suffix="pet",
                                       extension=".nii.gz", trc="FDG")
        template_path = staging.path(template_rel)
        atomic.save_nifti(template.image(data), template_path)
        atomic.write_json(staging.path(_sidecar(template_rel)),
                          pet_sidecar(anat, provenance, space=TEMPLATE_SPACE, statistic=statistic))
        native_rel = derivative_path(anat.entities, space=NATIVE_SPACE, desc=desc, suffix="pet",
                                     extension=".nii.gz", trc="FDG")
        to_native(template_path, prep, staging.path(native_rel))
        atomic.write_json(staging.path(_sidecar(native_rel)),
                          pet_sidecar(anat, provenance, space=NATIVE_SPACE, statistic=statistic))
        written[f"template_{'pet' if statistic == 'mean' else statistic}"] = template_path
    return written


def _write_brain_masks(anat: AnatInput, prep: PreprocessedT1w, staging: ParticipantStaging) -> None:
    for space, source in ((TEMPLATE_SPACE, prep.brain_mask_model), (NATIVE_SPACE, prep.brain_mask_native)):
        rel = derivative_path(anat.entities, space=space, desc="brain", suffix="mask", extension=".nii.gz")
        img = nib.load(str(source))
        atomic.save_nifti(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.uint8), img.affine, img.header),
                          staging.path(rel))
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


def write_regional_table(anat: AnatInput, rows: list[RegionRow], provenance: SynthesisProvenance,
                         staging: ParticipantStaging) -> Path:
    """``..._space-<template>_seg-AAL3_desc-jdam_pet.tsv`` (one row per atlas region, Clinica's ``index`` and
    ``label_name``) with a sidecar describing its columns; returns the staged TSV."""
    mean_rel = derivative_path(anat.entities, space=TEMPLATE_SPACE, desc="jdam", suffix="pet", extension=".tsv",
                               trc="FDG")
    rel = mean_rel.with_name(mean_rel.name.replace("_desc-jdam_", f"_seg-{ATLAS}_desc-jdam_"))
    lines = ["index\tlabel_name\tvoxels\tmean_synthetic_suvr\tmean_synthetic_sd\tmean_real_suvr"]
    for row in rows:
        values = (row.synthetic_suvr, row.synthetic_sd, row.real_suvr)
        lines.append("\t".join([str(row.index), row.name, str(row.voxels)]
                               + ["n/a" if v is None else f"{v:.5f}" for v in values]))
    path = atomic.write_text(staging.path(rel), "\n".join(lines) + "\n")
    atomic.write_json(staging.path(rel.with_suffix(".json")), _regional_sidecar(anat, provenance))
    return path


def _regional_sidecar(anat: AnatInput, provenance: SynthesisProvenance) -> dict:
    suvr = f"SUVR (reference region: {provenance.reference_region})"
    phantoms = provenance.model.trained_on_phantoms
    warning = " The model was trained on phantoms, not for real patients." if phantoms else ""
    return {
        "Description": (f"Regional means on the {ATLAS} atlas (Rolls et al., NeuroImage 206:116189, 2020) in "
                        f"{TEMPLATE_SPACE} space, inside the image's brain mask, of the synthetic FDG-PET made from "
                        f"{anat.relative_path} by the bids-jdam model '{provenance.model.name}'. Synthetic values are "
                        f"not measurements.{warning}"),
        "Sources": [anat.bids_uri],
        "Atlas": ATLAS,
        "index": {"Description": f"{ATLAS} label index; {META_ROI_NAME} has an index outside the atlas"},
        "label_name": {"Description": f"{ATLAS} region name as the atlas gives it; {META_ROI_NAME}: the AD meta-ROI "
                                      "of Landau et al. (Neurobiol Aging 32:1207, 2011), the union of "
                                      + ", ".join(META_ROI_REGIONS)},
        "voxels": {"Description": "voxels of the region inside the brain mask on the model grid"},
        "mean_synthetic_suvr": {"Description": f"mean synthetic PET, {suvr}", "Units": "SUVR"},
        "mean_synthetic_sd": {"Description": "mean of the sampling standard-deviation map (n/a with one sample); "
                                             "a voxel SD averaged over a region is not an interval for the regional "
                                             "mean", "Units": "SUVR"},
        "mean_real_suvr": {"Description": f"mean of the session's real FDG-PET as the app preprocesses it, {suvr} "
                                          "(n/a without one)", "Units": "SUVR"},
    }
