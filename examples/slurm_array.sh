#!/bin/bash
# One participant per SLURM array task, with the Apptainer image of bids-jdam.
#   sbatch --array=1-$(($(wc -l < participants.txt))) examples/slurm_array.sh
# participants.txt: one label per line (e.g. `tail -n +2 $BIDS_DIR/participants.tsv | cut -f1 > participants.txt`).
# Outputs of the independent tasks land in one derivatives folder; run the group level once all have finished:
#   apptainer run --cleanenv -B "$BIDS_DIR":/data:ro -B "$OUT_DIR":/out bids-jdam.sif /data /out group
#SBATCH --job-name=bids-jdam
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --gres=gpu:1
#SBATCH --time=00:30:00
#SBATCH --output=logs/bids-jdam-%A_%a.out
set -euo pipefail

BIDS_DIR=${BIDS_DIR:?set BIDS_DIR to the input BIDS dataset}
OUT_DIR=${OUT_DIR:?set OUT_DIR to the derivatives folder}
WORK_DIR=${WORK_DIR:-$OUT_DIR/.work}
IMAGE=${IMAGE:-bids-jdam.sif}
LABEL=$(sed -n "${SLURM_ARRAY_TASK_ID}p" participants.txt)

mkdir -p "$OUT_DIR" "$WORK_DIR" logs
# --cleanenv keeps the host's Python/CUDA variables out; HOME is not needed (no caches are written there).
apptainer run --nv --cleanenv \
    -B "$BIDS_DIR":/data:ro -B "$OUT_DIR":/out -B "$WORK_DIR":/work \
    "$IMAGE" /data /out participant \
    --participant-label "$LABEL" --work-dir /work \
    --omp-nthreads "${SLURM_CPUS_PER_TASK}" --mem-gb 8 --device auto
