"""Which single-sample SD model says where the error is on subjects it was not fitted on (leave one subject out).

    python -m benchmarks.error_model_selection [--model demo|DIR] [--subjects 24] [--threads 2] [--work DIR]
                                               [--results DIR] [--smoke]

The default run's predictive SD map (``bids_jdam.synthesis.error_model``) can be fitted from the image and its T1w
alone, with the model's healthy-control reference as well, or with that and the method's regression mean along each
plane too. This benchmark chooses between them as the uncertainty issue asks, on calibration subjects only: the
phantom the demo model is calibrated on (seed 2) goes through the app's preprocessing (``preprocessed_pairs_loader``,
the loader of ``bids-jdam-calibrate``) and a default synthesis (the model's sampler, one plane) with the planes'
regression means; each subject in turn is held out, each SD model is fitted on the others
(``bids_jdam.evaluate.single_sample_sd``), and the held-out subject's map is scored against its real PET and its
noise-free truth (``bids_jdam.evaluate.error_ranking``): coverage, RMSE and coverage per SD fifth, smoothed SD-error
correlation, AUSE, CRPS against a constant-width band, that CRPS with the map's widths made right on the image,
and the local-error oracle; and the held-out maps over all subjects' voxels together (``pooled_scores``). ``--smoke``:
3 subjects, 2 sampler steps. Writes ``<results>/error-model-selection-<machine>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from benchmarks.synthesis import FIFTH_COVERAGE, FIFTHS_WORDS, RANKING_GOALS
from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset, phantom_truth
from bids_jdam.evaluate.consistency import PET_RESOLUTION_SIGMA_MM
from bids_jdam.evaluate.error_ranking import error_ranking_scores, pooled_scores
from bids_jdam.evaluate.single_sample_sd import case_design, fit_on_designs
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.error_model import FEATURES, HEALTHY_FEATURES, VIEW_FEATURES
from bids_jdam.synthesis.loaded_model import load_model
from bids_jdam.synthesis.synthesizer import Synthesizer
from bids_jdam.workflows.run_config import DEFAULT_PLANES
from bids_jdam.workflows.training_data import preprocessed_pairs_loader

CALIBRATION_SEED = 2  # the phantom the demo model's card is calibrated on (benchmarks/train_demo.py)
RESULTS = Path(__file__).resolve().parent / "results"
REFERENCES = ("noise_free_truth", "real_pet")


def syntheses(synthesizer: Synthesizer, bids_dir: Path, work: Path, steps: int | None) -> list[dict]:
    """Each subject's default synthesis with its planes' regression means, T1w, mask, real PET and noise-free truth
    (model grid)."""
    cfg = synthesizer.model.cfg
    sampler = dataclasses.replace(cfg.sampler, steps=steps or cfg.sampler.steps)
    load = preprocessed_pairs_loader(work / "prep", nthreads=2)
    cases = []
    for v in load(bids_dir, cfg, list(read_diagnoses(bids_dir))):
        image = f"sub-{v.subject}"
        mean = synthesizer.synthesize(v.t1, v.brain_mask, sampler, image=image, planes=DEFAULT_PLANES)
        views = synthesizer.regression_views(v.t1, v.brain_mask, image=image)
        truth = nib.load(phantom_truth(bids_dir, v.subject).pet_suvr).get_fdata(dtype=np.float32)
        cases.append({"subject": v.subject, "mean": mean.mean, "t1": v.t1, "mask": np.asarray(v.brain_mask, dtype=bool),
                      "views": views, "real_pet": v.pet, "noise_free_truth": truth})  # fmt: skip
    return cases


def held_out_scores(cases: list[dict], spacing_mm: float, healthy, names: tuple[str, ...]) -> dict:
    """Per subject (``subjects``): the map fitted on every other subject, scored against the real PET and the truth;
    ``overall``: those held-out maps scored over every subject's voxels together."""
    reference = healthy if set(HEALTHY_FEATURES) <= set(names) else None
    with_views = set(VIEW_FEATURES) <= set(names)
    designs = [
        case_design(
            (c["mean"], c["t1"], c["real_pet"], c["mask"], c["views"] if with_views else None), spacing_mm, reference
        )
        for c in cases
    ]
    rows, maps = [], []
    for i, case in enumerate(cases):
        model = fit_on_designs(designs[:i] + designs[i + 1 :], names)
        sd = model.predictive_sd(case["mean"], case["t1"], case["mask"], spacing_mm, reference, case["views"])
        scores = {
            ref: error_ranking_scores(sd, case["mean"], case[ref], case["mask"], PET_RESOLUTION_SIGMA_MM / spacing_mm)
            for ref in REFERENCES
        }
        rows.append({"subject": case["subject"], **scores})
        maps.append(sd)
    overall = {
        ref: pooled_scores(
            [(sd, case["mean"], case[ref], case["mask"]) for sd, case in zip(maps, cases)],
            PET_RESOLUTION_SIGMA_MM / spacing_mm,
        )
        for ref in REFERENCES
    }
    return {"subjects": rows, "overall": overall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="'demo' or a model directory with a healthy reference")
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="phantom and preprocessing cache (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="3 subjects, 2 sampler steps")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subjects = 3
    configure_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bids-jdam-error-model-"))
    bids_dir = work / "phantom"
    synthesizer = Synthesizer(load_model(args.model, bids_dir, "cpu"), "cpu")
    model = synthesizer.model
    if model.healthy_reference is None or not model.method.has_regression_mean:
        parser.error(f"{args.model}: the model needs a healthy-control reference and a method with a regression mean")
    spacing = model.cfg.grid.spacing_mm
    if not bids_dir.exists():
        generate_phantom_dataset(bids_dir, args.subjects, CALIBRATION_SEED, fast=True, grid_spacing_mm=spacing)
    cases = syntheses(synthesizer, bids_dir, work, 2 if args.smoke else None)
    variants = {
        "image": FEATURES,
        "image + healthy reference": FEATURES + HEALTHY_FEATURES,
        "image + healthy reference + planes": FEATURES + HEALTHY_FEATURES + VIEW_FEATURES,
    }
    report = {
        "command": command_line("benchmarks.error_model_selection", argv),
        "machine": machine_info(threads=args.threads),
        "model_sha256": model.sha256,
        "seed": CALIBRATION_SEED,
        "phantom_version": PHANTOM_VERSION,
        "subjects": len(cases),
        "variants": {
            name: held_out_scores(cases, spacing, model.healthy_reference, names) for name, names in variants.items()
        },
    }
    write_results(args.results, "error-model-selection", report, markdown(report))
    return 0


def _summary(values: list[float], meets=None) -> str:
    """Mean (range; how many meet the goal, where there is one)."""
    met = "" if meets is None else f"; {sum(map(meets, values))}/{len(values)}"
    return f"{np.mean(values):.3f} ({min(values):.2f}-{max(values):.2f}{met})"


def markdown(report: dict) -> str:
    goals = [*RANKING_GOALS, ("fifths", FIFTH_COVERAGE, FIFTHS_WORDS)]
    lines = [
        *markdown_head(
            "Single-sample SD model: image features, + healthy reference, + the planes' regression means", report
        ),
        f"Phantom seed {report['seed']}, {report['subjects']} subjects through the app's preprocessing and a default "
        "synthesis; each subject held out in turn, each SD model fitted on the others. Cells: mean over held-out "
        "subjects (range; subjects meeting the goal). Goals: " + "; ".join(words for _, _, words in goals) + ". "
        "Widths made right: the map's CRPS ratio with each twentieth of its ranking given that twentieth's RMSE on the "
        "held-out image, what its ranking alone allows; oracle: the image's own smoothed local error (no goals).",
        "",
        "| SD model | reference | "
        + " | ".join(key for key, _, _ in goals)
        + " | coverage per SD fifth, mean over subjects | CRPS / constant band, widths made right "
        "| oracle CRPS / constant band |",
        "|---|---|" + "---|" * (len(goals) + 3),
    ]
    for name, variant in report["variants"].items():
        rows = variant["subjects"]
        for ref in REFERENCES:
            scores = [row[ref] for row in rows]
            cells = [_summary([s[key] for s in scores], meets) for key, meets, _ in RANKING_GOALS]
            fifths = [all(FIFTH_COVERAGE(f["coverage"]) for f in s["reliability"]) for s in scores]
            cells.append(f"{sum(fifths)}/{len(fifths)}")
            by_fifth = np.mean([[f["coverage"] for f in s["reliability"]] for s in scores], axis=0)
            cells.append(", ".join(f"{c:.3f}" for c in by_fifth))
            for key in ("recalibrated_crps_over_constant_band", "oracle_crps_over_constant_band"):
                cells.append(_summary([s[key] for s in scores]))
            lines.append(f"| {name} | {ref} | " + " | ".join(cells) + " |")
    lines += overall_table(report)
    lines += ["", "Figures on phantoms are upper bounds for real data."]
    return "\n".join(lines) + "\n"


def overall_table(report: dict) -> list[str]:
    """Each SD model's held-out maps scored over all subjects' voxels together (the goals stated overall)."""
    lines = [
        "",
        "The same held-out maps over all subjects' voxels together: 90 % coverage, its range over the SD fifths of "
        "the pooled ranking, RMSE top / bottom fifth, AUSE, and CRPS against one constant band for all subjects; "
        "beside it the CRPS ratio with the widths made right on the pooled ranking and the oracle of each subject's "
        "own smoothed error (no goals).",
        "",
        "| SD model | reference | coverage_90 | coverage per SD fifth | rmse_top_over_bottom_fifth | ause_relative "
        "| crps_over_constant_band | widths made right | oracle |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, variant in report["variants"].items():
        for ref in REFERENCES:
            o = variant["overall"][ref]
            fifths = [row["coverage"] for row in o["reliability"]]
            lines.append(
                f"| {name} | {ref} | {o['coverage_90']:.3f} | {min(fifths):.3f}-{max(fifths):.3f} | "
                f"{o['rmse_top_over_bottom_fifth']:.3f} | {o['ause_relative']:.3f} | "
                f"{o['crps_over_constant_band']:.3f} | {o['recalibrated_crps_over_constant_band']:.3f} | "
                f"{o['oracle_crps_over_constant_band']:.3f} |"
            )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
