"""``bids-jdam-train BIDS_DIR OUT_DIR``: argument parsing only; the work is :mod:`bids_jdam.workflows.train`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bids_jdam.config import JDAMConfig, small_config
from bids_jdam.errors import InputError


def non_negative_minutes(text: str) -> float:
    """An argparse type: minutes >= 0 (0 trains no step and writes the model of the newest checkpoint)."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from bids_jdam.methods import DEFAULT_METHOD, METHODS

    parser = argparse.ArgumentParser(
        prog="bids-jdam-train",
        description="Train a JDAM model (or a baseline) on paired T1w/FDG-PET data into a model directory.",
    )
    parser.add_argument("bids_dir", type=Path, help="the BIDS dataset with T1w and FDG-PET (never written to)")
    parser.add_argument("out_dir", type=Path, help="the model directory to write (weights, config, model card)")
    parser.add_argument(
        "--config", type=Path, metavar="JSON", help='configuration overrides by section, e.g. {"train": {"lr": 1e-4}}'
    )
    parser.add_argument("--small", action="store_true", help="start from the CPU-sized configuration (4 mm, 64x64)")
    parser.add_argument(
        "--phantom-truth",
        action="store_true",
        help="train on the phantom's template-space truth under derivatives/phantom",
    )
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=METHODS.names(),
        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS) + f" (default {DEFAULT_METHOD})",
    )
    parser.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        help="preprocessing cache for raw BIDS pairs and the training slices (default: OUT_DIR/work)",
    )
    parser.add_argument("--pet-rec", metavar="LABEL", help="rec- label of the FDG-PET when a session has several")
    parser.add_argument("--omp-nthreads", type=int, default=2, help="threads for ANTs/ITK, OpenMP and torch")
    parser.add_argument(
        "--parameterization",
        choices=("paper", "preconditioned"),
        help="how the network output becomes the score (default: the configuration's)",
    )
    parser.add_argument(
        "--unconditional",
        dest="method",
        action="store_const",
        const="sde-unconditional",
        help="the same as --method sde-unconditional",
    )
    _budget_options(parser)
    return parser


def _budget_options(parser: argparse.ArgumentParser) -> None:
    """How long to train, where checkpoints go, and what the run prints."""
    parser.add_argument(
        "--max-steps",
        type=int,
        help="stop at this total number of steps (default: the configuration's train.max_steps)",
    )
    parser.add_argument(
        "--minutes",
        type=non_negative_minutes,
        help="stop after this many minutes of training in this run, for every method (0: no step; "
        "the model directory is written from the newest checkpoint with --resume)",
    )
    parser.add_argument("--batch-size", type=int, help="slices per step")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--seed", type=int, help="seed of the split, initialization and noise")
    parser.add_argument("--checkpoint-dir", type=Path, help="where checkpoints go (default: OUT_DIR/checkpoints)")
    parser.add_argument("--fp16-export", action="store_true", help="also write weights-fp16.safetensors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _read_overrides(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        overrides = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read the configuration ({error})") from None
    if not isinstance(overrides, dict):
        raise InputError(f"{path}: expected a JSON object of configuration sections")
    return overrides


def build_config(args: argparse.Namespace, overrides: dict[str, Any]) -> JDAMConfig:
    """The base configuration, then the JSON overrides, then the command-line options."""
    merged = (small_config() if args.small else JDAMConfig()).to_dict()
    for section, values in overrides.items():
        if section not in merged or not isinstance(values, dict):
            raise ValueError(f"unknown configuration section {section!r}")
        merged[section].update(values)
    cfg = JDAMConfig.from_dict(merged)
    if args.parameterization:
        cfg.sde.parameterization = args.parameterization
    if args.batch_size:
        cfg.train.batch_size = args.batch_size
    if args.seed is not None:
        cfg.train.seed = args.seed
    return cfg


def build_run(args: argparse.Namespace, overrides: dict[str, Any]):
    """The typed training run of the command line (everything but the model's configuration)."""
    from bids_jdam.data.phantom import is_phantom_dataset
    from bids_jdam.methods.model_dir import PHANTOM_DATA
    from bids_jdam.training.loop import Budget
    from bids_jdam.workflows.train import TrainingRun
    from bids_jdam.workflows.training_data import load_phantom_truth_subjects, preprocessed_pairs_loader

    work_dir = args.work_dir or args.out_dir / "work"
    if args.phantom_truth:
        loader = load_phantom_truth_subjects
    else:
        loader = preprocessed_pairs_loader(work_dir, args.omp_nthreads, args.pet_rec)
    return TrainingRun(
        bids_dir=args.bids_dir,
        out_dir=args.out_dir,
        method=args.method,
        load_subjects=loader,
        trained_on=PHANTOM_DATA if is_phantom_dataset(args.bids_dir) else f"BIDS dataset {args.bids_dir.name}",
        budget=Budget(max_steps=args.max_steps, minutes=args.minutes),
        resume=args.resume,
        device=args.device,
        checkpoint_dir=args.checkpoint_dir,
        work_dir=work_dir,
        sigma_max_from_data="sigma_max" not in overrides.get("sde", {}),
        fp16_export=args.fp16_export,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = f"[rank {os.environ.get('RANK')}] " if os.environ.get("WORLD_SIZE", "1") != "1" else ""  # under torchrun
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        stream=sys.stderr,
        format=f"%(asctime)s {rank}%(name)s %(levelname)s: %(message)s",
    )
    try:
        overrides = _read_overrides(args.config)
        cfg = build_config(args, overrides)
        from bids_jdam.runtime.threads import configure_threads
        from bids_jdam.workflows.train import train_model

        configure_threads(args.omp_nthreads)
        model_dir = train_model(build_run(args, overrides), cfg)
    except (InputError, ValueError) as error:
        print(f"bids-jdam-train: error: {error}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":
        print(f"model written to {model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
