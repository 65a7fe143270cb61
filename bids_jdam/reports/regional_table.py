"""The regional table of one image: AAL3 regional SUVR as a TSV beside its synthetic PET, with a sidecar.

Not a BIDS file type yet (listed in ``.bidsignore``); its columns follow Clinica's atlas statistics (``index``,
``label_name``) so tools that read those read this.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from bids_jdam import __version__
from bids_jdam.bids.naming import TEMPLATE_SPACE, derivative_path
from bids_jdam.bids.publishing import ParticipantStaging
from bids_jdam.bids.query import AnatInput
from bids_jdam.data.healthy_reference import HealthyReference, RegionNorm
from bids_jdam.evaluate.ad_pattern import PatternScore
from bids_jdam.evaluate.atlas_suvr import ATLAS, META_ROI_NAME, META_ROI_REGIONS, RegionRow
from bids_jdam.evaluate.regional_interval import LEVEL
from bids_jdam.io import atomic
from bids_jdam.methods.model_card import RegionalInterval
from bids_jdam.synthesis.provenance import SynthesisProvenance
from bids_jdam.synthesis.sampling_plan import SamplingPlan


def write_regional_table(
    anat: AnatInput,
    rows: list[RegionRow],
    provenance: SynthesisProvenance,
    staging: ParticipantStaging,
    plan: SamplingPlan,
    reference: HealthyReference | None = None,
    ad_pattern: PatternScore | None = None,
) -> Path:
    """``..._space-<template>_seg-AAL3_desc-jdam_pet.tsv`` (one row per atlas region, Clinica's ``index`` and
    ``label_name``, the bounds of the calibrated regional interval where the ``plan`` applies one, else n/a; the
    healthy reference's norm and the z-scores where the model has a ``reference``) with a sidecar describing its
    columns and the image's AD-pattern score; returns the staged TSV."""
    mean_rel = derivative_path(
        anat.entities, space=TEMPLATE_SPACE, desc="jdam", suffix="pet", extension=".tsv", trc="FDG"
    )
    rel = mean_rel.with_name(mean_rel.name.replace("_desc-jdam_", f"_seg-{ATLAS}_desc-jdam_"))
    interval = plan.regional_interval
    half = interval.half_width_suvr if interval is not None else None
    lines = ["\t".join(COLUMNS)]
    for row in rows:
        norm = reference.region(row.index) if reference is not None else None
        lines.append("\t".join([str(row.index), row.name, str(row.voxels)] + _values(row, half, norm)))
    path = atomic.write_text(staging.path(rel), "\n".join(lines) + "\n")
    sidecar = _regional_sidecar(anat, provenance) | _interval_sidecar(interval, plan.interval_reason)
    sidecar |= _reference_sidecar(reference, ad_pattern)
    atomic.write_json(staging.path(rel.with_suffix(".json")), sidecar)
    return path


def _values(row: RegionRow, half: float | None, norm: RegionNorm | None) -> list[str]:
    """The row's numbers after its index, name and voxel count, in the order of ``COLUMNS``."""
    bounds = (None, None) if half is None else (row.synthetic_suvr - half, row.synthetic_suvr + half)
    values = [row.synthetic_suvr, *bounds, row.synthetic_sd, row.real_suvr]
    if norm is None:
        values += [None] * 6
    else:
        z_bounds = [None if bound is None else norm.zscore(bound) for bound in bounds]
        real_z = None if row.real_suvr is None else norm.zscore(row.real_suvr)
        values += [norm.mean, norm.sd, norm.zscore(row.synthetic_suvr), *z_bounds, real_z]
    return ["n/a" if v is None else f"{v:.5f}" for v in values]


def _bound_columns(prefix: str = "") -> tuple[str, str]:
    percent = round(100 * LEVEL)
    return f"{prefix}ci{percent}_lower", f"{prefix}ci{percent}_upper"


COLUMNS = (
    "index",
    "label_name",
    "voxels",
    "mean_synthetic_suvr",
    *_bound_columns(),
    "mean_synthetic_sd",
    "mean_real_suvr",
    "healthy_mean_suvr",
    "healthy_sd_suvr",
    "zscore",
    *_bound_columns("zscore_"),
    "real_zscore",
)


def _reference_sidecar(reference: HealthyReference | None, ad_pattern: PatternScore | None) -> dict:
    """The healthy-reference columns, and the AD-pattern score (the meta-ROI's z with its own interval)."""
    absent = "" if reference is not None else " (n/a: the model records no healthy-control reference)"
    group = (
        f"the model's {len(reference.subjects)} CN training subjects"
        if reference is not None
        else "the model's CN training subjects"
    )
    lower, upper = _bound_columns("zscore_")
    fields = {
        "healthy_mean_suvr": {"Description": f"mean over {group} of their regional SUVR{absent}", "Units": "SUVR"},
        "healthy_sd_suvr": {"Description": f"SD over {group} of their regional SUVR{absent}", "Units": "SUVR"},
        "zscore": {"Description": f"(mean_synthetic_suvr - healthy_mean_suvr) / healthy_sd_suvr{absent}"},
        lower: {"Description": f"the regional interval's lower bound as a z-score{absent}"},
        upper: {"Description": f"the regional interval's upper bound as a z-score{absent}"},
        "real_zscore": {"Description": f"the real PET's z-score (n/a without one){absent}"},
    }
    if ad_pattern is not None:
        fields["ADPatternScore"] = {
            "Description": f"z of the {META_ROI_NAME} SUVR against the healthy reference (negative: AD-like "
            "hypometabolism); its interval is calibrated on held-out subjects' scores, not on regions "
            "(bids_jdam.evaluate.ad_pattern), and may differ from the meta-ROI row's regional bounds",
            **asdict(ad_pattern),
            "Level": LEVEL,
        }
    return fields


def _interval_sidecar(interval: RegionalInterval | None, no_interval_because: str) -> dict:
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
