"""Learning curves on the phantom: held-out PSNR/SSIM against CPU training time, per method.

Trains, under the same CPU budget each, the default residual JDAM, JDAM with the paper's parameterization, JDAM with
the preconditioned denoiser, and the L1 regression U-Net of the same size (``VARIANTS``: registry methods, some with
a configuration change); evaluates each (the weights its model directory would store) on held-out subjects at
several points in time, the diffusion methods with the paper's PC sampler and with EDM's Heun sampler (temperature
1). By default (``--input participant``) every subject's raw T1w goes through the app's own preprocessing (N4,
HD-BET, registration; ``benchmarks.quality_data.load_participant_subjects``, cached under ``--work``) and the target
is the noise-free template-space PET truth, so the curves are those of the input users' runs give the model;
``--input template`` trains and scores on the phantom's ideal template-space truth T1w instead (what
``bids-jdam-train --phantom-truth`` uses). Training is the app's: the method's trainer from
``bids_jdam.methods.METHODS`` in the one training loop (``bids_jdam.training.loop.fit``), continued with a
larger ``Budget`` for each point; the held-out slices, predictions and metrics are ``bids_jdam.evaluate.validation``'s.
Evaluation time is not counted in the training budget.

The budget is measured in process CPU time divided by the thread count ("minutes on dedicated cores"), not in wall
time, because a shared machine's load would otherwise decide which method gets more steps; wall time is recorded
too. Writes ``learning-curve-<machine>.json`` and ``.md`` to ``--out``.

    python -m benchmarks.learning_curve --minutes 6 --eval-at 2 4 6 --threads 2 --jobs 1
    python -m benchmarks.learning_curve --smoke --out /tmp/lc   # seconds: a tiny phantom, budget and samplers
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from benchmarks.machine import command_line, machine_info, machine_tag, write_text_atomic
from benchmarks.quality_data import load_participant_subjects
from bids_jdam.bids.participants import read_diagnoses
from bids_jdam.config import JDAMConfig, SamplerConfig, small_config
from bids_jdam.data.dataset import PairedSliceDataset, split_subjects
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset
from bids_jdam.diffusion.samplers import network_evaluations
from bids_jdam.evaluate.metrics import SUVR_DATA_RANGE
from bids_jdam.evaluate.validation import evaluate_slices, predict_slices, validation_slices
from bids_jdam.methods import METHODS
from bids_jdam.training.distributed import Ranks
from bids_jdam.training.loop import Budget, fit
from bids_jdam.workflows.training_data import load_phantom_truth_subjects

# result key -> (registry method, SDE settings changed from the configuration's)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "jdam-residual": ("jdam-residual", {}),
    "unet-l1": ("unet-l1", {}),
    "jdam-preconditioned": ("jdam", {"parameterization": "preconditioned"}),
    "jdam-paper": ("jdam", {"parameterization": "paper"}),
}
INPUT_TITLES = {"participant": "T1w through the app's preprocessing", "template": "ideal template-space T1w"}
INPUT_DATA = {
    "participant": "each T1w through the app's N4, HD-BET and registration, as a participant run gives it to the "
    "model; target the noise-free template-space PET truth",
    "template": "the phantom's template-space truth T1w and PET",
}
SMOKE = {
    "subjects": 5,
    "minutes": 0.05,
    "eval_at": [0.02, 0.05],
    "slices_per_subject": 1,
    "pc_steps": 2,
    "heun_steps": 2,
    "batch_size": 4,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes",
        type=float,
        default=6.0,
        help="training budget per method, in CPU minutes per thread (= wall minutes on idle cores)",
    )
    parser.add_argument(
        "--eval-at",
        type=float,
        nargs="+",
        default=[2.0, 4.0, 6.0],
        help="evaluation times (min) before the end of the budget, which is always evaluated",
    )
    parser.add_argument("--subjects", type=int, default=20, help="phantom subjects (20%% held out, by diagnosis)")
    parser.add_argument("--slices-per-subject", type=int, default=4, help="held-out axial slices per subject")
    parser.add_argument("--pc-steps", type=int, default=50, help="N of the PC sampler (M = 1 corrector step)")
    parser.add_argument("--heun-steps", type=int, default=18, help="steps of the Heun sampler")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per method")
    parser.add_argument("--jobs", type=int, default=1, help="methods trained at once (threads x jobs <= cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--input",
        choices=["participant", "template"],
        default="participant",
        help="T1w through the app's preprocessing (default) or the phantom's ideal template-space truth T1w",
    )
    parser.add_argument(
        "--work", type=Path, help="where the phantom and its preprocessing are kept (default: a temporary folder)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--machine", default=machine_tag(), help="machine name used in the result file names")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="check the path in seconds: " + ", ".join(f"{k} {v}" for k, v in SMOKE.items()),
    )
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    return args


def eval_minutes(args: argparse.Namespace) -> list[float]:
    """The budgets evaluated: the ``--eval-at`` times within ``--minutes``, then ``--minutes`` itself."""
    return sorted({t for t in args.eval_at if 0 < t < args.minutes} | {args.minutes})


def samplers(args: argparse.Namespace) -> dict[str, SamplerConfig]:
    return {
        f"pc-{args.pc_steps}": SamplerConfig(
            name="pc", steps=args.pc_steps, snr=0.075, corrector_steps=1, seed=args.seed
        ),
        f"heun-{args.heun_steps}": SamplerConfig(name="heun", steps=args.heun_steps, corrector_steps=0, seed=args.seed),
    }


def variant_config(name: str, base_cfg: JDAMConfig) -> JDAMConfig:
    """The configuration a variant trains with: the method's own settings over the base, then the variant's."""
    method_name, sde_changes = VARIANTS[name]
    cfg = METHODS.named(method_name).configure(base_cfg)
    cfg.sde = dataclasses.replace(cfg.sde, **sde_changes)
    return cfg


def learning_curve(
    name: str, args: argparse.Namespace, base_cfg: JDAMConfig, training: PairedSliceDataset, held_out
) -> list[dict[str, object]]:
    """Train one variant with the app's trainer and loop, a growing CPU budget; evaluate at each requested time."""
    torch.set_num_threads(args.threads)
    method = METHODS.named(VARIANTS[name][0])
    cfg = method.prepare(variant_config(name, base_cfg), training, from_data=True)
    device = torch.device("cpu")
    trainer = method.trainer(cfg, training, device, cfg.train.seed, Ranks())
    points = []
    losses: list[float] = []
    for minutes in eval_minutes(args):
        losses += fit(trainer, Budget(cpu_minutes=minutes * args.threads))
        model = method.as_model(trainer.delivered(), cfg).eval()
        results = {}
        # A deterministic method ignores the sampler (one label, "direct"); its seed only fills the noise keys.
        runs = samplers(args) if method.probabilistic else {"direct": SamplerConfig(seed=args.seed)}
        for label, sampler_cfg in runs.items():
            start = time.perf_counter()
            prediction = predict_slices(method, model, cfg, held_out.mri, held_out.keys, sampler_cfg, device)
            metrics = evaluate_slices(prediction, held_out)
            metrics["seconds"] = round(time.perf_counter() - start, 1)
            if method.probabilistic:
                metrics["network_evaluations"] = network_evaluations(
                    sampler_cfg.name, sampler_cfg.steps, sampler_cfg.corrector_steps
                )
            results[label] = metrics
            print(
                f"{name:20s} {minutes:5g} min {trainer.step:5d} steps {label:8s} "
                f"PSNR {metrics['psnr_db']:6.2f} dB  SSIM {metrics['ssim']:.3f}",
                flush=True,
            )
        recent = losses[-50:]
        points.append(
            {
                "train_minutes": minutes,
                "cpu_seconds": round(trainer.cpu_seconds, 1),
                "wall_seconds": round(trainer.train_seconds, 1),
                "steps": trainer.step,
                "loss_last_50": sum(recent) / len(recent) if recent else None,
                "metrics": results,
            }
        )
    return points


def markdown(report: dict) -> str:
    lines = [
        f"# Learning curves on the phantom ({report['machine']['cores_available']} CPU cores), "
        + INPUT_TITLES[report["settings"].get("input", "template")],
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['platform']}, "
        f"torch {report['machine']['versions']['torch']} "
        f"({report['machine']['torch_threads']} thread(s) per method, {report['machine']['jobs']} method(s) at once), "
        f"{report['machine']['date']}  ",
        f"Data: {report['settings']['train_subjects']} training / {report['settings']['held_out_subjects']} held-out "
        f"phantom subjects (phantom version {report['settings'].get('phantom_version', 1)}; "
        f"{INPUT_DATA[report['settings'].get('input', 'template')]}), 4 mm grid, 64x64 axial slices "
        f"({report['settings']['training_slices']} training slices, "
        f"{report['settings']['held_out_slices']} held-out slices); metrics per bids_jdam.evaluate.metrics "
        f"(SUVR, brain mask, fixed range {report['settings']['suvr_data_range']}). sigma_max = "
        f"{report['settings']['sigma_max']:.2f} (largest distance between training slices).",
        "",
        "| method | sampler (network evaluations) | "
        + " | ".join(f"{m:g} min" for m in report["settings"]["eval_minutes"])
        + " |",
        "|---|---|" + "---|" * len(report["settings"]["eval_minutes"]),
    ]
    for name, points in report["methods"].items():
        for label in points[0]["metrics"]:
            nfe = points[0]["metrics"][label].get("network_evaluations", 1)
            cells = [
                f"{p['metrics'][label]['psnr_db']:.2f} dB / {p['metrics'][label]['ssim']:.3f} ({p['steps']} steps)"
                for p in points
            ]
            lines.append(f"| {name} | {label} ({nfe}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Columns: training budget in CPU minutes per thread (process CPU time / threads; equal to wall minutes on "
        "otherwise idle cores). Cells: PSNR / SSIM on held-out subjects (mean over subjects of the per-slice mean), "
        "Adam steps so far. Evaluation uses the EMA weights and is not counted in the budget. The diffusion methods "
        "draw one sample per slice at temperature 1 (no calibration applies to a model in training).",
        "",
    ]
    if not report["complete"]:
        lines.append("Partial run: the methods missing from the table did not finish.")
    for name, gap in report.get("gap_to_unet_l1_db", {}).items():
        lines.append(f"- {name}: {gap:+.2f} dB PSNR against the L1 U-Net at the end of the budget (best sampler).")
    lines += ["", "Figures on phantoms are upper bounds for real data."]
    return "\n".join(lines) + "\n"


def subject_loader(args: argparse.Namespace, cfg: JDAMConfig, bids_dir: Path, work: Path):
    """``load(subjects)`` for ``--input``: the app's preprocessed T1w (cached in ``work``) or the template truth."""
    if args.input == "template":
        return lambda subjects: load_phantom_truth_subjects(bids_dir, cfg, subjects)
    prep = work / "preprocessed"
    return lambda subjects: load_participant_subjects(bids_dir, cfg, subjects, prep, args.threads * args.jobs)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = command_line("benchmarks.learning_curve", argv)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        bids_dir = work / "phantom"
        if not (bids_dir / "participants.tsv").is_file():
            generate_phantom_dataset(bids_dir, n_subjects=args.subjects, seed=args.seed, fast=True, grid_spacing_mm=4.0)
        cfg = small_config()
        cfg.train.planes = ("axial",)
        cfg.train.batch_size = args.batch_size
        cfg.train.seed = args.seed
        diagnoses = read_diagnoses(bids_dir)
        splits = split_subjects(diagnoses, cfg.train.val_fraction, args.seed)
        load = subject_loader(args, cfg, bids_dir, work)
        training = PairedSliceDataset(
            load(splits["train"]), cfg.train.planes, cfg.grid.slice_size, range_mm=cfg.grid.slice_range_mm
        )
        # The settings JDAM takes from the training data (sigma_max), as every JDAM variant's run takes them.
        recorded = METHODS.named("jdam").prepare(cfg, training, from_data=True)
        held_out = validation_slices(list(load(splits["validation"])), cfg, per_plane=args.slices_per_subject)

        report = {
            "command": command,
            "machine": machine_info(torch_threads=args.threads, jobs=args.jobs),
            "settings": {
                "input": args.input,
                "phantom_version": PHANTOM_VERSION,
                "train_subjects": len(splits["train"]),
                "held_out_subjects": len(splits["validation"]),
                "splits": splits,
                "training_slices": len(training),
                "held_out_slices": len(held_out.keys),
                "eval_minutes": eval_minutes(args),
                "sigma_max": recorded.sde.sigma_max,
                "suvr_data_range": SUVR_DATA_RANGE,
                "config": recorded.to_dict(),
                "samplers": {k: dataclasses.asdict(v) for k, v in samplers(args).items()},
                "variants": {name: {"method": VARIANTS[name][0], "sde": VARIANTS[name][1]} for name in args.methods},
            },
            "methods": {},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        # Fresh interpreters: a forked worker inherits the thread pools the preprocessing started, and can hang.
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(learning_curve, name, args, cfg, training, held_out): name for name in args.methods}
            for future in as_completed(futures):
                report["methods"][futures[future]] = future.result()
                write_report(
                    report, args.out / f"learning-curve-{args.machine}", complete=len(report["methods"]) == len(futures)
                )
    return 0


def write_report(report: dict, stem: Path, complete: bool) -> None:
    """Write the JSON and markdown (after every finished method, so an interrupted run keeps what it measured)."""
    report["methods"] = {name: report["methods"][name] for name in VARIANTS if name in report["methods"]}
    report["complete"] = complete
    if "unet-l1" in report["methods"]:
        baseline = report["methods"]["unet-l1"][-1]["metrics"]["direct"]["psnr_db"]
        report["gap_to_unet_l1_db"] = {
            name: max(m["psnr_db"] for m in points[-1]["metrics"].values()) - baseline
            for name, points in report["methods"].items()
            if name != "unet-l1"
        }
    write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown(report))
    print(f"wrote {stem}.json and .md ({'complete' if complete else 'partial'})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
