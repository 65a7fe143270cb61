"""Regional FDG measures on held-out subjects, read from what the app writes: do the intervals cover, and does
the synthetic PET keep the AD effect?

    python -m benchmarks.regional [--model demo] [--subjects 24] [--seed 3] [--threads 2] [--work DIR] [--results DIR]

A phantom the model never saw (``--seed``, default 3: the demo trained on seed 1 and was calibrated on seed 2; the
same settings: fast, 4 mm grid, 3 T) goes through the app's path users run: ``bids-jdam BIDS OUT participant
--model MODEL`` with no other option (the default run), then ``group``. Everything is measured on the outputs:
each image's AAL3 regional table (``*_seg-AAL3_desc-jdam_pet.tsv``: the synthetic regional SUVR, its calibrated
90 % interval and the session's real PET as the app preprocessed it), each metrics JSON's AD-pattern score with its
interval, and the group's AD minus CN table. Writes ``<results>/regional-<machine>.{json,md}``.

Goals (issue 31): regional 90 % intervals cover 0.85-0.95 of held-out (subject, region) pairs; the AD-pattern
score's intervals cover 0.85-0.95 of held-out subjects; the synthetic meta-ROI AD-CN difference is >= 50 % of the
real one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from bids_jdam.cli.run import main as bids_jdam
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.data.phantom.model import PHANTOM_VERSION
from bids_jdam.evaluate.atlas_suvr import META_ROI_NAME
from bids_jdam.reports.group_regional import DIFFERENCE_FILE, REGIONAL_FILE

RESULTS = Path(__file__).resolve().parent / "results"
COVERAGE_GOAL = (0.85, 0.95)
AD_EFFECT_GOAL = 0.5


def run_app(bids_dir: Path, out: Path, work: Path, model: str, threads: int) -> float:
    """The default participant run of every subject, then the group level; the participant run's seconds."""
    start = time.perf_counter()
    common = ["--omp-nthreads", str(threads), "--skip-bids-validation"]
    rc = bids_jdam([str(bids_dir), str(out), "participant", "--model", model, "-w", str(work), *common])
    seconds = time.perf_counter() - start
    if rc != 0 or bids_jdam([str(bids_dir), str(out), "group"]) != 0:
        raise SystemExit(f"bids-jdam failed on {bids_dir} (exit {rc})")
    return seconds


def regional_scores(regional: pd.DataFrame) -> dict:
    """Coverage of the regional intervals over (subject, region) pairs, per subject's range, and the MAE."""
    scored = regional.dropna(subset=["ci90_lower", "mean_real_suvr"])
    covered = (scored["ci90_lower"] <= scored["mean_real_suvr"]) & (scored["mean_real_suvr"] <= scored["ci90_upper"])
    per_subject = covered.groupby(scored["participant_id"]).mean()
    error = (regional["mean_synthetic_suvr"] - regional["mean_real_suvr"]).abs()
    meta = regional["label_name"] == META_ROI_NAME
    return {
        "pairs": int(len(scored)),
        "coverage": float(covered.mean()) if len(scored) else None,
        "coverage_per_subject_min": float(per_subject.min()) if len(scored) else None,
        "coverage_per_subject_max": float(per_subject.max()) if len(scored) else None,
        "half_width_suvr": float((scored["ci90_upper"] - scored["mean_synthetic_suvr"]).median())
        if len(scored)
        else None,
        "mae_suvr": float(error.mean()),
        "meta_roi_mae_suvr": float(error[meta].mean()),
    }


def pattern_scores(out: Path) -> dict:
    """Coverage of the AD-pattern intervals over subjects, and the held-out CN subjects' real z (a reference that
    holds for new subjects gives them mean near 0 and SD near 1)."""
    rows = []
    for path in sorted(out.glob("sub-*/figures/*_desc-jdam_metrics.json")):
        metrics = json.loads(path.read_text())
        if metrics.get("ad_pattern"):
            rows.append({"participant_id": metrics["participant_id"], **metrics["ad_pattern"]})
    table = pd.DataFrame(rows)
    if table.empty:
        return {"subjects": 0}
    scored = table.dropna(subset=["lower", "real_z"])
    covered = (scored["lower"] <= scored["real_z"]) & (scored["real_z"] <= scored["upper"])
    return {
        "subjects": int(len(table)),
        "with_interval": int(len(scored)),
        "coverage": float(covered.mean()) if len(scored) else None,
        "half_width_z": float((scored["upper"] - scored["z"]).median()) if len(scored) else None,
        "mae_z": float((table["z"] - table["real_z"]).abs().mean()),
        "interval_note": str(table["interval"].iloc[0]),
    }


def healthy_reference_check(regional: pd.DataFrame) -> dict:
    """The held-out CN subjects' real meta-ROI z against the model's reference, and, per diagnosis, the mean meta-ROI
    z of the synthetic PET beside the real PET's (where the synthetic reads healthy subjects as healthy)."""
    meta = regional[regional["label_name"] == META_ROI_NAME]
    z = meta.loc[meta["diagnosis"] == "CN", "real_zscore"].dropna().to_numpy(dtype=float)
    check = {}
    if len(z) > 1:
        check = {"cn_subjects": int(len(z)), "mean": float(np.mean(z)), "sd": float(np.std(z, ddof=1))}
    by_diagnosis = meta.dropna(subset=["zscore", "real_zscore"]).groupby("diagnosis")
    check["meta_roi_z_by_diagnosis"] = {
        str(diagnosis): {
            "subjects": int(len(rows)),
            "synthetic_mean": float(rows["zscore"].mean()),
            "synthetic_sd": float(rows["zscore"].std(ddof=1)) if len(rows) > 1 else None,
            "real_mean": float(rows["real_zscore"].mean()),
        }
        for diagnosis, rows in by_diagnosis
    }
    return check


def ad_effect(out: Path) -> dict:
    """The meta-ROI's AD minus CN difference, synthetic and real, with their intervals, and their ratio."""
    path = out / DIFFERENCE_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False).set_index("label_name")
    row = table.loc[META_ROI_NAME]
    effect = {column: float(row[column]) for column in table.columns if column not in ("index", "n_AD", "n_CN")}
    effect |= {"n_AD": int(row["n_AD"]), "n_CN": int(row["n_CN"])}
    effect["synthetic_over_real"] = effect["synthetic_ad_minus_cn"] / effect["real_ad_minus_cn"]
    return effect


def goals(report: dict) -> dict:
    low, high = COVERAGE_GOAL
    regional, pattern, effect = report["regional"], report["ad_pattern"], report["ad_effect"]
    return {
        "regional_coverage": regional["coverage"] is not None and low <= regional["coverage"] <= high,
        "ad_pattern_coverage": pattern.get("coverage") is not None and low <= pattern["coverage"] <= high,
        "meta_roi_ad_effect": bool(effect) and effect["synthetic_over_real"] >= AD_EFFECT_GOAL,
    }


def verdict(value: float | None, low: float, high: float = float("inf")) -> str:
    """yes, or no with the margin by which ``value`` misses [low, high]."""
    if value is None:
        return "no (not measured)"
    if value < low:
        return f"no ({low - value:.3f} below)"
    if value > high:
        return f"no ({value - high:.3f} above)"
    return "yes"


def markdown(report: dict) -> str:
    regional, pattern, effect, reference = (report[k] for k in ("regional", "ad_pattern", "ad_effect", "reference"))
    low, high = COVERAGE_GOAL

    def number(value: float | None, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = markdown_head("Regional FDG measures with calibrated intervals on held-out subjects", report) + [
        "",
        f"Data: {report['data']}  ",
        f"Model: {report['model']}; participant run {report['participant_seconds']:.0f} s for "
        f"{report['subjects']} subjects (preprocessing included where `--work` held no cached steps).",
        "",
        "| measure | value | goal | met |",
        "|---|---|---|---|",
        f"| regional 90 % interval coverage, {regional['pairs']} (subject, region) pairs | "
        f"{number(regional['coverage'])} (per subject {number(regional['coverage_per_subject_min'])}-"
        f"{number(regional['coverage_per_subject_max'])}) | 0.85-0.95 | {verdict(regional['coverage'], low, high)} |",
        f"| AD-pattern score 90 % interval coverage, {pattern.get('with_interval', 0)} subjects | "
        f"{number(pattern.get('coverage'))} | 0.85-0.95 | {verdict(pattern.get('coverage'), low, high)} |",
        f"| meta-ROI AD-CN, synthetic / real | {number(effect.get('synthetic_over_real'), 2)} | >= "
        f"{AD_EFFECT_GOAL:.2f} | {verdict(effect.get('synthetic_over_real'), AD_EFFECT_GOAL)} |",
        "",
        f"- Regional MAE against the real PET: {number(regional['mae_suvr'], 4)} SUVR over all regions, "
        f"{number(regional['meta_roi_mae_suvr'], 4)} in the meta-ROI; median interval half-width "
        f"{number(regional['half_width_suvr'], 4)} SUVR.",
        f"- AD-pattern score: half-width {number(pattern.get('half_width_z'))} z, mean |synthetic - real| "
        f"{number(pattern.get('mae_z'))} z; calibration: {pattern.get('interval_note', 'n/a')}.",
        f"- Meta-ROI AD minus CN (SUVR, Welch 90 % interval): synthetic {number(effect.get('synthetic_ad_minus_cn'))} "
        f"[{number(effect.get('synthetic_ci90_lower'))}, {number(effect.get('synthetic_ci90_upper'))}], real "
        f"{number(effect.get('real_ad_minus_cn'))} [{number(effect.get('real_ci90_lower'))}, "
        f"{number(effect.get('real_ci90_upper'))}] (n AD {int(effect.get('n_AD', 0))}, n CN "
        f"{int(effect.get('n_CN', 0))}).",
        f"- Healthy reference on new subjects: the {reference.get('cn_subjects', 0)} held-out CN subjects' real "
        f"meta-ROI z has mean {number(reference.get('mean'), 2)} and SD {number(reference.get('sd'), 2)} "
        "(0 and 1 where the reference holds for them).",
        *_synthetic_z_lines(reference.get("meta_roi_z_by_diagnosis", {}), number),
    ]
    return "\n".join(lines) + "\n"


def _synthetic_z_lines(by_diagnosis: dict, number: Callable[..., str]) -> list[str]:
    """The synthetic PET's meta-ROI z beside the real PET's, per diagnosis, and where a healthy subject's reads."""
    if not by_diagnosis:
        return []
    cells = [
        f"{diagnosis} {number(row['synthetic_mean'], 2)} (SD {number(row['synthetic_sd'], 2)}; real "
        f"{number(row['real_mean'], 2)}, n {row['subjects']})"
        for diagnosis, row in by_diagnosis.items()
    ]
    lines = ["- Meta-ROI z of the synthetic PET by diagnosis: " + ", ".join(cells) + "."]
    if "CN" in by_diagnosis:
        lines.append(
            f"- A healthy subject's synthetic PET reads {number(by_diagnosis['CN']['synthetic_mean'], 2)} z in the "
            "meta-ROI, not 0: the synthetic PET of both groups lies between the real groups (it keeps part of the "
            "AD - CN difference), so a synthetic z-map and AD-pattern score are read from that baseline."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="demo, a model directory or hf:ORG/NAME (default: demo)")
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--seed", type=int, default=3, help="the held-out phantom's seed (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="phantom, preprocessing cache and outputs (default: temporary)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bids-jdam-regional-"))
    bids_dir = work / f"phantom-seed{args.seed}"
    if not bids_dir.exists():
        generate_phantom_dataset(bids_dir, args.subjects, args.seed, fast=True, grid_spacing_mm=4.0)
    out = work / "out"
    seconds = run_app(bids_dir, out, work / "prep", args.model, args.threads)
    regional = pd.read_csv(out / REGIONAL_FILE, sep="\t", na_values="n/a", keep_default_na=False)
    report = {
        "command": command_line("benchmarks.regional", argv),
        "machine": machine_info(threads=args.threads),
        "phantom_version": PHANTOM_VERSION,
        "data": f"{args.subjects} held-out phantom subjects (seed {args.seed}, fast, 4 mm grid, 3 T) through the "
        "participant path (bids-jdam participant, default run, then group), scored on its outputs against the "
        "session's real PET as the app preprocesses it",
        "model": args.model,
        "subjects": args.subjects,
        "participant_seconds": seconds,
        "regional": regional_scores(regional),
        "ad_pattern": pattern_scores(out),
        "reference": healthy_reference_check(regional),
        "ad_effect": ad_effect(out),
    }
    report["goals_met"] = goals(report)
    write_results(args.results, "regional", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
