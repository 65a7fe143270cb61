#!/usr/bin/env bash
# Fetch, on a machine that reaches PyPI, the wheels that the GPU machine's image lacks, into .whl/ (git-ignored).
# The image has torch, numpy, scipy, scikit-image, pandas, safetensors and tqdm; the benchmarks also need nibabel,
# nilearn (its bundled MNI152 template) and pybids (the phantom's BIDS queries) with the parts of their
# dependency trees that the image lacks and that these imports reach (not num2words, which only pybids' report
# generator imports). Pure-Python wheels, except SQLAlchemy's (CPython 3.12, x86-64).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    nibabel==5.4.2 nilearn==0.14.1 pybids==0.22.0 bids-validator==1.14.7.post0 bidsschematools==2.0.1 acres==0.5.0 \
    frozendict==2.5.1 sqlalchemy==2.1.9 universal-pathlib==0.3.10 pathlib-abc==0.5.2
du -sh .whl
