#!/bin/bash
# Sets everything up on a fresh Debian 12 machine (as root): packages, build, default guest.
# Then runs the main job: boot a VM from the default guest and run a command in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build
build/src/cli/vmctl image build-default
echo "+ vmctl run demo --rm -- uname -a" >&2
build/src/cli/vmctl run demo --rm -- uname -a
