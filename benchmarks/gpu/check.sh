#!/usr/bin/env bash
# The GPU checks in one run: the CUDA tests, training speed of the default, whole-brain time of the paper-size
# network (bf16, eager and compiled) and the sampler benchmark on every middle slice of the held-out phantoms. Written and dry-run on CPU
# (a copy of the GPU image's package set plus the carried wheels); not yet run on a GPU.
#
#   here, once:  bash benchmarks/gpu/wheels.sh        (packages the GPU image lacks, into .whl/)
#   there:       bash benchmarks/gpu/check.sh         (the device tool: carry [".whl"], timeout_s 600)
#
# Results land in benchmarks/results/ and, where the device tool sets $OUT, are copied there to come back.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR=/tmp/matplotlib
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "gpu check: could not install the carried wheels from .whl/" >&2; exit 1; }
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
log=${OUT:-/tmp}/gpu-check.log
failed=()
step() {  # step NAME COMMAND...: run, log, and remember a failure without stopping the others
    echo "=== $1 ($(date -u +%H:%M:%S))" | tee -a "$log"
    "${@:2}" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = 0 ] || failed+=("$1")
}
step gpu nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
step cuda-tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_synthesis.py tests/test_samplers.py
step throughput python3 -m benchmarks.throughput --device cuda --threads 8
step speed python3 -m benchmarks.speed --device cuda --threads 8 --per-plane 100 --batch-size 256
# Training the default with the paper-size network: steps per second after the warm-up (a few minutes at most).
step training timeout 240 python3 -m benchmarks.training --device cuda --speed-subjects 8 --steps 200 --batch-per-process 32
# Last, and bounded: compiling recompiles once per batch shape (the memory probe, the full batch, the last chunk).
step throughput-compiled timeout 300 python3 -m benchmarks.throughput --device cuda --threads 8 --compile
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/throughput*-nvidia-* benchmarks/results/speed-nvidia-* benchmarks/results/training-nvidia-* \
        "$OUT"/ 2>/dev/null
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu check: failed steps: ${failed[*]}" | tee -a "$log"
    exit 1
fi
echo "gpu check: all steps passed" | tee -a "$log"
