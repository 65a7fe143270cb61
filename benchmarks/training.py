"""Training at cohort scale on CPU: speed on 1 and 2 processes, and peak memory against the number of subjects.

Every run is ``bids-jdam-train`` as users start it (the default method, the CPU-sized configuration, the phantom's
template-space truth: the preprocessing is cached per image and adds nothing to a step), one thread per process:
- speed: ``torchrun --nproc_per_node P`` on one cohort, seconds per step in the second half of the run (after the
  warm-up) from the model card's training curve; weak scaling (the same slices per process: per-process time should
  stay flat) and strong scaling (the same global batch split in two);
- memory: one process per cohort size (fast phantoms), its peak resident set over the whole run (loading, the slice
  store, training, validation and calibration on two held-out subjects), reported by the process itself.
The model's sampler is cut to a few steps so that validating and calibrating each run take seconds; training is
what is measured. With ``--device cuda`` (``make benchmark-gpu``) it is one process with the paper-size network on
2 mm phantoms, speed only.

    python -m benchmarks.training                 # 8, 32 and 128 subjects; about 20 minutes on 2 cores
    python -m benchmarks.training --device cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.machine import command_line, machine_info, markdown_head, write_results
from bids_jdam.data.phantom import PHANTOM_VERSION, generate_phantom_dataset

RESULTS_DIR = Path(__file__).parent / "results"
# Runs the training command line in this process and prints the process's own peak resident set (Linux: KiB).
PEAK_PROBE = (
    "import resource, sys\n"
    "from bids_jdam.cli.train import main\n"
    "code = main(sys.argv[1:])\n"
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "raise SystemExit(code)\n"
)
CHEAP_SAMPLER = {"name": "heun", "steps": 3, "corrector_steps": 0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs="+", default=[8, 32, 128], help="cohort sizes for memory")
    parser.add_argument("--speed-subjects", type=int, default=32, help="cohort of the speed runs")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (speed: the second half)")
    parser.add_argument("--batch-per-process", type=int, default=8, help="slices per step and process")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: one process, the paper-size network on 2 mm phantoms, speed only",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def train_command(bids_dir: Path, out_dir: Path, config: Path, args: argparse.Namespace, batch: int) -> list[str]:
    size = ["--small"] if args.device == "cpu" else []
    return [
        str(bids_dir),
        str(out_dir),
        "--phantom-truth",
        *size,
        "--config",
        str(config),
        "--device",
        args.device,
        "--no-progress",
        "--omp-nthreads",
        "1",
        "--max-steps",
        str(args.steps),
        "--batch-size",
        str(batch),
    ]


def write_config(path: Path, subjects: int, steps: int) -> Path:
    """Two held-out subjects whatever the cohort, a checkpoint at half-time (the speed's start), a cheap sampler."""
    path.write_text(
        json.dumps(
            {
                "sampler": CHEAP_SAMPLER,
                "train": {"val_fraction": min(0.5, 2 / subjects), "checkpoint_every": steps // 2},
            }
        )
    )
    return path


def run(command: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed:\n{result.stderr[-3000:]}")
    return result.stdout


def steady_seconds_per_step(card: dict) -> float:
    """Seconds per step between the half-time checkpoint and the end (rank 0's clock)."""
    first, last = card["training_curve"][-2], card["training_curve"][-1]
    return (last["train_seconds"] - first["train_seconds"]) / (last["step"] - first["step"])


def memory_run(bids_dir: Path, subjects: int, scratch: Path, args: argparse.Namespace) -> dict:
    out = scratch / f"memory-{subjects}"
    config = write_config(scratch / f"memory-{subjects}.json", subjects, args.steps)
    start = time.perf_counter()
    stdout = run(
        [sys.executable, "-c", PEAK_PROBE, *train_command(bids_dir, out, config, args, args.batch_per_process)]
    )
    peak_kib = int(next(line.split()[1] for line in stdout.splitlines() if line.startswith("PEAK_RSS_KIB")))
    card = json.loads((out / "model_card.json").read_text())
    return {
        "subjects": subjects,
        "training_subjects": len(card["training_data"]["subjects"]["train"]),
        "training_slices": card["training_data"]["n_training_slices"],
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "seconds_per_step": round(steady_seconds_per_step(card), 4),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }


def speed_run(
    bids_dir: Path, subjects: int, processes: int, batch: int, scratch: Path, args: argparse.Namespace
) -> dict:
    out = scratch / f"speed-{processes}x{batch}"
    config = write_config(scratch / f"speed-{processes}x{batch}.json", subjects, args.steps)
    run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "bids_jdam.cli.train",
            *train_command(bids_dir, out, config, args, batch),
        ]
    )
    card = json.loads((out / "model_card.json").read_text())
    seconds = steady_seconds_per_step(card)
    return {
        "processes": card["processes"],
        "global_batch": batch,
        "slices_per_process": batch // processes,
        "seconds_per_step": round(seconds, 4),
        "slices_per_second": round(batch / seconds, 2),
    }


def scaling(speed: list[dict]) -> dict | None:
    """Per-process step time on 2 processes over 1 at the same slices per process (1.0: no communication cost),
    and the speed-up of the same global batch split in two (None with one process only)."""
    if len(speed) < 3:
        return None
    by = {(r["processes"], r["global_batch"]): r["seconds_per_step"] for r in speed}
    one = min(b for p, b in by if p == 1)
    return {
        "weak_step_time_ratio": round(by[(2, 2 * one)] / by[(1, one)], 3),
        "strong_speedup": round(by[(1, one)] / by[(2, one)], 3),
    }


def markdown(report: dict) -> str:
    size = "`--small` configuration" if report["device"] == "cpu" else "paper-size network, 2 mm phantoms"
    lines = markdown_head(f"Training at cohort scale ({report['device']})", report)
    lines += [
        "",
        f"Default method (`jdam-residual`), {size}, phantom template-space truth, one thread "
        "per process; seconds per step after the warm-up (second half of each run).",
        "",
        "| processes | global batch | slices per process | s per step | slices per s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['processes']} | {r['global_batch']} | {r['slices_per_process']} | {r['seconds_per_step']} | "
        f"{r['slices_per_second']} |"
        for r in report["speed"]
    ]
    s = report["scaling"]
    if s is None:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"Two processes at the same slices per process take {s['weak_step_time_ratio']} x the one-process "
        f"step time (goal: within 1.2); the same global batch on two processes runs {s['strong_speedup']} x "
        "faster.",
        "",
        "| subjects | training subjects | training slices | peak memory (MiB) | s per step | run (s) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['subjects']} | {r['training_subjects']} | {r['training_slices']} | {r['peak_rss_mib']} | "
        f"{r['seconds_per_step']} | {r['wall_seconds']} |"
        for r in report["memory"]
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = args.device == "cpu"
    cohorts = sorted(set(args.subjects) | {args.speed_subjects}) if cpu else [args.speed_subjects]
    batch = args.batch_per_process
    runs = ((1, batch), (2, batch), (2, 2 * batch)) if cpu else ((1, batch),)
    with tempfile.TemporaryDirectory(prefix="bids-jdam-training-") as folder:
        scratch = Path(folder)
        datasets = {
            n: generate_phantom_dataset(
                scratch / f"phantom-{n}", n, args.seed, fast=cpu, grid_spacing_mm=4.0 if cpu else 2.0
            )
            for n in cohorts
        }
        memory = [memory_run(datasets[n], n, scratch, args) for n in sorted(args.subjects)] if cpu else []
        speed = [
            speed_run(datasets[args.speed_subjects], args.speed_subjects, processes, global_batch, scratch, args)
            for processes, global_batch in runs
        ]
    report = {
        "command": command_line("benchmarks.training", argv),
        "machine": machine_info(),
        "device": args.device,
        "phantom_version": PHANTOM_VERSION,
        "steps": args.steps,
        "speed_subjects": args.speed_subjects,
        "speed": speed,
        "scaling": scaling(speed),
        "memory": memory,
    }
    write_results(args.results_dir, "training", report, markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
