#!/usr/bin/env bash
# Build the docker sandbox image locally, with no registry: a Debian root filesystem made by
# debootstrap (minbase + python3; python3-minimal alone lacks json) and turned into an image with
# `docker import`. Uses the Debian mirror apt is configured with on this machine.
# Usage: docker/build-image.sh [TAG]   (skips the build when TAG exists; FORCE=1 rebuilds)
set -euo pipefail

TAG="${1:-${SANDBOX_IMAGE:-self-challenge-sandbox:latest}}"
SUITE="${SUITE:-bookworm}"

if ! docker info >/dev/null 2>&1; then
    echo "build-image: no Docker engine answers; start it first (as root: dockerd --bridge=none --iptables=false &)" >&2
    exit 1
fi
if [[ -z "${FORCE:-}" ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "build-image: $TAG already exists (FORCE=1 to rebuild)"
    exit 0
fi
for tool in debootstrap tar; do
    command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (apt-get install -y debootstrap)" >&2; exit 1; }
done

# The first Debian archive URI apt uses here (deb822 sources or one-line sources.list).
mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list)
    local f
    for f in "${files[@]}"; do
        [[ -r "$f" ]] || continue
        awk '
            /^[[:space:]]*#/ {next}
            /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit} }
            /^deb[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/ && $i ~ /\/debian\/?$/) {print $i; exit} }
        ' "$f"
    done | head -n 1
}
MIRROR="${DEBIAN_MIRROR:-$(mirror)}"
if [[ -z "$MIRROR" ]]; then
    echo "build-image: no Debian mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2
    exit 1
fi

ROOTFS="$(mktemp -d /var/tmp/sandbox-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "build-image: debootstrap $SUITE from $MIRROR (about 30 s)"
debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
    tail -n 30 "$ROOTFS.log" >&2
    echo "build-image: debootstrap failed (full log: $ROOTFS.log)" >&2
    exit 1
}
rm -f "$ROOTFS.log"
# Apt's caches and lists are dead weight in an image that never installs anything.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'USER 65534:65534' --change 'WORKDIR /tmp' --change 'CMD ["python3"]' \
    - "$TAG" >/dev/null
echo "build-image: built $TAG"
docker run --rm --network none "$TAG" python3 -c 'import json, sys; print("python", sys.version.split()[0], "ok")'
