"""Where is quality lost between the model and its user? Held-out phantoms taken along the app's path step by step.

    python -m benchmarks.attribution [--model demo|DIR] [--subjects 4] [--field-strengths 3 7] [--threads 2]
                                     [--work DIR] [--results DIR] [--smoke]

For each held-out subject (fast phantoms of a seed no model saw, at each field strength), the same synthesis (the
app's ``Synthesizer`` with the model's default sampler, one plane, K = 1: the default run; the same noise key in
every step) from four T1w inputs on the model grid, each scaled as the app scales a T1w:
1. ``ideal``: the phantom's template-space truth T1w and brain mask (no noise, no bias, exact anatomy);
2. ``acquired_true_transform``: the raw T1w (the field strength's noise, bias and contrast) placed by the
   phantom's true transform, with the true brain mask (no N4, no skull-strip);
3. ``app_t1w_true_transform``: the app's N4-corrected, skull-stripped T1w and its brain mask, placed by the true
   transform (what N4 and HD-BET give, with an ideal registration);
4. ``participant``: the app's T1w on the model grid by its own registration: what ``bids-jdam participant`` feeds
   the model (its template-space output).
Each is scored in the truth's brain mask against the noise-free truth SUVR and against the real PET as the app
preprocesses it (and the real PET against the truth: the ceiling its noise sets), overall and in the cortex (truth
GM >= 0.5), the white matter (WM >= 0.5) and the brain's edge (the mask's outer voxel layer). The participant
output is also scored in the subject's T1w space, against the real PET co-registered to the T1w
(``preprocess.pipeline.pet_in_t1w_space``), inside the app's native brain mask. ``--smoke``: one subject at 3T, two
sampler steps. Writes ``<results>/attribution-<machine>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from benchmarks.quality_data import acquired_t1w_in_template, scanner_image_in_template
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset, phantom_truth
from bids_jdam.data.phantom.writer import Layout, raw_names
from bids_jdam.evaluate.metrics import image_quality
from bids_jdam.preprocess.intensity import scale_t1w
from bids_jdam.preprocess.pipeline import pet_in_t1w_space, preprocess_pair, to_native
from bids_jdam.runtime.threads import configure_threads
from bids_jdam.synthesis.loaded_model import load_model
from bids_jdam.synthesis.synthesizer import Synthesizer

HELD_OUT_SEED = 777  # the synthesis benchmark's subjects
STEPS = ("ideal", "acquired_true_transform", "app_t1w_true_transform", "participant")
MAX_LOSS_DB = 1.0  # the goal: the participant run at most this far below ideal input (noise-free truth, brain)
MAX_FIELD_STRENGTH_GAP_DB = 1.0  # the goal: 7T-like input within this of 3T-like on the participant path
RESULTS = Path(__file__).resolve().parent / "results"


def load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))


def step_inputs(bids_dir: Path, subject: str, prep, cfg) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(T1w, brain mask) on the model grid at each step of the path."""
    truth = phantom_truth(bids_dir, subject)
    spacing, percentile = cfg.grid.spacing_mm, cfg.intensity.t1_percentile
    true_mask = load(truth.brain_mask) > 0.5
    native_mask = nib.load(str(prep.brain_mask_native))
    app_mask = scanner_image_in_template(native_mask, bids_dir, subject, spacing, order=0) > 0.5
    n4_brain = nib.Nifti1Image(load(prep.t1w_n4) * (np.asarray(native_mask.dataobj) > 0), native_mask.affine)
    steps = {
        "ideal": (load(truth.t1w), true_mask),
        "acquired_true_transform": (acquired_t1w_in_template(bids_dir, subject, spacing), true_mask),
        "app_t1w_true_transform": (scanner_image_in_template(n4_brain, bids_dir, subject, spacing), app_mask),
    }
    scaled = {name: (scale_t1w(t1 * mask, mask, percentile)[0], mask) for name, (t1, mask) in steps.items()}
    scaled["participant"] = (load(prep.t1w_model), load(prep.brain_mask_model) > 0.5)
    return scaled


def regions(bids_dir: Path, subject: str) -> dict[str, np.ndarray]:
    """The truth's brain mask and its cortex, white matter and outer layer."""
    truth = phantom_truth(bids_dir, subject)
    brain = load(truth.brain_mask) > 0.5
    return {
        "brain": brain,
        "cortex": brain & (load(truth.gm_probseg) >= 0.5),
        "white_matter": brain & (load(truth.wm_probseg) >= 0.5),
        "edge": brain & ~ndimage.binary_erosion(brain),
    }


def scores(prediction: np.ndarray, references: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """PSNR and MAE of ``prediction`` against each reference in each region."""
    return {
        ref: {
            region: {k: v for k, v in image_quality(prediction, image, mask).items() if k in ("psnr_db", "mae_suvr")}
            for region, mask in masks.items()
        }
        for ref, image in references.items()
    }


def native_scores(synthetic: np.ndarray, prep, template_affine: np.ndarray, work: Path) -> dict:
    """The participant output in the subject's T1w space against the real PET co-registered to it."""
    work.mkdir(parents=True, exist_ok=True)
    template_image = work / "synthetic_template.nii.gz"
    nib.save(nib.Nifti1Image(synthetic, template_affine), str(template_image))
    native = nib.as_closest_canonical(nib.load(str(to_native(template_image, prep, work / "synthetic_native.nii.gz"))))
    real = load(pet_in_t1w_space(prep, work / "real_native.nii.gz"))
    mask = load(prep.brain_mask_native) > 0.5
    quality = image_quality(native.get_fdata(dtype=np.float32), real, mask)
    return {k: v for k, v in quality.items() if k in ("psnr_db", "mae_suvr")}


def run_subject(
    synthesizer: Synthesizer, bids_dir: Path, subject: str, work: Path, threads: int, steps: int | None
) -> dict:
    """Every step of the path for one subject, scored."""
    cfg = synthesizer.model.cfg
    names = raw_names(Layout("bids"), subject, None)
    prep = preprocess_pair(
        bids_dir / names["t1w"],
        bids_dir / names["pet"],
        work / f"sub-{subject}",
        cfg,
        subject_label=subject,
        nthreads=threads,
    )
    truth_suvr = load(phantom_truth(bids_dir, subject).pet_suvr)
    references = {"noise_free_truth": truth_suvr, "real_pet": load(prep.pet_suvr_model)}
    masks = regions(bids_dir, subject)
    sampler = cfg.sampler if steps is None else dataclasses.replace(cfg.sampler, steps=steps)
    row = {
        "subject": subject,
        "steps": {},
        "ceiling_real_vs_truth": scores(references["real_pet"], {"noise_free_truth": truth_suvr}, masks),
    }
    for name, (t1, mask) in step_inputs(bids_dir, subject, prep, cfg).items():
        result = synthesizer.synthesize(t1, mask, sampler, image=f"sub-{subject}", planes=("axial",))
        row["steps"][name] = scores(result.mean, references, masks)
        if name == "participant":
            affine = nib.load(str(prep.t1w_model)).affine
            row["native_space_vs_real_pet"] = native_scores(result.mean, prep, affine, work / f"native-{subject}")
    return row


def summarise(rows: list[dict]) -> dict:
    """Mean PSNR/MAE per step and reference (brain and regions), and the loss from one step to the next."""
    summary = {}
    for ref in ("noise_free_truth", "real_pet"):
        means = {
            step: {
                region: {
                    metric: float(np.mean([r["steps"][step][ref][region][metric] for r in rows]))
                    for metric in ("psnr_db", "mae_suvr")
                }
                for region in rows[0]["steps"][step][ref]
            }
            for step in STEPS
        }
        losses = {
            f"{a} -> {b}": means[a]["brain"]["psnr_db"] - means[b]["brain"]["psnr_db"] for a, b in zip(STEPS, STEPS[1:])
        }
        summary[ref] = {
            "mean": means,
            "psnr_lost_db": losses,
            "ideal_minus_participant_db": means["ideal"]["brain"]["psnr_db"] - means["participant"]["brain"]["psnr_db"],
        }
    summary["ceiling_real_vs_truth_psnr_db"] = float(
        np.mean([r["ceiling_real_vs_truth"]["noise_free_truth"]["brain"]["psnr_db"] for r in rows])
    )
    summary["native_space_vs_real_pet_psnr_db"] = float(
        np.mean([r["native_space_vs_real_pet"]["psnr_db"] for r in rows])
    )
    return summary


def markdown(report: dict) -> str:
    lines = markdown_head("Where quality is lost along the app's path", report) + [
        "",
        f"Model: {report['model']} (sha256 {report['model_sha256'][:12]}), phantom version "
        f"{report['phantom_version']}, seed {report['held_out_seed']}, one plane, K = 1 (the default run).",
        "",
    ]
    for strength, block in report["field_strengths"].items():
        s = block["summary"]
        lines += [
            f"## {strength} T ({len(block['subjects'])} subjects)",
            "",
            f"Real PET against the noise-free truth (the ceiling its noise sets): "
            f"{s['ceiling_real_vs_truth_psnr_db']:.2f} dB. Participant output in T1w space against the real PET "
            f"co-registered to the T1w: {s['native_space_vs_real_pet_psnr_db']:.2f} dB.",
            "",
            "| step | reference | PSNR brain | PSNR cortex | PSNR WM | PSNR edge | MAE brain |",
            "|---|---|---|---|---|---|---|",
        ]
        for step in STEPS:
            for ref in ("noise_free_truth", "real_pet"):
                m = s[ref]["mean"][step]
                lines.append(
                    f"| {step} | {ref} | {m['brain']['psnr_db']:.2f} | {m['cortex']['psnr_db']:.2f} | "
                    f"{m['white_matter']['psnr_db']:.2f} | {m['edge']['psnr_db']:.2f} | "
                    f"{m['brain']['mae_suvr']:.4f} |"
                )
        lines += [
            "",
            "PSNR lost at each step (brain, dB): "
            + "; ".join(
                f"{k}: {v:+.2f} (truth) / {s['real_pet']['psnr_lost_db'][k]:+.2f} (real PET)"
                for k, v in s["noise_free_truth"]["psnr_lost_db"].items()
            ),
            "",
        ]
    return "\n".join(lines + goal_lines(report)) + "\n"


def goal_lines(report: dict) -> list[str]:
    """Each goal with the measured figure, and by how much it is met or missed."""
    lines = ["## Goals", ""]
    participant = {}
    for strength, block in report["field_strengths"].items():
        truth = block["summary"]["noise_free_truth"]
        loss = truth["ideal_minus_participant_db"]
        participant[strength] = truth["mean"]["participant"]["brain"]["psnr_db"]
        verdict = "met" if loss <= MAX_LOSS_DB else f"missed by {loss - MAX_LOSS_DB:.2f} dB"
        worst = max(("cortex", "white_matter", "edge"), key=lambda region: _region_loss(truth, region))
        lines.append(
            f"- {strength} T: the participant run is {loss:.2f} dB below ideal input against the noise-free truth "
            f"(goal at most {MAX_LOSS_DB:g} dB: {verdict}); the region that loses most is the "
            f"{worst.replace('_', ' ')} ({_region_loss(truth, worst):.2f} dB)."
        )
    if {"3", "7"} <= set(participant):
        gap = participant["7"] - participant["3"]
        verdict = (
            "met"
            if abs(gap) <= MAX_FIELD_STRENGTH_GAP_DB
            else f"outside by {abs(gap) - MAX_FIELD_STRENGTH_GAP_DB:.2f} dB"
        )
        lines.append(
            f"- 7 T against 3 T on the participant path: {gap:+.2f} dB (goal within {MAX_FIELD_STRENGTH_GAP_DB:g} dB: "
            f"{verdict})."
        )
    return lines + [""]


def _region_loss(truth: dict, region: str) -> float:
    """Ideal-input PSNR minus the participant run's in ``region`` (noise-free truth)."""
    return truth["mean"]["ideal"][region]["psnr_db"] - truth["mean"]["participant"][region]["psnr_db"]


def rerender(results_json: Path) -> int:
    """Rewrite a results file's markdown from its JSON (after a change to what the markdown shows)."""
    import json

    report = json.loads(Path(results_json).read_text())
    Path(results_json).with_suffix(".md").write_text(markdown(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="'demo' or a model directory")
    parser.add_argument("--subjects", type=int, default=4, help="per field strength")
    parser.add_argument("--field-strengths", type=int, nargs="+", default=[3, 7])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true", help="one subject at 3T, two sampler steps")
    parser.add_argument("--rerender", type=Path, metavar="JSON", help="only rewrite the markdown of a results JSON")
    args = parser.parse_args(argv)
    if args.rerender:
        return rerender(args.rerender)
    if args.smoke:
        args.subjects, args.field_strengths = 1, [3]
    configure_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bids-jdam-attribution-"))
    model = load_model(args.model, work, "cpu")
    synthesizer = Synthesizer(model, "cpu")
    report = {
        "command": command_line("benchmarks.attribution", argv),
        "machine": machine_info(threads=args.threads),
        "model": args.model,
        "model_sha256": model.sha256,
        "phantom_version": PHANTOM_VERSION,
        "held_out_seed": HELD_OUT_SEED,
        "field_strengths": {},
    }
    for strength in args.field_strengths:
        bids_dir = work / f"phantom-{strength}T"
        if not bids_dir.exists():
            generate_phantom_dataset(
                bids_dir,
                args.subjects,
                HELD_OUT_SEED,
                fast=True,
                field_strength=strength,
                grid_spacing_mm=model.cfg.grid.spacing_mm,
            )
        rows = [
            run_subject(
                synthesizer, bids_dir, f"{i:02d}", work / f"prep-{strength}T", args.threads, 2 if args.smoke else None
            )
            for i in range(1, args.subjects + 1)
        ]
        report["field_strengths"][str(strength)] = {"subjects": rows, "summary": summarise(rows)}
    write_results(args.results, "attribution", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
