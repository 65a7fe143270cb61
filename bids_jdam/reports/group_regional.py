"""Group level, regional: every image's AAL3 regional table across participants, the AD-pattern scores, and AD minus
CN per region with its interval where participants.tsv gives diagnoses.

Reads the regional tables the participant level wrote (``*_seg-AAL3_desc-jdam_pet.tsv``) of the images that passed
quality control; writes ``group_seg-AAL3_regional.tsv`` (one row per image and region) and, with AD and CN
participants, ``group_seg-AAL3_ADminusCN.tsv`` (one row per region).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from bids.layout import parse_file_entities
from matplotlib.figure import Figure

from bids_jdam.evaluate.atlas_suvr import ATLAS
from bids_jdam.evaluate.group_difference import LEVEL, group_difference
from bids_jdam.io import atomic
from bids_jdam.reports.html_blocks import data_table, details, embedded_png
from bids_jdam.reports.participant import FIGURE_REGIONS, Part

REGIONAL_FILE = f"group_seg-{ATLAS}_regional.tsv"
DIFFERENCE_FILE = f"group_seg-{ATLAS}_ADminusCN.tsv"
KEYS = ["participant_id", "session", "run"]
PATTERN_COLUMNS = ["ad_pattern_z", "ad_pattern_lower", "ad_pattern_upper", "ad_pattern_real_z"]
PATTERN_CAPTION = (
    "AD-pattern score (the AD meta-ROI's z against the model's healthy controls) per image, with its calibrated "
    "90 % interval where one applies, by diagnosis; grey diamonds: the real PET's score."
)
VALUES = ["mean_synthetic_suvr", "ci90_lower", "ci90_upper", "zscore", "mean_real_suvr", "real_zscore"]


def collect_regional_tables(output_dir: Path, images: pd.DataFrame) -> pd.DataFrame:
    """One row per (image, region) of the ``images`` (the group table's rows that passed QC), with their diagnosis."""
    frames = []
    for path in sorted(Path(output_dir).glob(f"sub-*/**/*_seg-{ATLAS}_desc-jdam_pet.tsv")):
        entities = parse_file_entities(str(path))
        key = {"participant_id": f"sub-{entities['subject']}", "session": entities.get("session"),
               "run": None if entities.get("run") is None else str(entities["run"])}  # fmt: skip
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
        frames.append(table.assign(**key))
    if not frames:
        return pd.DataFrame(columns=[*KEYS, "diagnosis", "index", "label_name", *VALUES])
    regional = pd.concat(frames, ignore_index=True)
    passed = images[[*KEYS, "diagnosis"]].astype(object).where(images[[*KEYS, "diagnosis"]].notna(), None)
    regional = regional.astype({"session": object, "run": object}).merge(passed, on=KEYS, how="inner")
    return regional[[*KEYS, "diagnosis", "index", "label_name", *[c for c in VALUES if c in regional]]]


def ad_minus_cn(regional: pd.DataFrame) -> pd.DataFrame:
    """Per region: AD minus CN mean SUVR, synthetic and real, each with its Welch ``LEVEL`` interval (empty where
    either group has fewer than two images)."""
    rows = []
    for (index, name), region in regional.groupby(["index", "label_name"], sort=False):
        row: dict[str, object] = {"index": index, "label_name": name}
        for source, column in (("synthetic", "mean_synthetic_suvr"), ("real", "mean_real_suvr")):
            values = {dx: region.loc[region["diagnosis"] == dx, column].to_numpy(dtype=float) for dx in ("AD", "CN")}
            difference = group_difference(values["AD"], values["CN"])
            if difference is not None:
                row.update({"n_AD": difference.n_group, "n_CN": difference.n_baseline,
                            f"{source}_ad_minus_cn": difference.difference,
                            f"{source}_ci{round(100 * LEVEL)}_lower": difference.lower,
                            f"{source}_ci{round(100 * LEVEL)}_upper": difference.upper})  # fmt: skip
        if "synthetic_ad_minus_cn" in row:
            rows.append(row)
    return pd.DataFrame(rows)


def write_group_regional(output_dir: Path, regional: pd.DataFrame, differences: pd.DataFrame) -> list[Path]:
    """The two group TSVs (the difference table only where there is one)."""

    def tsv(frame: pd.DataFrame) -> str:
        return frame.to_csv(sep="\t", index=False, na_rep="n/a", lineterminator="\n", float_format="%.5f")

    written = [atomic.write_text(Path(output_dir) / REGIONAL_FILE, tsv(regional))]
    if not differences.empty:
        written.append(atomic.write_text(Path(output_dir) / DIFFERENCE_FILE, tsv(differences)))
    return written


def regional_group_part(images: pd.DataFrame, differences: pd.DataFrame) -> Part:
    """The AD-pattern score of every image (the group table's ``ad_pattern_`` columns), and AD minus CN per region
    with its interval."""
    heading = f"Regional FDG ({ATLAS}) across participants"
    blocks = []
    scored = images[images["ad_pattern_z"].notna()]
    if not scored.empty:
        blocks.append(embedded_png(_pattern_figure(scored), "AD-pattern scores", PATTERN_CAPTION))
        shown = [
            c for c in ["participant_id", "session", "run", "diagnosis", *PATTERN_COLUMNS] if scored[c].notna().any()
        ]
        blocks.append(
            details(f"AD-pattern score of every image ({len(scored)})", data_table(shown, _cells(scored[shown])))
        )
    if differences.empty:
        blocks.append('<p class="note">No AD minus CN comparison: participants.tsv gives fewer than two AD and two '
                      "CN participants with regional tables.</p>")  # fmt: skip
        return heading, blocks
    key = differences[differences["label_name"].isin(FIGURE_REGIONS)]
    blocks.append(
        f'<p class="note">AD minus CN mean regional SUVR with Welch\'s {LEVEL:.0%} interval (it covers the '
        "between-subject spread, synthesis error included); the synthetic difference beside the real one where the "
        f"images have a real PET. All regions: {DIFFERENCE_FILE}.</p>"
    )
    blocks.append(data_table(list(key.columns), _cells(key)))
    return heading, blocks


def _cells(frame: pd.DataFrame) -> list[list[object]]:
    return frame.astype(object).where(frame.notna(), None).values.tolist()


def _pattern_figure(scored: pd.DataFrame) -> bytes:
    figure = Figure(figsize=(6, 3.2))
    axes = figure.add_subplot()
    diagnoses = scored["diagnosis"].astype(object).where(scored["diagnosis"].notna(), "n/a").astype(str)
    groups = sorted(diagnoses.unique())
    for position, group in enumerate(groups):
        rows = scored[diagnoses == group]
        x = position + (np.linspace(-0.2, 0.2, len(rows)) if len(rows) > 1 else np.zeros(1))
        z = rows["ad_pattern_z"].to_numpy(dtype=float)
        bounds = rows[["ad_pattern_lower", "ad_pattern_upper"]].to_numpy(dtype=float)
        error = np.nan_to_num(np.vstack([z - bounds[:, 0], bounds[:, 1] - z]))
        axes.errorbar(x, z, yerr=error, fmt="o", color=f"C{position}", capsize=2, markersize=4)
        real = rows["ad_pattern_real_z"].to_numpy(dtype=float)
        if np.isfinite(real).any():
            axes.plot(x, real, "D", color="0.3", markersize=3)
    axes.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylabel("AD-pattern score (meta-ROI z)")
    figure.subplots_adjust(left=0.12, right=0.98, top=0.95, bottom=0.12)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()
