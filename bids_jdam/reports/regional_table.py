"""The regional table of one image: AAL3 regional SUVR as a TSV beside its synthetic PET, with a sidecar.

Not a BIDS file type yet (listed in ``.bidsignore``); its columns follow Clinica's atlas statistics (``index``,
``label_name``) so tools that read those read this.
"""

from __future__ import annotations

from pathlib import Path

from bids_jdam import __version__
from bids_jdam.bids.naming import TEMPLATE_SPACE, derivative_path
from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.bids.query import AnatInput
from bids_jdam.evaluate.atlas_suvr import ATLAS, META_ROI_NAME, META_ROI_REGIONS, RegionRow
from bids_jdam.evaluate.regional_interval import LEVEL
from bids_jdam.io import atomic
from bids_jdam.methods.model_card import RegionalInterval
from bids_jdam.synthesis.provenance import SynthesisProvenance


def write_regional_table(
    anat: AnatInput,
    rows: list[RegionRow],
    provenance: SynthesisProvenance,
    staging: ParticipantStaging,
    interval: RegionalInterval | None,
    no_interval_because: str | None,
) -> Path:
    """``..._space-<template>_seg-AAL3_desc-jdam_pet.tsv`` (one row per atlas region, Clinica's ``index`` and
    ``label_name``, the bounds of the calibrated regional interval where ``interval`` applies, else n/a) with a
    sidecar describing its columns; returns the staged TSV."""
    mean_rel = derivative_path(
        anat.entities, space=TEMPLATE_SPACE, desc="jdam", suffix="pet", extension=".tsv", trc="FDG"
    )
    rel = mean_rel.with_name(mean_rel.name.replace("_desc-jdam_", f"_seg-{ATLAS}_desc-jdam_"))
    lower, upper = _bound_columns()
    lines = [f"index\tlabel_name\tvoxels\tmean_synthetic_suvr\t{lower}\t{upper}\tmean_synthetic_sd\tmean_real_suvr"]
    half = interval.half_width_suvr if interval is not None else None
    for row in rows:
        bounds = (None, None) if half is None else (row.synthetic_suvr - half, row.synthetic_suvr + half)
        values = (row.synthetic_suvr, *bounds, row.synthetic_sd, row.real_suvr)
        lines.append(
            "\t".join(
                [str(row.index), row.name, str(row.voxels)] + ["n/a" if v is None else f"{v:.5f}" for v in values]
            )
        )
    path = atomic.write_text(staging.path(rel), "\n".join(lines) + "\n")
    sidecar = _regional_sidecar(anat, provenance) | _interval_sidecar(interval, no_interval_because)
    atomic.write_json(staging.path(rel.with_suffix(".json")), sidecar)
    return path


def _bound_columns() -> tuple[str, str]:
    percent = round(100 * LEVEL)
    return f"ci{percent}_lower", f"ci{percent}_upper"


def _interval_sidecar(interval: RegionalInterval | None, no_interval_because: str | None) -> dict:
    lower, upper = _bound_columns()
    if interval is None:
        how = f"n/a in this table: {no_interval_because}"
    else:
        how = (
            f"split-conformal on regions (bids_jdam.evaluate.regional_interval): +-{interval.half_width_suvr:.4f} "
            f"SUVR, the conformal quantile of |real - synthetic| regional SUVR over {interval.pairs} (subject, "
            f"region) pairs of {interval.subjects} held-out subjects, for sampler {interval.sampler}, "
            f"{interval.steps} steps, K = {interval.num_samples}, {interval.planes} plane(s); it covers the real "
            "regional SUVR of a new subject's regions that often on average over regions and subjects like "
            "those it was fitted on, not in every region of every subject"
        )
    bound = "bound of the central {:.0%} interval of the region's real SUVR: " + how
    return {
        lower: {"Description": "lower " + bound.format(LEVEL), "Units": "SUVR"},
        upper: {"Description": "upper " + bound.format(LEVEL), "Units": "SUVR"},
    }


def _regional_sidecar(anat: AnatInput, provenance: SynthesisProvenance) -> dict:
    suvr = f"SUVR (reference region: {provenance.reference_region})"
    phantoms = provenance.model.trained_on_phantoms
    warning = " The model was trained on phantoms, not for real patients." if phantoms else ""
    return {
        "Description": (
            f"Regional means on the {ATLAS} atlas (Rolls et al., NeuroImage 206:116189, 2020) in "
            f"{TEMPLATE_SPACE} space, inside the image's brain mask, of the synthetic FDG-PET made from "
            f"{anat.relative_path} by the bids-jdam model '{provenance.model.name}'. Synthetic values are "
            f"not measurements.{warning}"
        ),
        "Sources": [anat.bids_uri],
        "SoftwareVersions": f"bids-jdam {__version__}",
        "Atlas": ATLAS,
        "index": {"Description": f"{ATLAS} label index; {META_ROI_NAME} has an index outside the atlas"},
        "label_name": {
            "Description": f"{ATLAS} region name as the atlas gives it; {META_ROI_NAME}: the AD meta-ROI "
            "of Landau et al. (Neurobiol Aging 32:1207, 2011), the union of " + ", ".join(META_ROI_REGIONS)
        },
        "voxels": {"Description": "voxels of the region inside the brain mask on the model grid"},
        "mean_synthetic_suvr": {"Description": f"mean synthetic PET, {suvr}", "Units": "SUVR"},
        "mean_synthetic_sd": {
            "Description": "mean of the sampling standard-deviation map (n/a with one sample); "
            "a voxel SD averaged over a region is not an interval for the regional "
            "mean",
            "Units": "SUVR",
        },
        "mean_real_suvr": {
            "Description": f"mean of the session's real FDG-PET as the app preprocesses it, {suvr} (n/a without one)",
            "Units": "SUVR",
        },
    }
