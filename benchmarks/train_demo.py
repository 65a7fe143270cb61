"""Train (or resume) the demo model on a phantom and package it into ``bids_jdam/models/demo`` as fp16.

    python -m benchmarks.train_demo --work /tmp/demo_train --minutes 60    # repeat with --resume to continue
    python -m benchmarks.train_demo --work /tmp/demo_train --package-only  # package the last trained model

The demo model is the small CPU configuration (4 mm grid, 64x64 slices, ~1.2 M parameters) trained on a 24-subject
phantom (seed 1, all three planes) the way a user's model is trained: the phantom's raw T1w and PET go through the
app's cached preprocessing (``preprocessed_pairs_loader``, the loader of ``bids-jdam-train``), and training runs in
the app's training workflow (``train_model``: the loop, the T1w augmentation, checkpoints, validation and spread
calibration on the held-out validation subjects as preprocessed, and the model card), with ``--method`` (default:
the app's default method). A method's default sampler is kept, except JDAM's: packaging sets it to
``JDAM_SAMPLER``, the ancestral sampler with 18 steps, the fewest evaluations that met the default-sampler rule of
``benchmarks/speed.py``, and trains with it so that the calibration is fitted for it. It is trained on synthetic
phantoms and is not for real patients: its model card says so, and so does every output it makes.

Packaging ends with the healthy-control reference of the training phantom's CN subjects (what ``bids-jdam-train``
records) and ``bids-jdam-calibrate``'s calibration of the packaged (fp16) model on a second, held-out phantom of
24 subjects (seed 2, the same settings): the spread scale, the regional interval, the single-sample SD map and the
AD-pattern interval (which needs 9 or more held-out subjects) are fitted on the weights users run.

The shipped weights are ``--method jdam-residual`` (Heun-18, the method's sampler), made by

    python -m benchmarks.train_demo --work /work/demo_v2 --minutes 50 --max-steps 2500

with OMP_NUM_THREADS=2 on a 2-core Intel Xeon that also ran tests for part of the time (2500 steps in 28.5
minutes); the model card has the steps, the training seconds, the validation figures and the calibrations.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from safetensors.torch import load_file, save_file

from bids_jdam.config import small_config
from bids_jdam.data.phantom import generate_phantom_dataset
from bids_jdam.io import atomic
from bids_jdam.methods import DEFAULT_METHOD, METHODS
from bids_jdam.methods.model_dir import CONFIG, MODEL_CARD, WEIGHTS
from bids_jdam.models.demo import DEMO_MODEL_DIR
from bids_jdam.training.loop import Budget
from bids_jdam.workflows.calibrate import calibrate_model
from bids_jdam.workflows.healthy_reference import record_healthy_reference
from bids_jdam.workflows.train import TrainingRun, train_model
from bids_jdam.workflows.training_data import preprocessed_pairs_loader

PHANTOM = {"subjects": 24, "seed": 1}
CALIBRATION_PHANTOM = {"subjects": 24, "seed": 2}
JDAM_SAMPLER = {"name": "ancestral", "steps": 18, "corrector_steps": 0}
SAMPLER_CHOSEN_BY = {
    "jdam": "benchmarks/speed.py, results/speed-x86_64-amd-epyc-2cpu.md",
    "jdam-residual": "the method's sampler, the one benchmarks/quality.py measures",
}


def train(work: Path, minutes: float, resume: bool, method: str, max_steps: int | None = None) -> Path:
    """The phantom (made once), then ``minutes`` of training into ``WORK/model`` (a validated model directory)."""
    bids_dir = work / "phantom"
    if not bids_dir.exists():
        generate_phantom_dataset(bids_dir, PHANTOM["subjects"], PHANTOM["seed"], fast=True, grid_spacing_mm=4.0)
    cfg = small_config()
    cfg.train.checkpoint_every = 100
    if method == "jdam":  # training calibrates the spread for the sampler the model is packaged with
        cfg.sampler = replace(cfg.sampler, **JDAM_SAMPLER)
    run = TrainingRun(
        bids_dir=bids_dir,
        out_dir=work / "model",
        method=method,
        load_subjects=preprocessed_pairs_loader(work / "preprocessing", nthreads=2),
        budget=Budget(max_steps=max_steps, minutes=minutes),
        resume=resume,
        device="cpu",
    )
    return train_model(run, cfg)


def package(model_dir: Path, target: Path = DEMO_MODEL_DIR) -> None:
    """Copy config (with the default sampler) and card, store the weights as fp16, record checksum and provenance."""
    target.mkdir(parents=True, exist_ok=True)
    weights = {
        name: tensor.half() if tensor.is_floating_point() else tensor
        for name, tensor in load_file(model_dir / WEIGHTS).items()
    }
    atomic.write_with(target / WEIGHTS, lambda temp: save_file(weights, str(temp), metadata={"dtype": "float16"}))
    card = json.loads((model_dir / MODEL_CARD).read_text())
    card["name"] = "bids-jdam-demo"
    card["weights_dtype"] = "float16"
    card["sha256"] = {WEIGHTS: atomic.sha256_file(target / WEIGHTS)}
    card["training_data"]["bids_dir"] = (
        f"bids-jdam-phantom --subjects {PHANTOM['subjects']} "
        f"--seed {PHANTOM['seed']} --fast "
        "(raw T1w and PET through the app's preprocessing)"
    )
    config = json.loads((model_dir / CONFIG).read_text())
    if card["method"] == "jdam":
        config["sampler"].update(JDAM_SAMPLER)
    sampler = {key: config["sampler"][key] for key in ("name", "steps", "corrector_steps")}
    card["default_sampler"] = {**sampler, "chosen_by": SAMPLER_CHOSEN_BY.get(card["method"], "the method's sampler")}
    atomic.write_json(target / MODEL_CARD, card)
    atomic.write_json(target / CONFIG, config)
    print(f"packaged {model_dir} -> {target} ({(target / WEIGHTS).stat().st_size / 1e6:.1f} MB)")


def record_reference(work: Path, target: Path) -> None:
    """The healthy-control reference of the training phantom's CN training subjects, as training records it."""
    card = json.loads((target / MODEL_CARD).read_text())
    healthy = [s for s, diagnosis in card["training_data"]["subjects"]["train"].items() if diagnosis == "CN"]
    volumes = preprocessed_pairs_loader(work / "preprocessing", nthreads=2)(work / "phantom", small_config(), healthy)
    record_healthy_reference(target, volumes, small_config().grid.spacing_mm)


def calibrate_packaged(work: Path, target: Path) -> None:
    """``bids-jdam-calibrate``'s calibrations of the packaged model on every subject of the calibration phantom."""
    bids_dir = work / "calibration-phantom"
    if not bids_dir.exists():
        generate_phantom_dataset(
            bids_dir, CALIBRATION_PHANTOM["subjects"], CALIBRATION_PHANTOM["seed"], fast=True, grid_spacing_mm=4.0
        )
    loader = preprocessed_pairs_loader(work / "calibration-preprocessing", nthreads=2)
    calibrate_model(target, bids_dir, loader, device="cpu")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="phantom, checkpoints and the full-precision model")
    parser.add_argument("--minutes", type=float, default=60.0, help="training time of this call")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop at this many steps in all (default: the configuration's)")
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=[m for m in METHODS.names() if METHODS.named(m).probabilistic],
        help=f"the demo's method (default {DEFAULT_METHOD}, as are the shipped weights)",
    )
    parser.add_argument("--package-only", action="store_true", help="only package WORK/model")
    parser.add_argument(
        "--reference-and-calibration-only",
        action="store_true",
        help="only record the healthy reference of the packaged model and calibrate it",
    )
    parser.add_argument(
        "--target",
        type=Path,
        default=DEMO_MODEL_DIR,
        help="where the packaged model goes (default: the app's demo model folder)",
    )
    args = parser.parse_args(argv)
    if not (args.package_only or args.reference_and_calibration_only):
        train(args.work, args.minutes, args.resume, args.method, args.max_steps)
    if not args.reference_and_calibration_only:
        package(args.work / "model", args.target)
    record_reference(args.work, args.target)
    calibrate_packaged(args.work, args.target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
