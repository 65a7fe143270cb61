"""Learning curves on the phantom: held-out PSNR/SSIM against CPU training time, per method.

Trains, under the same wall-clock budget each, JDAM with the paper's parameterization, JDAM with the preconditioned
denoiser, and the L1 regression U-Net of the same size; evaluates each (EMA weights) on held-out subjects at
several points in time, JDAM with the paper's PC sampler and with EDM's Heun sampler. Evaluation time is not
counted in the training budget.

The budget is measured in process CPU time divided by the thread count ("minutes on dedicated cores"), not in wall
time, because a shared machine's load would otherwise decide which method gets more steps; wall time is recorded
too. Writes ``learning-curve-<machine>.json`` and ``.md`` to ``--out``.

    python benchmarks/learning_curve.py --minutes 6 --eval-at 2 4 6 --threads 2 --jobs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, write_text_atomic  # noqa: E402

from bids_jdam.config import SamplerConfig, small_config
from bids_jdam.data.dataset import PairedSliceDataset, split_subjects
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.diffusion.samplers import network_evaluations
from bids_jdam.workflows.train import (
    Trainer,
    evaluate_slices,
    load_phantom_truth_subjects,
    predict_slices,
    prepare_config,
    read_diagnoses,
    validation_slices,
)

METHODS = {  # result key -> (method, parameterization)
    "unet-l1": ("unet-l1", None),
    "jdam-preconditioned": ("jdam", "preconditioned"),
    "jdam-paper": ("jdam", "paper"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0,
                        help="training budget per method, in CPU minutes per thread (= wall minutes on idle cores)")
    parser.add_argument("--eval-at", type=float, nargs="+", default=[2.0, 4.0, 6.0], help="evaluation times (min)")
    parser.add_argument("--subjects", type=int, default=20, help="phantom subjects (20%% held out, by diagnosis)")
    parser.add_argument("--slices-per-subject", type=int, default=4, help="held-out axial slices per subject")
    parser.add_argument("--pc-steps", type=int, default=50, help="N of the PC sampler (M = 1 corrector step)")
    parser.add_argument("--heun-steps", type=int, default=18, help="steps of the Heun sampler")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per method")
    parser.add_argument("--jobs", type=int, default=1, help="methods trained at once (threads x jobs <= cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--work", type=Path, help="where the phantom is generated (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--machine", default=f"{platform.machine()}-{os.cpu_count()}cpu",
                        help="machine name used in the result file names")
    return parser.parse_args(argv)


def samplers(args: argparse.Namespace) -> dict[str, SamplerConfig]:
    return {
        f"pc-{args.pc_steps}": SamplerConfig(name="pc", steps=args.pc_steps, snr=0.075, corrector_steps=1, seed=args.seed),
        f"heun-{args.heun_steps}": SamplerConfig(name="heun", steps=args.heun_steps, corrector_steps=0, seed=args.seed),
    }


def learning_curve(name: str, args: argparse.Namespace, base_cfg, training, held_out) -> list[dict[str, object]]:
    """Train one method for the budget; evaluate at each requested time."""
    torch.set_num_threads(args.threads)
    method, parameterization = METHODS[name]
    cfg = dataclasses.replace(base_cfg, sde=dataclasses.replace(base_cfg.sde, parameterization=parameterization or "preconditioned"))
    device = torch.device("cpu")
    trainer = Trainer(cfg, method, training, device, args.seed)
    points = []
    losses: list[float] = []
    cpu_seconds = 0.0
    for minutes in sorted(args.eval_at):
        while cpu_seconds < minutes * 60 * args.threads:
            start = time.process_time()
            losses.append(trainer.train_step())
            cpu_seconds += time.process_time() - start
        model = trainer.ema_model()
        results = {}
        for label, sampler_cfg in (samplers(args) if method == "jdam" else {"direct": None}).items():
            start = time.perf_counter()
            prediction = predict_slices(model, method, cfg, held_out.mri, held_out.keys, sampler_cfg, device)
            metrics = evaluate_slices(prediction, held_out)
            metrics["seconds"] = round(time.perf_counter() - start, 1)
            if sampler_cfg is not None:
                metrics["network_evaluations"] = network_evaluations(sampler_cfg.name, sampler_cfg.steps, sampler_cfg.corrector_steps)
            results[label] = metrics
            print(f"{name:20s} {minutes:5g} min {trainer.step:5d} steps {label:8s} "
                  f"PSNR {metrics['psnr_db']:6.2f} dB  SSIM {metrics['ssim']:.3f}", flush=True)
        recent = losses[-50:]
        points.append({"train_minutes": minutes, "cpu_seconds": round(cpu_seconds, 1),
                       "wall_seconds": round(trainer.train_seconds, 1), "steps": trainer.step,
                       "loss_last_50": sum(recent) / len(recent), "metrics": results})
    return points


def markdown(report: dict) -> str:
    lines = [
        f"# Learning curves on the phantom ({report['machine']['cores_available']} CPU cores)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['platform']}, torch {report['machine']['versions']['torch']} "
        f"({report['machine']['torch_threads']} thread(s) per method, {report['machine']['jobs']} method(s) at once), "
        f"{report['machine']['date']}  ",
        f"Data: {report['settings']['train_subjects']} training / {report['settings']['held_out_subjects']} held-out "
        f"phantom subjects, 4 mm grid, 64x64 axial slices ({report['settings']['training_slices']} training slices, "
        f"{report['settings']['held_out_slices']} held-out slices); metrics per bids_jdam.evaluate.metrics "
        f"(SUVR, brain mask, fixed range {report['settings']['suvr_data_range']}). sigma_max = "
        f"{report['settings']['sigma_max']:.2f} (largest distance between training slices).",
        "",
        "| method | sampler (network evaluations) | " + " | ".join(
            f"{m:g} min" for m in report["settings"]["eval_minutes"]) + " |",
        "|---|---|" + "---|" * len(report["settings"]["eval_minutes"]),
    ]
    for name, points in report["methods"].items():
        for label in points[0]["metrics"]:
            nfe = points[0]["metrics"][label].get("network_evaluations", 1)
            cells = [f"{p['metrics'][label]['psnr_db']:.2f} dB / {p['metrics'][label]['ssim']:.3f} ({p['steps']} steps)"
                     for p in points]
            lines.append(f"| {name} | {label} ({nfe}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Columns: training budget in CPU minutes per thread (process CPU time / threads; equal to wall minutes on "
        "otherwise idle cores). Cells: PSNR / SSIM on held-out subjects (mean over subjects of the per-slice mean), "
        "Adam steps so far. Evaluation uses the EMA weights and is not counted in the budget.",
        "",
    ]
    if not report["complete"]:
        lines.append("Partial run: the methods missing from the table did not finish.")
    for name, gap in report.get("gap_to_unet_l1_db", {}).items():
        lines.append(f"- {name}: {gap:+.2f} dB PSNR against the L1 U-Net at the end of the budget (best sampler).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
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
        training = PairedSliceDataset(load_phantom_truth_subjects(bids_dir, cfg, splits["train"]), cfg.train.planes,
                                      cfg.grid.slice_size)
        cfg = prepare_config(cfg, training, sigma_max_from_training=True)
        held_out = validation_slices(load_phantom_truth_subjects(bids_dir, cfg, splits["validation"]), cfg,
                                     per_plane=args.slices_per_subject)
        from bids_jdam.evaluate.metrics import SUVR_DATA_RANGE

        report = {
            "command": command,
            "machine": machine_info(torch_threads=args.threads, jobs=args.jobs),
            "settings": {
                "train_subjects": len(splits["train"]), "held_out_subjects": len(splits["validation"]),
                "splits": splits, "training_slices": len(training), "held_out_slices": len(held_out.keys),
                "eval_minutes": sorted(args.eval_at), "sigma_max": cfg.sde.sigma_max,
                "suvr_data_range": SUVR_DATA_RANGE, "config": cfg.to_dict(),
                "samplers": {k: dataclasses.asdict(v) for k, v in samplers(args).items()},
            },
            "methods": {},
        }
        args.out.mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(learning_curve, name, args, cfg, training, held_out): name for name in args.methods}
            for future in as_completed(futures):
                report["methods"][futures[future]] = future.result()
                write_report(report, args.out / f"learning-curve-{args.machine}", complete=len(report["methods"]) == len(futures))
    return 0


def write_report(report: dict, stem: Path, complete: bool) -> None:
    """Write the JSON and markdown (after every finished method, so an interrupted run keeps what it measured)."""
    report["methods"] = {name: report["methods"][name] for name in METHODS if name in report["methods"]}
    report["complete"] = complete
    if "unet-l1" in report["methods"]:
        baseline = report["methods"]["unet-l1"][-1]["metrics"]["direct"]["psnr_db"]
        report["gap_to_unet_l1_db"] = {
            name: max(m["psnr_db"] for m in points[-1]["metrics"].values()) - baseline
            for name, points in report["methods"].items() if name != "unet-l1"
        }
    write_text_atomic(stem.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(stem.with_suffix(".md"), markdown(report))
    print(f"wrote {stem}.json and .md ({'complete' if complete else 'partial'})", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
