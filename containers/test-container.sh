#!/usr/bin/env bash
# Build the bids-jdam image with podman and run it as a user would: `make test-container`.
#
# Steps: install podman (Debian's packages) when missing; use the base image if it is there or can be pulled, else
# build an offline stand-in (containers/standin-base.sh) and say so; build the image; inside it run --version,
# --help, `pip check` and the phantom generator (compared byte for byte with the host's); then participant and
# group levels on two fast-mode phantom participants as an arbitrary non-root uid with HOME=/, the input mounted
# read-only and the root filesystem read-only, and the README's `docker run` line as written (podman standing in
# for docker). Checks: exit codes, the input unchanged (sha256 of every file), derivatives and reports present, every
# output file owned by the calling uid, and the outputs against the same run outside the container.
# The log (image size, step times, checks) goes to benchmarks/results/container-<arch>-<cpu>-<n>cpu.log.
#
# Options (environment): ENGINE_RUNTIME (OCI runtime, default: runc when installed), ENGINE_ULIMITS (default
# "nofile=20000:20000 nproc=32768:32768"), BUILD_CA_DIR (the host's CA folder, mounted into the build only, for pip
# behind an intercepting proxy; default /etc/ssl/certs where the host has a CA bundle, "none" to mount nothing),
# IMAGE (default bids-jdam:latest), KEEP_WORK=1 (keep the scratch folder).
# Exit codes: 0 passed, 1 a check failed, 3 skipped (no container engine can be installed here).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
IMAGE=${IMAGE:-bids-jdam:latest}
BASE=$(sed -n 's/^FROM \(.*\)$/\1/p' Dockerfile | head -n1)
TEST_UID=4321  # an arbitrary uid that is not the image's user (1000) and has no home folder
work=$(mktemp -d /tmp/bids-jdam-container-XXXX)
[ "${KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
tag=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); from machine import machine_tag; print(machine_tag())" 2>/dev/null || uname -m)
LOG="$REPO/benchmarks/results/container-$tag.log"
failures=0
start_all=$(date +%s)

say() { echo "$*" | tee -a "$LOG.part"; }
check() {  # check DESCRIPTION COMMAND...: run a check, log PASS/FAIL
    local what=$1; shift
    if "$@" >> "$work/check.out" 2>&1; then say "PASS  $what"; else say "FAIL  $what"; tail -n 5 "$work/check.out" | tee -a "$LOG.part"; failures=$((failures + 1)); fi
}
timed() {  # timed NAME COMMAND...: run, log the wall time, fail on a non-zero exit
    local name=$1; shift; local t0; t0=$(date +%s)
    if "$@" > "$work/$name.out" 2>&1; then say "PASS  $name ($(( $(date +%s) - t0 )) s)";
    else say "FAIL  $name (exit $?, $(( $(date +%s) - t0 )) s): $(tail -n 3 "$work/$name.out" | tr '\n' ' ')"; failures=$((failures + 1)); fi
}

# --- the engine -----------------------------------------------------------------------------------------------------
if ! command -v podman > /dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        echo "installing podman, runc and debootstrap from Debian's packages"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap uidmap \
            slirp4netns fuse-overlayfs > /dev/null) || { echo "SKIPPED: podman could not be installed"; exit 3; }
    else
        echo "SKIPPED: no podman and no root apt-get to install it (install podman, or run the Dockerfile yourself)"
        exit 3
    fi
fi
engine=(podman)
runtime=${ENGINE_RUNTIME:-$(command -v runc > /dev/null && echo runc || true)}
[ -n "$runtime" ] && engine+=(--runtime "$runtime")
ulimits=()
for limit in ${ENGINE_ULIMITS:-nofile=20000:20000 nproc=32768:32768}; do ulimits+=(--ulimit "$limit"); done
ca_mount=()
ca_dir=${BUILD_CA_DIR:-$( [ -f /etc/ssl/certs/ca-certificates.crt ] && echo /etc/ssl/certs || echo none)}
[ "$ca_dir" != none ] && ca_mount=(--volume "$ca_dir:/etc/ssl/certs:ro")

: > "$LOG.part"
say "# bids-jdam container test, $(date -u +%FT%TZ)"
say "machine: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1), $(nproc) cores; $(podman --version); runtime ${runtime:-default}; ulimits ${ulimits[*]:-none}; build CA mount ${ca_dir:-none}"
say "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benchmarks/results' || echo ' (with uncommitted changes)')"

# --- the base image and the build -------------------------------------------------------------------------------------
if podman image exists "$BASE"; then
    say "base image $BASE: present locally ($(podman image inspect --format '{{.Size}}' "$BASE" | awk '{printf "%.1f GB", $1/1e9}'))"
elif timeout 120 podman pull -q "$BASE" > "$work/pull.out" 2>&1; then
    say "base image $BASE: pulled"
else
    say "base image $BASE cannot be pulled ($(tail -n 1 "$work/pull.out" | cut -c1-120)): building an offline STAND-IN"
    timed standin-base bash containers/standin-base.sh "docker.io/$BASE" "$work/standin"
fi
timed build "${engine[@]}" build --pull=never --network host "${ca_mount[@]}" "${ulimits[@]}" -t "$IMAGE" .
[ "$failures" = 0 ] || { mv "$LOG.part" "$LOG"; echo "image build failed: $LOG"; exit 1; }
say "image $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}')"

run=("${engine[@]}" run --rm --network none --read-only "${ulimits[@]}")
as_user=(-u "$TEST_UID:$TEST_UID" -e HOME=/)  # docker gives a uid without a passwd entry HOME=/ (podman: WORKDIR)
check "--version prints the version" bash -c "${run[*]} $IMAGE --version | grep -q \"\$(.venv/bin/python -c 'import bids_jdam; print(bids_jdam.__version__)')\""
check "--help runs" "${run[@]}" "${as_user[@]}" "$IMAGE" --help
check "uid $TEST_UID with HOME=/ cannot write its home (as with docker -u)" "${run[@]}" "${as_user[@]}" \
    --entrypoint sh "$IMAGE" -c 'test "$HOME" = / && ! touch /.probe 2>/dev/null'  # so the runs below prove it is fine
check "pip check is clean in the image" "${run[@]}" --entrypoint python "$IMAGE" -m pip check

# --- data: the phantom made inside the image equals the host's --------------------------------------------------------
mkdir -p "$work/host" "$work/image"
chown "$TEST_UID:$TEST_UID" "$work/image"
timed phantom-host .venv/bin/bids-jdam-phantom "$work/host/bids" --subjects 2 --seed 0 --fast
timed phantom-image "${run[@]}" "${as_user[@]}" -v "$work/image:/work" --entrypoint bids-jdam-phantom "$IMAGE" \
    /work/bids --subjects 2 --seed 0 --fast
digest() { (cd "$1" && find . -type f ! -name '*.log' -print0 | sort -z | xargs -0 sha256sum); }
check "the phantom generator in the image gives the host's dataset byte for byte" \
    diff <(digest "$work/host/bids") <(digest "$work/image/bids")
bids="$work/host/bids"
digest "$bids" > "$work/input.sha256"

# --- participant and group levels as an arbitrary uid, read-only input and root filesystem -----------------------------
out="$work/out"; mkdir -p "$out"; chown "$TEST_UID:$TEST_UID" "$out"
app=("${run[@]}" "${as_user[@]}" -v "$bids:/data:ro" -v "$out:/out")
timed participant "${app[@]}" "$IMAGE" /data /out participant --omp-nthreads 2
timed group "${app[@]}" "$IMAGE" /data /out group
for sub in 01 02; do
    check "sub-$sub: synthetic PET, sidecar and report" test -s "$out/sub-$sub/pet/sub-${sub}_trc-FDG_space-MNI152NLin2009aSym_desc-jdam_pet.nii.gz" -a \
        -s "$out/sub-$sub/pet/sub-${sub}_trc-FDG_space-MNI152NLin2009aSym_desc-jdam_pet.json" -a -s "$out/sub-$sub.html"
done
check "group report and table" test -s "$out/group_report.html" -a -s "$out/group_metrics.tsv"
check "every output file belongs to uid $TEST_UID" bash -c "[ -z \"\$(find '$out' ! -uid $TEST_UID)\" ]"
check "the input is byte-identical" diff "$work/input.sha256" <(digest "$bids")
check "the outputs pass the BIDS validator" .venv/bin/python -c "
import sys; from pathlib import Path; from bids_jdam.bids.validator import run_bids_validator
result = run_bids_validator(Path('$out')); print(*result.errors, sep='\\n'); sys.exit(0 if result.ok else 1)"

# --- the README's docker run line, as written, with podman for docker -------------------------------------------------
readme_line=$(grep -m1 -A1 '^docker run --rm' README.md | tr -d '\\\n' | sed 's/  */ /g')
readme_out="$work/readme-out"; mkdir -p "$readme_out"
readme_command=${readme_line//\/path\/to\/bids/$bids}
readme_command=${readme_command//\/path\/to\/out/$readme_out}
readme_command=${readme_command/docker run/${engine[*]} run ${ulimits[*]} --network none}
say "README line: $readme_line"
timed readme-run bash -c "$readme_command --participant-label 01 --omp-nthreads 2"

# --- the same run outside the container --------------------------------------------------------------------------------
timed host-run .venv/bin/bids-jdam "$bids" "$work/host-out" participant --omp-nthreads 2
.venv/bin/python containers/compare_outputs.py "$out" "$work/host-out" 2>&1 | tee -a "$LOG.part" \
    || failures=$((failures + 1))

say "total: $(( $(date +%s) - start_all )) s, $failures failed check(s)"
mv "$LOG.part" "$LOG"
echo "log: $LOG"
[ "$failures" = 0 ]
