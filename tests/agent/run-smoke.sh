#!/bin/bash
# SPDX-License-Identifier: MIT
# End-to-end smoke test of the default guest and vmctl-agent (see agent-smoke.c): compiles the
# checker against the library sources it uses, builds the default guest into a scratch home
# (downloads cached in $VMCTL_CACHE_DIR or ~/.cache/vmctl), boots it under TCG and drives it.
#   tests/agent/run-smoke.sh [BUILD_DIR] [BOOTS]     default build-guest, 0 extra timing boots
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-guest}
boots=${2:-0}
command -v qemu-system-x86_64 >/dev/null || { echo "SKIP: qemu-system-x86_64 not installed"; exit 77; }
[ -d "$build" ] || meson setup "$build" >/dev/null
ninja -C "$build" src/agent/vmctl-agent >/dev/null
exe="$build/tests/agent/agent-smoke"
mkdir -p "$(dirname "$exe")"
# the exe lives in the build tree, so resource_path() finds vmctl-agent and the script there
gcc -std=gnu17 -O1 -g -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE \
    -I include -I "$build/include" -I "$build" -I src/lib -I src/proto -I src/shared -o "$exe" \
    tests/agent/agent-smoke.c src/lib/agent-transport.c src/lib/agent-session.c \
    src/lib/agent-client.c src/lib/guest.c src/lib/error.c \
    src/lib/error-table.c src/lib/util/util.c src/proto/agent-proto.c -lpthread
home=$(mktemp -d /tmp/agent-smoke-home.XXXXXX)
trap 'rm -rf "$home"' EXIT
"$exe" "$home" "$boots"
