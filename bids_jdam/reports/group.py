"""Group level: gather every image's metrics JSON into ``group_metrics.tsv`` and ``group_report.html``, and the
regional tables into the group's AAL3 tables (:mod:`bids_jdam.reports.group_regional`).

It reads derivatives only (never reruns anything) and tolerates partial outputs from many independent jobs:
unreadable metrics files are listed, not fatal, and every participant of the dataset without a usable output is
named in the report. Images marked ``failed-qc`` by the input quality gate are rows of the table with that
``status`` and listed with their reasons, but left out of the figures and the outlier statistics.

Outliers (the rule in :mod:`bids_jdam.evaluate.outliers`): quality and check measures are compared across all
images; regional SUVR within each diagnosis group (when participants.tsv gives one), so that AD hypometabolism is not
called an outlier against CN.

Spread calibration: per model, what its card records (:func:`bids_jdam.reports.participant.spread_statement`)
beside the mean coverage and spread-skill measured on the images with a real PET and K > 1 samples.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bids_jdam.bids.participants import ParticipantRow, diagnosis_of, participants_path, read_participants
from bids_jdam.errors import InputError
from bids_jdam.evaluate.consistency import PET_RESOLUTION_SIGMA_MM
from bids_jdam.evaluate.outliers import MIN_IMAGES_FOR_OUTLIERS, OUTLIER_Z, flag_outliers, groups_by
from bids_jdam.evaluate.participant_metrics import METRICS_SUFFIX, ParticipantMetrics
from bids_jdam.io import atomic
from bids_jdam.reports.group_regional import (
    PATTERN_COLUMNS,
    ad_minus_cn,
    collect_regional_tables,
    regional_group_part,
    write_group_regional,
)
from bids_jdam.reports.html_blocks import bullet_list, data_table, embedded_png, page, render
from bids_jdam.reports.participant import PHANTOM_BANNER, Part, spread_statement
from bids_jdam.synthesis.provenance import ModelInfo

LOGGER = logging.getLogger(__name__)

# The SD-error correlations exist only for images with K > 1 samples (sampling) or several planes (views); the
# coverage and spread-skill of the (calibrated) sampling SD only with K > 1.
SPREAD_MEASURES = ("coverage_50", "coverage_90", "spread_skill", "sd_ause_relative", "crps_over_constant_band")
QUALITY_MEASURES = (
    "psnr",
    "ssim",
    "mae",
    "nmse",
    "native_psnr",
    "native_ssim",
    "native_mae",
    "view_sd_error_correlation",
    "sd_error_correlation",
    *SPREAD_MEASURES,
)
CHECK_MEASURES = ("noise_index", "brain_volume_ml", "registration_correlation", "brain_extraction_dice")
MEASURE_LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "mae": "MAE (SUVR)",
    "nmse": "NMSE",
    "native_psnr": "T1w space: PSNR (dB)",
    "native_ssim": "T1w space: SSIM",
    "native_mae": "T1w space: MAE (SUVR)",
    "sd_error_correlation": "sampling SD-error correlation",
    "view_sd_error_correlation": "view SD-error correlation",
    "noise_index": "noise index",
    "brain_volume_ml": "brain volume (ml)",
    "registration_correlation": "registration: correlation",
    "brain_extraction_dice": "brain extraction: Dice",
    "coverage_50": "coverage, 50 % interval",
    "coverage_90": "coverage, 90 % interval",
    "spread_skill": "spread-skill ratio",
    "sd_ause_relative": "SD map: AUSE / random",
    "crps_over_constant_band": "SD map: CRPS / constant band",
}


class GroupOutputs(NamedTuple):
    """The group table and report, and one line per metrics file that could not be read (the run then fails)."""

    table: Path
    report: Path
    unreadable: list[str]


def run_group_level(output_dir: Path, bids_dir: Path | None) -> GroupOutputs:
    """Write ``group_metrics.tsv`` and ``group_report.html`` into ``output_dir``."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise InputError(f"{output_dir}: the output directory does not exist; run the participant level first")
    metrics, problems = collect_metrics(output_dir)
    participants = read_group_participants(bids_dir)
    table = metrics_table(metrics, participants)
    flag_outliers_among_passed(table)
    expected = expected_participants(output_dir, bids_dir, participants)
    missing = sorted(set(expected) - set(table.loc[table["status"] == "ok", "participant_id"]))
    LOGGER.info("group level: %d images, %d participants without outputs", len(table), len(missing))

    tsv_path = atomic.write_text(
        output_dir / "group_metrics.tsv", table.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    )
    regional = collect_regional_tables(output_dir, table[table["status"] == "ok"])
    differences = ad_minus_cn(regional)
    write_group_regional(output_dir, regional, differences)
    html_path = atomic.write_text(
        output_dir / "group_report.html",
        _group_html(output_dir, table, metrics, missing, problems, expected, differences),
    )
    return GroupOutputs(tsv_path, html_path, problems)


def collect_metrics(output_dir: Path) -> tuple[list[ParticipantMetrics], list[str]]:
    """Every readable metrics JSON (whatever its status), and one line per file that was skipped and why."""
    metrics, problems = [], []
    for path in sorted(Path(output_dir).glob(f"sub-*/figures/*{METRICS_SUFFIX}")):
        try:
            metrics.append(ParticipantMetrics.from_json(path))
        except InputError as exc:
            problems.append(str(exc))
    return metrics, problems


def read_group_participants(bids_dir: Path | None) -> dict[str, ParticipantRow] | None:
    """The dataset's participants.tsv rows by label (:mod:`bids_jdam.bids.participants`); None without one."""
    if bids_dir is None or not participants_path(bids_dir).is_file():
        return None
    return read_participants(bids_dir)


def metrics_table(metrics: list[ParticipantMetrics], participants: dict[str, ParticipantRow] | None) -> pd.DataFrame:
    """One row per image: identifiers, diagnosis, quality, checks and regional SUVR (``suvr_``/``realsuvr_``)."""
    regions = sorted({region for item in metrics for region in item.regional_suvr_synthetic})
    real_regions = sorted({region for item in metrics for region in (item.regional_suvr_real or {})})
    diagnoses = {f"sub-{label}": diagnosis_of(row) for label, row in (participants or {}).items()}
    rows = []
    for item in metrics:
        quality = item.quality
        row = {
            "participant_id": item.participant_id,
            "session": item.session,
            "run": item.run,
            "status": item.status,
            "field_strength": item.field_strength,
            "diagnosis": diagnoses.get(item.participant_id),
            "model": item.model.name,
            "trained_on_phantoms": item.model.trained_on_phantoms,
            "in_training_set": item.in_training_set,
        }
        row.update({name: _number(getattr(quality, name) if quality else None) for name in QUALITY_MEASURES})
        row.update(
            {
                "noise_index": item.noise_index,
                "brain_volume_ml": item.brain_volume_ml,
                "registration_correlation": item.registration.correlation_with_template,
                "brain_extraction_dice": item.brain_extraction.dice_with_template_mask,
            }
        )
        pattern = item.ad_pattern
        row.update(
            {
                column: _number(None if pattern is None else getattr(pattern, field))
                for column, field in zip(PATTERN_COLUMNS, ("z", "lower", "upper", "real_z"))
            }
        )
        row.update({f"suvr_{r}": item.regional_suvr_synthetic.get(r, math.nan) for r in regions})
        row.update({f"realsuvr_{r}": (item.regional_suvr_real or {}).get(r, math.nan) for r in real_regions})
        rows.append(row)
    columns = (
        [
            "participant_id",
            "session",
            "run",
            "status",
            "field_strength",
            "diagnosis",
            "model",
            "trained_on_phantoms",
            "in_training_set",
            *QUALITY_MEASURES,
            *CHECK_MEASURES,
            *PATTERN_COLUMNS,
        ]
        + [f"suvr_{r}" for r in regions]
        + [f"realsuvr_{r}" for r in real_regions]
    )
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["participant_id", "session", "run"], na_position="first", ignore_index=True)


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def outlier_measures(table: pd.DataFrame) -> list[str]:
    """The numeric columns screened for outliers."""
    return [c for c in table.columns if c in QUALITY_MEASURES or c in CHECK_MEASURES or "suvr_" in c]


def flag_outliers_among_passed(table: pd.DataFrame) -> None:
    """The outlier rule over the images with status ``ok``; an image that failed QC is never an outlier.

    Quality and check measures across all images, regional SUVR within each diagnosis group
    (:mod:`bids_jdam.evaluate.outliers`).
    """
    passed = table[table["status"] == "ok"].copy()
    measures = outlier_measures(passed)
    flag_outliers(passed, measures, within="diagnosis", within_measures=[c for c in measures if "suvr_" in c])
    table["outlier"] = False
    table["outlier_measures"] = ""
    table.loc[passed.index, ["outlier", "outlier_measures"]] = passed[["outlier", "outlier_measures"]]


def expected_participants(
    output_dir: Path, bids_dir: Path | None, participants: dict[str, ParticipantRow] | None
) -> list[str]:
    """Participants that should have outputs: participants.tsv, else the ``sub-*`` folders of the dataset.

    Without a dataset, the ``sub-*`` folders of the output directory stand in (a folder without metrics failed).
    """
    if participants is not None:
        return sorted(f"sub-{label}" for label in participants)
    root = Path(bids_dir) if bids_dir is not None else Path(output_dir)
    return sorted(p.name for p in root.glob("sub-*") if p.is_dir())


def _group_html(
    output_dir: Path,
    table: pd.DataFrame,
    metrics: list[ParticipantMetrics],
    missing: list[str],
    problems: list[str],
    expected: list[str],
    differences: pd.DataFrame,
) -> str:
    failed_qc = [item for item in metrics if item.status != "ok"]
    all_images, table = table, table[table["status"] == "ok"]
    context = {
        "phantom_banner": PHANTOM_BANNER if any(item.model.trained_on_phantoms for item in metrics) else None,
        "counts": {
            "succeeded": len(table),
            "participants": table["participant_id"].nunique(),
            "failed_qc": len(failed_qc),
            "missing": len(missing),
            "expected": len(expected),
            "skipped": len(problems),
            "outliers": int(all_images["outlier"].sum()),
        },
        "failed_qc": [f"{_image_name(item)}: {'; '.join(item.qc_failures) or item.status}" for item in failed_qc],
        "missing": missing,
        "problems": problems,
        "sections": [],
        "all_images": None,
        "reports": [],
    }
    if not table.empty:
        context.update(_group_sections(output_dir, table, all_images, metrics, differences))
    return page("bids-jdam: group report", render("group.html.j2", **context))


def _group_sections(
    output_dir: Path,
    table: pd.DataFrame,
    all_images: pd.DataFrame,
    metrics: list[ParticipantMetrics],
    differences: pd.DataFrame,
) -> dict[str, object]:
    """The figures and tables of the images that passed QC, and the table of every image."""
    groupings = [c for c in ("diagnosis", "field_strength") if table[c].notna().any()]
    quality_present = [m for m in QUALITY_MEASURES if table[m].notna().any()]
    sections = [
        _regional_part(table, groupings),
        regional_group_part(table, differences),
        ("Spread calibration", [bullet_list(_calibration_lines(metrics))]),
        *_distribution_parts(table, quality_present, groupings),
        _outlier_part(table),
    ]
    shown = ["participant_id", "session", "run", "status", "diagnosis", "field_strength", *quality_present]
    shown += CHECK_MEASURES
    return {
        "sections": sections,
        "reports": [p for p in table["participant_id"].unique() if (output_dir / f"{p}.html").is_file()],
        "all_images": data_table(shown, all_images[shown].values.tolist(), all_images["outlier"].tolist()),
    }


def _regional_part(table: pd.DataFrame, groupings: list[str]) -> Part:
    """Regional SUVR figures and means, synthetic and real, by diagnosis where known."""
    blocks = []
    by = "diagnosis" if "diagnosis" in groupings else None
    for prefix, label in (("suvr_", "synthetic PET"), ("realsuvr_", "real PET")):
        columns = [c for c in table.columns if c.startswith(prefix)]
        if columns and table[columns].notna().any().any():
            blocks.append(
                embedded_png(
                    _regional_figure(table, columns, by, label),
                    f"regional SUVR {label}",
                    f"Mean SUVR per region, {label}" + (", by diagnosis." if by else "."),
                )
            )
            blocks.append(_regional_means_table(table, columns, by))
    return "Regional SUVR", blocks


def _distribution_parts(table: pd.DataFrame, quality_present: list[str], groupings: list[str]) -> list[Part]:
    """One distribution figure per group of measures (quality, spread, checks)."""
    parts: list[Part] = []
    sections = [
        ("Image quality (images with a real PET)", [m for m in quality_present if m not in SPREAD_MEASURES]),
        (
            "Coverage and spread-skill (images with a real PET and K > 1)",
            [m for m in quality_present if m in SPREAD_MEASURES],
        ),
        ("Noise index and checks", CHECK_MEASURES),
    ]
    for title, measures in sections:
        if not measures:
            continue
        caption = "; ".join(f"row {i}: by {g.replace('_', ' ')}" for i, g in enumerate(groupings, start=1))
        blocks = [
            embedded_png(
                _distribution_figure(table, list(measures), groupings or [None]),
                title,
                (caption + "; " if caption else "") + "red dots: flagged outliers.",
            )
        ]
        if {"sd_error_correlation", "view_sd_error_correlation"} & set(measures):
            blocks.append(
                f'<p class="note">SD-error correlations: Pearson correlation, inside the brain mask, of a '
                f"standard-deviation map with the absolute error of the synthetic PET against the real PET, "
                f"both smoothed at {PET_RESOLUTION_SIGMA_MM:g} mm; above 0 the map points to where the "
                f"synthetic PET is wrong. View: SD across the sampled planes (images with several planes); "
                f"sampling: SD across the K samples (images with K &gt; 1).</p>"
            )
        parts.append((title, blocks))
    return parts


def _outlier_part(table: pd.DataFrame) -> Part:
    note = (
        f'<p class="note">Modified z-score 0.6745 (x - median) / MAD per measure, flagged when |z| &gt; {OUTLIER_Z}: '
        f"quality and checks across all images, regional SUVR within each diagnosis group; a measure needs at "
        f"least {MIN_IMAGES_FOR_OUTLIERS} images in its group; 1.2533 x the mean absolute deviation replaces a zero "
        f"MAD.</p>"
    )
    flagged = table[table["outlier"]]
    listed = (
        data_table(
            ["participant_id", "session", "run", "measures"],
            flagged[["participant_id", "session", "run", "outlier_measures"]].values.tolist(),
        )
        if len(flagged)
        else "<p>No outliers.</p>"
    )
    return "Outliers", [note, listed]


def _calibration_lines(metrics: list[ParticipantMetrics]) -> list[str]:
    """Per model and K, the calibration its card records and the mean coverage measured on the images that passed
    QC and have a real PET: whether the calibration fitted on held-out subjects holds here."""
    by_model: dict[tuple[ModelInfo, int], list[ParticipantMetrics]] = {}
    for item in metrics:
        if item.status == "ok":
            by_model.setdefault((item.model, item.sampler.num_samples), []).append(item)
    lines = []
    for (model, k), items in by_model.items():
        scored = [item.quality for item in items if item.quality is not None and item.quality.coverage_90 is not None]
        measured = (
            f"mean over the {len(scored)} image(s) with a real PET and K > 1: coverage "
            f"{_mean(q.coverage_50 for q in scored):.2f} of the 50 % interval and "
            f"{_mean(q.coverage_90 for q in scored):.2f} of the 90 % interval (nominal 0.50 and 0.90), spread-skill "
            f"ratio {_mean(q.spread_skill for q in scored):.2f} (nominal 1.0)"
            if scored
            else "no image with a real PET and an SD map to measure the coverage on"
        )
        statement = spread_statement(model, items[0].model_calibration, k)
        lines.append(f"{model.name} (sha256 {model.sha256[:12]}): {statement}; {measured}.")
    return lines


def _mean(values: Iterable[float | None]) -> float:
    """Mean of the finite values (absent scores are None); NaN when there are none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _image_name(item: ParticipantMetrics) -> str:
    parts = [item.participant_id] + [
        f"{key}-{value}" for key, value in (("ses", item.session), ("run", item.run)) if value is not None
    ]
    return "_".join(parts)


def _distribution_figure(table: pd.DataFrame, measures: list[str], groupings: list[str | None]) -> bytes:
    """A grid of panels, one row per grouping and one column per measure: a box per group, every image a dot."""
    figure = Figure(figsize=(2.8 * len(measures), 2.6 * len(groupings)))
    figure.subplots_adjust(left=0.06, right=0.98, top=0.9, bottom=0.12, wspace=0.35, hspace=0.45)
    for row, grouping in enumerate(groupings):
        groups = groups_by(table, grouping)
        for column, measure in enumerate(measures):
            axes = figure.add_subplot(len(groupings), len(measures), row * len(measures) + column + 1)
            for position, (_, rows) in enumerate(groups, start=1):
                values = pd.to_numeric(rows[measure], errors="coerce").to_numpy(dtype=float)
                keep = np.isfinite(values)
                if keep.any():
                    axes.boxplot(values[keep], positions=[position], widths=0.5, showfliers=False)
                spread = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
                is_outlier = rows["outlier_measures"].str.split(",").map(lambda names, m=measure: m in names)
                colours = np.where(is_outlier.to_numpy(dtype=bool), "tab:red", "tab:blue")
                axes.scatter(position + spread[keep], values[keep], s=14, c=colours[keep], zorder=3)
            axes.set_xticks(range(1, len(groups) + 1), [name for name, _ in groups], fontsize=8)
            axes.tick_params(labelsize=8)
            axes.set_title(MEASURE_LABELS.get(measure, measure), fontsize=9)
    return _png(figure)


def _regional_figure(table: pd.DataFrame, columns: list[str], by: str | None, label: str) -> bytes:
    """Boxes of regional SUVR side by side per group, as the paper's Figure 7 compares AD and CN."""
    groups = groups_by(table, by)
    width = 0.8 / len(groups)
    figure = Figure(figsize=(max(6.0, 0.9 * len(columns) + 2), 3.4))
    axes = figure.add_subplot()
    colours = [f"C{i}" for i in range(len(groups))]
    for index, (name, rows) in enumerate(groups):
        positions = np.arange(len(columns)) + (index - (len(groups) - 1) / 2) * width
        data = [pd.to_numeric(rows[c], errors="coerce").dropna().to_numpy(dtype=float) for c in columns]
        filled = [i for i, values in enumerate(data) if values.size]
        if not filled:
            continue
        boxes = axes.boxplot(
            [data[i] for i in filled],
            positions=positions[filled],
            widths=width * 0.85,
            patch_artist=True,
            showfliers=False,
        )
        for box in boxes["boxes"]:
            box.set_facecolor(colours[index])
            box.set_alpha(0.6)
        axes.plot([], [], "s", color=colours[index], label=f"{name} (n={len(rows)})")
    names = [c.split("suvr_", 1)[1].replace("_", " ") for c in columns]
    axes.set_xticks(np.arange(len(columns)), names, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(f"mean SUVR, {label}")
    axes.legend(fontsize=8)
    figure.subplots_adjust(left=0.09, right=0.98, top=0.95, bottom=0.36)
    return _png(figure)


def _regional_means_table(table: pd.DataFrame, columns: list[str], by: str | None) -> str:
    header = ["group", "n", *[c.split("suvr_", 1)[1] for c in columns]]
    rows = [
        [name, len(rows), *[float(pd.to_numeric(rows[c], errors="coerce").mean()) for c in columns]]
        for name, rows in groups_by(table, by)
    ]
    return data_table(header, rows)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
