"""``bids-jdam-phantom OUT_DIR --subjects N --seed S``: write the offline paired T1w/FDG-PET phantom dataset."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bids_jdam import __version__
from bids_jdam.errors import InputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bids-jdam-phantom",
        description="Write a synthetic BIDS dataset of paired T1w MRI and FDG-PET, with its template-space ground "
        "truth under derivatives/phantom. A development and benchmarking phantom, not real data.",
    )
    parser.add_argument("out_dir", type=Path, help="output folder (must be empty, new, or an earlier phantom)")
    parser.add_argument("--subjects", type=int, default=4, help="number of subjects, half CN and half AD (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset (default 0)")
    parser.add_argument(
        "--field-strength",
        choices=["3", "5", "7", "mix"],
        default="3",
        help="T1w scanner: 3 T (1 mm), 5 T (0.8 mm), 7 T (0.7 mm MP2RAGE UNIT1), or mix (3/5/7 by subject) (default 3)",
    )
    parser.add_argument(
        "--layout",
        choices=["bids", "clinica"],
        default="bids",
        help="file names: plain BIDS, or Clinica adni-to-bids (sub-ADNI002S0001/ses-M000, "
        "trc-18FFDG_rec-uniform) (default bids)",
    )
    parser.add_argument("--sessions", type=int, default=1, help="sessions per subject (default 1)")
    parser.add_argument(
        "--grid-spacing",
        type=float,
        choices=[2.0, 4.0],
        default=None,
        help="model grid of the ground truth in mm (default 2, or 4 with --fast)",
    )
    parser.add_argument("--fast", action="store_true", help="small phantoms for tests: 3 mm T1w, 4 mm PET, 4 mm grid")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: available cores)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bids_jdam.data.phantom import generate_phantom_dataset  # heavy imports after argument parsing

    grid = args.grid_spacing or (4.0 if args.fast else 2.0)
    start = time.monotonic()
    try:
        out = generate_phantom_dataset(
            args.out_dir,
            args.subjects,
            args.seed,
            field_strength=args.field_strength if args.field_strength == "mix" else int(args.field_strength),
            layout=args.layout,
            sessions=args.sessions,
            grid_spacing_mm=grid,
            fast=args.fast,
            jobs=args.jobs,
        )
    except InputError as error:
        print(f"bids-jdam-phantom: error: {error}", file=sys.stderr)
        return 1
    print(
        f"phantom dataset: {out} ({args.subjects} subjects, {time.monotonic() - start:.1f} s); "
        f"ground truth: {out / 'derivatives' / 'phantom'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
