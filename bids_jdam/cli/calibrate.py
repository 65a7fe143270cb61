"""``bids-jdam-calibrate MODEL BIDS_DIR``: argument parsing only; the work is :mod:`bids_jdam.workflows.calibrate`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bids_jdam.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids-jdam-calibrate",
        description="Fit the posterior spread calibration (probabilistic methods) and the regional interval of a "
        "model directory on held-out paired T1w/FDG-PET subjects and record them in its model card "
        "(bids-jdam-train does this on its validation subjects).",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a model directory made by bids-jdam-train, or hf:ORG/NAME[@REVISION] on the Hugging Face Hub (--copy-to)",
    )
    parser.add_argument("bids_dir", type=Path, help="a BIDS dataset of held-out subjects (never written to)")
    parser.add_argument(
        "--copy-to",
        type=Path,
        metavar="DIR",
        help="calibrate a copy of MODEL in this new directory and leave MODEL as it is (required for a Hub model)",
    )
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL", help="subjects to use (default: all)")
    parser.add_argument(
        "--phantom-truth", action="store_true", help="use the phantom's template-space truth under derivatives/phantom"
    )
    parser.add_argument("-w", "--work-dir", type=Path, help="preprocessing cache for raw BIDS pairs")
    parser.add_argument("--omp-nthreads", type=int, default=2, help="threads for ANTs/ITK, OpenMP and torch")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + 1, 2),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
    )
    try:
        from bids_jdam.runtime.threads import configure_threads
        from bids_jdam.workflows.calibrate import calibrate_model, model_dir_to_calibrate
        from bids_jdam.workflows.training_data import load_phantom_truth_subjects, preprocessed_pairs_loader

        configure_threads(args.omp_nthreads)
        model_dir = model_dir_to_calibrate(args.model, args.copy_to)
        loader = (
            load_phantom_truth_subjects
            if args.phantom_truth
            else preprocessed_pairs_loader(
                args.work_dir or model_dir.parent / f"{model_dir.name}-calibration-work", args.omp_nthreads
            )
        )
        subjects = [label.removeprefix("sub-") for label in args.participant_label or []] or None
        calibration, interval = calibrate_model(model_dir, args.bids_dir, loader, subjects, args.device)
    except (InputError, ValueError) as error:
        print(f"bids-jdam-calibrate: error: {error}", file=sys.stderr)
        return 1
    if calibration is not None:
        print(
            f"{model_dir}: spread scale {calibration.spread_scale:.4g} "
            f"({calibration.subjects} subjects, {calibration.voxels} voxels)"
        )
    if interval is not None:
        print(
            f"{model_dir}: regional {interval.level:.0%} interval +-{interval.half_width_suvr:.4g} SUVR "
            f"({interval.pairs} regions of {interval.subjects} subjects)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
