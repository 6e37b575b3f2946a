#!/bin/bash
# `vmctl list --json` and `vmctl status` with 1,000 VMs in the store, against reading the same
# rows with the sqlite3 CLI (the floor: one process start plus one query). Uses hyperfine.
# Usage: bench/list-1000.sh BUILD_DIR
set -euo pipefail
build=${1:?build dir}
vmctl=$build/src/cli/vmctl
home=$(mktemp -d /tmp/vmctl-bench.XXXXXX)
trap 'rm -rf "$home"' EXIT
"$vmctl" --home "$home" image build-default >/dev/null
for i in $(seq 1000); do echo "$i"; done | xargs -P 2 -I{} "$vmctl" --home "$home" create "vm{}" >/dev/null
echo "VMs in store: $("$vmctl" --home "$home" list --json | jq length)"
hyperfine -N --warmup 3 --runs 30 \
  "sqlite3 $home/vmctl.db 'select * from vms'" \
  "$vmctl --home $home list --json" \
  "$vmctl --home $home status vm500" \
  "$vmctl --home $home status --json vm500"
