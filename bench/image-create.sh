#!/bin/bash
# Overlay and seed-ISO creation, in-process against qemu-img create / genisoimage (same run).
#   bench/image-create.sh [BUILD-DIR] [N]
set -euo pipefail
build=${1:-build}
n=${2:-50}
work=$(mktemp -d /tmp/bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
qemu-img create -q -f qcow2 "$work/base.qcow2" 10G
"$build/bench/image-create" "$work/base.qcow2" "$work" "$n"
