"""``python -m bids_jdam.cli.demo``: the embedded demo that ``make demo`` runs (argument parsing only)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bids_jdam.cli.run import configure_logging
from bids_jdam.errors import InputError, StepError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bids-jdam-demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="where the demo writes everything")
    parser.add_argument("--subjects", type=int, default=2, help="phantom subjects to synthesize")
    args = parser.parse_args(argv)
    configure_logging(logging.INFO, "%(asctime)s %(name)s: %(message)s")
    from bids_jdam.workflows.demo import run_demo

    try:
        paths = run_demo(args.out, subjects=args.subjects)
    except (InputError, StepError) as error:
        print(f"bids-jdam demo: error: {error}", file=sys.stderr)
        return 1
    print("\nDemo finished. Outputs:")
    for name, path in paths.items():
        print(f"  {name:14s} {path.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
