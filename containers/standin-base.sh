#!/usr/bin/env bash
# Build an offline stand-in for the Dockerfile's base image when the registry cannot be reached, and tag it with the
# base's name so the unmodified Dockerfile builds on it. Faithful where the app can tell: Debian 12 with Python 3.11
# (the base's minor version) in a virtual environment at /opt/conda (the base's prefix, first on PATH), and the
# base's torch version from PyPI (a CUDA build, as in the base). Not the base: no conda, no CUDA toolkit files
# beyond torch's own wheels.
#   bash containers/standin-base.sh IMAGE_NAME [WORK_DIR]
# Needs root, debootstrap and podman; downloads Debian packages from the mirror apt uses, and torch from PyPI.
set -euo pipefail
image=${1:?usage: standin-base.sh IMAGE_NAME [WORK_DIR]}
work=${2:-$(mktemp -d)}
torch_version=$(sed -n 's/.*pytorch:\([0-9.]*\)-.*/\1/p' <<<"$image")
[ -n "$torch_version" ] || { echo "standin-base.sh: cannot read the torch version from $image" >&2; exit 2; }
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
mirror=${mirror:-$(awk '/^deb / && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$work"
rootfs="$work/rootfs"
rm -rf "$rootfs"
echo "stand-in base: Debian bookworm from $mirror, Python 3.11 venv at /opt/conda, torch==$torch_version"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" \
    > "$work/debootstrap.log" 2>&1 || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
# An intercepting proxy's CA (if the host trusts one) is used for this download only, not left in the image.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca.crt"
in_root=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_CERT=/tmp/host-ca.crt chroot "$rootfs")
"${in_root[@]}" /usr/bin/python3 -m venv /opt/conda
# A current pip, as the base has: it reads the system's CA store (truststore), so a build behind an intercepting
# proxy works with the host's CA folder mounted (test-container.sh's BUILD_CA_DIR).
"${in_root[@]}" /opt/conda/bin/pip install --quiet --no-cache-dir --upgrade pip "torch==$torch_version"
rm -f "$rootfs/tmp/host-ca.crt" "$rootfs/etc/resolv.conf"
rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$image" > /dev/null
rm -rf "$rootfs"
echo "stand-in base tagged $image ($(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f GB", $1/1e9}'))"
