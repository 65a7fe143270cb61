"""The regional table of one image: AAL3 regional SUVR as a TSV beside its synthetic PET, with a sidecar.

Not a BIDS file type yet (listed in ``.bidsignore``); its columns follow Clinica's atlas statistics (``index``,
``label_name``) so tools that read those read this.
"""

from __future__ import annotations

from pathlib import Path

from bids_jdam import atomic
from bids_jdam.bids.derivatives import TEMPLATE_SPACE, ParticipantStaging, derivative_path
from bids_jdam.bids.query import AnatInput
from bids_jdam.evaluate.atlas_suvr import ATLAS, META_ROI_NAME, META_ROI_REGIONS, RegionRow
from bids_jdam.synthesis.provenance import SynthesisProvenance


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
