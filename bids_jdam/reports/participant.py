"""Participant report: reportlets under ``sub-X/figures/`` and one self-contained ``sub-X.html`` per subject.

One report covers every session and run of the subject (one :class:`ReportEntry` each). The metrics JSON of each
entry is written first, so the group level has its numbers even if drawing a figure fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bids_jdam.errors import InputError
from bids_jdam.evaluate.ad_pattern import PatternScore
from bids_jdam.evaluate.atlas_suvr import META_ROI_NAME
from bids_jdam.evaluate.consistency import PET_RESOLUTION_SIGMA_MM
from bids_jdam.evaluate.participant_metrics import METRICS_SUFFIX, ParticipantMetrics
from bids_jdam.io import atomic
from bids_jdam.reports import reportlets
from bids_jdam.reports.html_blocks import (
    bullet_list,
    data_table,
    details,
    embedded_image,
    key_value_table,
    page,
    render,
)
from bids_jdam.reports.reportlets import ImageLike
from bids_jdam.synthesis.provenance import ModelInfo

PHANTOM_BANNER = "Model trained on synthetic phantoms \N{EM DASH} not for real patients."
# What the calibrated SD map should give on any participant: the interval levels and a spread-skill ratio of 1.
SPREAD_SCORES = (
    ("coverage_50", "coverage of the central 50 % interval (nominal 0.50)"),
    ("coverage_90", "coverage of the central 90 % interval (nominal 0.90)"),
    ("spread_skill", "spread-skill ratio (nominal 1.0; below 1 the SD map is too small for the error)"),
    ("sd_ause_relative", "AUSE over a random ranking's (1: the SD map does not rank the error; lower is better)"),
    (
        "crps_over_constant_band",
        "CRPS over a constant-width band's with the same 90 % coverage (below 1: the map "
        "says where the error is; 1 or more: it only gives its size)",
    ),
)
Z_90 = 1.645  # the healthy band of the regional figure: mean +- 1.645 SD, the central 90 % of healthy controls
FIGURE_REGIONS = (META_ROI_NAME,) + tuple(
    f"{region}_{side}"
    for region in ("Angular", "Cingulate_Post", "Temporal_Inf", "Precuneus", "Parietal_Inf", "Temporal_Mid",
                   "Frontal_Mid_2", "Occipital_Mid", "Putamen", "Thalamus", "Cerebellum_Crus1")
    for side in "LR"
)  # fmt: skip
REGIONAL_CAPTION = (
    "Regional SUVR (AAL3, the AD meta-ROI first) against the model's healthy controls: grey, their central 90 % "
    "(mean +- 1.645 SD); orange, the synthetic PET with its calibrated 90 % interval (none where the run steps "
    "outside its calibration); blue, the real PET where the session has one."
)
ZSCORE_CAPTION = (
    "z-score of the synthetic PET against the model's healthy controls, voxel by voxel, through its lowest z "
    "(blue: below the healthy controls; |z| < 1 clear)."
)
TABLE_COLUMNS = (
    "label_name",
    "mean_synthetic_suvr",
    "ci90_lower",
    "ci90_upper",
    "healthy_mean_suvr",
    "healthy_sd_suvr",
    "zscore",
    "mean_real_suvr",
    "real_zscore",
)


@dataclass
class ReportEntry:
    """One synthesized image: the files its figures are drawn from (all on the model grid) and its metrics.

    ``stem`` holds the image's BIDS entities, e.g. ``sub-01_ses-A_run-1``. PET images are in SUVR.
    """

    stem: str
    t1w: ImageLike  # preprocessed T1w on the model grid
    brain_mask: ImageLike
    template_t1: ImageLike
    synthetic_pet: ImageLike  # mean of the K samples
    std_map: ImageLike | None  # SD across the K samples; None when K = 1
    real_pet: ImageLike | None
    metrics: ParticipantMetrics
    view_std_map: ImageLike | None = None  # SD across the sampled planes' reconstructions; None with one plane
    predictive_sd_map: ImageLike | None = None  # one sample's predictive SD (bids_jdam.synthesis.error_model)
    zscore_map: ImageLike | None = None  # z against the model's healthy reference; None without one
    regional_table: Path | None = None  # the AAL3 regional table (bids_jdam.reports.regional_table)


def figures_dir(out_dir: Path, subject: str) -> Path:
    """Where a subject's reportlets and metrics JSON live."""
    return Path(out_dir) / _subject_id(subject) / "figures"


def metrics_json_path(out_dir: Path, stem: str) -> Path:
    """The metrics JSON of the image named ``stem`` (its subject is the stem's first entity)."""
    return figures_dir(out_dir, stem.split("_")[0]) / f"{stem}{METRICS_SUFFIX}"


def write_participant_report(
    out_dir: Path, subject: str, entries: list[ReportEntry], failed: dict[str, str] | None = None
) -> Path:
    """Write metrics JSONs, reportlets and ``out_dir/sub-X.html`` for one subject; return the HTML path.

    ``failed`` (image stem -> one-line error) lists this run's images that produced no output.
    """
    subject_id = _subject_id(subject)
    if not entries:
        raise InputError(f"{subject_id}: no synthesized image to report on")
    for entry in entries:
        if entry.stem.split("_")[0] != subject_id:
            raise InputError(f"{entry.stem}: this image does not belong to {subject_id}")
        entry.metrics.to_json(metrics_json_path(out_dir, entry.stem))
    body = render(
        "participant.html.j2",
        phantom_banner=PHANTOM_BANNER if any(e.metrics.model.trained_on_phantoms for e in entries) else None,
        qc_failed=[
            (e.stem, "; ".join(e.metrics.qc_failures) or e.metrics.status) for e in entries if e.metrics.status != "ok"
        ],
        failed=[f"{stem}: {error}" for stem, error in sorted((failed or {}).items())],
        sections=[_entry_section(Path(out_dir), entry) for entry in entries],
    )
    report = Path(out_dir) / f"{subject_id}.html"
    return atomic.write_text(report, page(f"bids-jdam: {subject_id}", body))


@dataclass
class Section:
    """One image's part of the report: its (heading, HTML blocks) parts in order; a None heading has none."""

    stem: str
    parts: list[Part]


def _entry_section(out_dir: Path, entry: ReportEntry) -> Section:
    """Figures and tables of one image; figures are written to disk, then embedded."""
    metrics = entry.metrics
    figures = figures_dir(out_dir, entry.stem.split("_")[0])

    def reportlet_path(name: str, suffix: str) -> Path:
        return figures / f"{entry.stem}_desc-{name}_{suffix}.png"

    parts: list[Part] = [(None, [_summary_table(metrics)])]
    if metrics.warnings:
        parts.append(("Warnings", [bullet_list(metrics.warnings, "warnings")]))
    parts += _preprocessing_parts(entry, reportlet_path)
    parts += _synthetic_pet_parts(entry, reportlet_path)
    parts += _regional_parts(entry, reportlet_path)
    if entry.real_pet is not None:
        parts += _real_pet_parts(entry, reportlet_path)
    parts.append(("Steps run and timings", [key_value_table([(k, f"{v:.1f} s") for k, v in metrics.timings.items()])]))
    parts.append(("Software versions", [key_value_table(sorted(metrics.versions.items()))]))
    return Section(entry.stem, parts)


ReportletPath = Callable[[str, str], Path]
Part = tuple[str | None, list[str]]  # a heading (or None) and the HTML blocks under it


def _preprocessing_parts(entry: ReportEntry, reportlet_path: ReportletPath) -> list[Part]:
    mask = reportlets.brain_mask_reportlet(entry.t1w, entry.brain_mask, reportlet_path("brainmask", "T1w"))
    registration = reportlets.registration_reportlet(
        entry.t1w, entry.template_t1, entry.brain_mask, reportlet_path("registration", "T1w")
    )
    return [
        (
            "Brain extraction",
            [embedded_image(mask, "brain mask", "Preprocessed T1w (model grid) with the brain-mask contour.")],
        ),
        (
            "Registration to the template",
            [embedded_image(registration, "registration", "Edges of the registered T1w (red) over the template T1.")],
        ),
    ]


def _synthetic_pet_parts(entry: ReportEntry, reportlet_path: ReportletPath) -> list[Part]:
    """The synthetic PET's mosaics, its uncertainty maps and regional SUVR."""
    metrics = entry.metrics
    vmax = _colour_limit(entry)
    mosaics = [
        embedded_image(
            reportlets.pet_mosaic_reportlet(
                entry.synthetic_pet, entry.brain_mask, plane, vmax, reportlet_path(f"synth{plane}", "pet")
            ),
            f"synthetic PET {plane}",
            f"Synthetic PET, {plane} slices.",
        )
        for plane in reportlets.PLANES
    ]
    uncertainty = [
        embedded_image(
            reportlets.uncertainty_reportlet(image, entry.t1w, entry.brain_mask, reportlet_path(name, "pet")),
            title,
            caption,
        )
        for image, name, title, caption in _uncertainty_maps(entry)
        if image is not None
    ]
    regional = reportlets.regional_suvr_reportlet(
        metrics.regional_suvr_synthetic, metrics.regional_suvr_real, reportlet_path("regionalsuvr", "pet")
    )
    return [
        ("Synthetic PET (SUVR)", mosaics),
        *([("Uncertainty", uncertainty)] if uncertainty else []),
        ("Regional SUVR", [embedded_image(regional, "regional SUVR", "Mean SUVR per coarse region.")]),
    ]


def _regional_parts(entry: ReportEntry, reportlet_path: ReportletPath) -> list[Part]:
    """The AAL3 regional table against the healthy reference: the AD-pattern score, the key regions' SUVR with
    their intervals beside the healthy band, the z-map, and every region in a collapsed table."""
    if entry.regional_table is None:
        return []
    table = pd.read_csv(entry.regional_table, sep="\t", na_values="n/a", keep_default_na=False)
    blocks = []
    if entry.metrics.ad_pattern is not None:
        blocks.append(key_value_table(_pattern_rows(entry.metrics.ad_pattern)))
    bands = _region_bands(table)
    if bands:
        path = reportlets.regional_reference_reportlet(bands, Z_90, reportlet_path("regionalreference", "pet"))
        blocks.append(embedded_image(path, "regional SUVR against healthy controls", REGIONAL_CAPTION))
    if entry.zscore_map is not None:
        path = reportlets.zscore_reportlet(entry.zscore_map, entry.t1w, reportlet_path("zscore", "pet"))
        blocks.append(embedded_image(path, "z-score map", ZSCORE_CAPTION))
    shown = [c for c in TABLE_COLUMNS if table[c].notna().any()]
    rows = table[shown].astype(object).where(table[shown].notna(), None).values.tolist()
    blocks.append(details(f"All {len(table)} regions ({Path(entry.regional_table).name})", data_table(shown, rows)))
    heading = "Regional FDG against healthy controls" if bands else "Regional SUVR (AAL3)"
    return [(heading, blocks)]


def _pattern_rows(pattern: PatternScore) -> list[tuple[str, object]]:
    interval = "n/a" if pattern.lower is None else f"[{pattern.lower:.2f}, {pattern.upper:.2f}]"
    rows = [
        ("AD-pattern score (meta-ROI z)", f"{pattern.z:.2f}"),
        ("its 90 % interval", interval),
        ("how the interval was calibrated", pattern.interval),
        ("meta-ROI SUVR", pattern.meta_roi_suvr),
        ("healthy reference", f"{pattern.reference_subjects} CN training subjects of the model"),
    ]
    if pattern.real_z is not None:
        rows.append(("real PET's score", f"{pattern.real_z:.2f}"))
    return rows


def _region_bands(table: pd.DataFrame) -> list[reportlets.RegionBand]:
    """The figure's regions that the table has with a healthy norm, in the figure's order."""
    by_name = {row.label_name: row for row in table.itertuples() if pd.notna(row.healthy_mean_suvr)}

    def optional(value: float) -> float | None:
        return None if pd.isna(value) else float(value)

    return [
        reportlets.RegionBand(
            name=name,
            synthetic=float(row.mean_synthetic_suvr),
            lower=optional(row.ci90_lower),
            upper=optional(row.ci90_upper),
            healthy_mean=float(row.healthy_mean_suvr),
            healthy_sd=float(row.healthy_sd_suvr),
            real=optional(row.mean_real_suvr),
        )
        for name in FIGURE_REGIONS
        if (row := by_name.get(name)) is not None
    ]


def _colour_limit(entry: ReportEntry) -> float:
    """One PET colour scale for the synthetic and the real PET."""
    vmax = reportlets.pet_colour_limit(entry.synthetic_pet, entry.brain_mask)
    if entry.real_pet is not None:
        vmax = max(vmax, reportlets.pet_colour_limit(entry.real_pet, entry.brain_mask))
    return vmax


def _uncertainty_maps(entry: ReportEntry) -> list[tuple]:
    """(image or None, reportlet name, title, caption) of each uncertainty map an image can have."""
    metrics = entry.metrics
    return [
        (
            entry.predictive_sd_map,
            "predictivesd",
            "predictive SD",
            "Predictive standard deviation of the synthetic PET (SUVR; mean +- 1.645 SD is its central 90 % interval), "
            "from the model's single-sample error model fitted on held-out subjects (edge distance, local gradients "
            "and spread of the synthetic PET and the T1w, uptake, slice position and, where the model has them, the "
            "healthy controls' SD and the departure from their mean, and how much the model's U-Net mean disagrees "
            "between the three planes; the sidecar says which). How well it ranks and covers the error on held-out "
            "phantoms is in the synthesis benchmark of the bids-jdam repository.",
        ),
        (
            entry.view_std_map,
            "viewuncertainty",
            "view disagreement",
            "Standard deviation across the synthetic PET reconstructed along each sampled plane (SUVR): where the 2D "
            "views of the same brain disagree. On held-out phantoms it is larger where the error is larger, though "
            "smaller than the error itself (the synthesis benchmark in the bids-jdam repository); it cannot show "
            "errors that all views share (preprocessing, what the model never learned).",
        ),
        (
            entry.std_map,
            "uncertainty",
            "sampling spread",
            f"Standard deviation across the {metrics.sampler.num_samples} samples (SUVR): where the samples differ, "
            "mostly fine texture. On held-out phantoms it has not been found to point to where the error is large; "
            f"the view disagreement (with several planes) does better. {_spread_statement(metrics)}.",
        ),
    ]


def _real_pet_parts(entry: ReportEntry, reportlet_path: ReportletPath) -> list[Part]:
    """Scores against the real PET, its mosaic and the error map."""
    metrics, vmax = entry.metrics, _colour_limit(entry)
    blocks = [] if metrics.quality is None else [key_value_table(_real_pet_scores(metrics))]
    path = reportlets.pet_mosaic_reportlet(
        entry.real_pet, entry.brain_mask, "axial", vmax, reportlet_path("realpet", "pet")
    )
    blocks.append(embedded_image(path, "real PET", "Real PET (SUVR), same slices and colour scale."))
    path = reportlets.error_reportlet(
        entry.synthetic_pet, entry.real_pet, entry.t1w, entry.brain_mask, reportlet_path("error", "pet")
    )
    blocks.append(embedded_image(path, "error map", "Synthetic minus real PET: red too high, blue too low."))
    return [("Real PET and error", blocks)]


def _real_pet_scores(metrics: ParticipantMetrics) -> list[tuple[str, object]]:
    """The image's scores against its real PET, in T1w space too, and how its SD maps relate to the error."""
    quality = metrics.quality
    native = (("PSNR (dB)", quality.native_psnr), ("SSIM", quality.native_ssim), ("MAE (SUVR)", quality.native_mae))
    correlations = (
        ("view disagreement", quality.view_sd_error_correlation),
        ("sampling spread", quality.sd_error_correlation),
    )
    return [
        ("PSNR (dB)", quality.psnr),
        ("SSIM", quality.ssim),
        ("MAE (SUVR)", quality.mae),
        ("NMSE", quality.nmse),
        *[(f"in T1w space: {label}", value) for label, value in native if value is not None],
        ("in the training set", metrics.in_training_set),
        *[
            (f"{label} vs absolute error (Pearson r, {PET_RESOLUTION_SIGMA_MM:g} mm smoothing)", value)
            for label, value in correlations
            if value is not None
        ],
        *[
            (f"sampling spread: {label}", getattr(quality, name))
            for name, label in SPREAD_SCORES
            if getattr(quality, name) is not None
        ],
    ]


def _summary_table(metrics: ParticipantMetrics) -> str:
    resolution = (
        " x ".join(f"{v:.3g}" for v in metrics.input_voxel_size_mm) + " mm" if metrics.input_voxel_size_mm else None
    )
    sampler = metrics.sampler
    return key_value_table(
        [
            ("session", metrics.session),
            ("run", metrics.run),
            ("field strength (T)", metrics.field_strength),
            ("input voxel size", resolution),
            ("model grid spacing (mm)", metrics.grid_spacing_mm),
            ("model", f"{metrics.model.name} (sha256 {metrics.model.sha256[:12]})"),
            ("trained on phantoms", metrics.model.trained_on_phantoms),
            (
                "sampler",
                f"{sampler.name}, {sampler.steps} steps, K = {sampler.num_samples}, seed {sampler.seed}, "
                f"temperature {sampler.temperature:g}",
            ),
            ("spread calibration", _spread_statement(metrics)),
            ("noise index", metrics.noise_index),
            ("brain volume (ml)", metrics.brain_volume_ml),
            ("registration: correlation with template", metrics.registration.correlation_with_template),
            ("brain extraction: Dice with template mask", metrics.brain_extraction.dice_with_template_mask),
            ("status", metrics.status),
            *[("quality control", failure) for failure in metrics.qc_failures],
        ]
    )


def spread_statement(model: ModelInfo, calibration: dict[str, Any] | None, num_samples: int) -> str:
    """What the model card says of the SD map of K = ``num_samples`` samples: whether its size can be read as the
    error's.

    An uncalibrated L2-trained posterior is under-dispersed (:mod:`bids_jdam.evaluate.calibration`), so a missing
    calibration is said plainly rather than left out. The scale is fitted for the card's K (the interval's
    Student-t factor depends on it), so with another K the coverage may differ.
    """
    record = calibration or {}
    if not model.probabilistic:
        return f"deterministic method ({model.method}): one prediction, no spread"
    if num_samples == 1:
        return "one sample (K = 1): no sampling SD map"
    if model.spread_scale is None:
        why = record.get("note") or (
            "the model card's scale was fitted for another sampler or plane count" if "spread_scale" in record else ""
        )
        return "spread NOT calibrated: the SD map is likely too small" + (f" ({why})" if why else "")
    subjects, fitted_k = record.get("subjects"), record.get("num_samples")
    fitted = f" fitted on {subjects} held-out subject{'' if subjects == 1 else 's'}" if subjects else ""
    level = f"level {record['level'] * 100:g} %" if isinstance(record.get("level"), (int, float)) else None
    temperature = record.get("temperature", 1.0)
    tempered = (
        f"sampler temperature {temperature:g}" if isinstance(temperature, (int, float)) and temperature != 1 else None
    )
    details = ", ".join(part for part in (level, fitted_k and f"K = {fitted_k} samples", tempered) if part)
    other_k = f"; here K = {num_samples}, so the coverage may differ" if fitted_k not in (None, num_samples) else ""
    return f"spread calibrated: scale {model.spread_scale:.3g}{fitted}" + (f" ({details})" if details else "") + other_k


def _spread_statement(metrics: ParticipantMetrics) -> str:
    """The statement for the K this image was sampled with."""
    return spread_statement(metrics.model, metrics.model_calibration, metrics.sampler.num_samples)


def _subject_id(subject: str) -> str:
    return subject if subject.startswith("sub-") else f"sub-{subject}"
