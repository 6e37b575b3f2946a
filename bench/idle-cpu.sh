#!/bin/bash
# SPDX-License-Identifier: MIT
# Host CPU an idle default-guest VM costs: `vmctl run` one VM with vmctl's QEMU command line and
# one with the same line but TCG's bare default CPU (qemu64, no ARAT: the guest keeps a periodic
# 250 Hz tick), both idle at once; the QEMU processes' CPU time over SECONDS, from /proc/PID/stat.
#   bench/idle-cpu.sh [BUILD_DIR] [SECONDS]     (default build, 20)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
secs=${2:-20}
V=$PWD/$build/src/cli/vmctl
export VMCTL_HOME=${VMCTL_HOME:-$(mktemp -d /tmp/idle-cpu.XXXXXX)}
tmp=$(mktemp -d /tmp/idle-cpu-wrap.XXXXXX)
trap '"$V" destroy --force ic-arat >/dev/null 2>&1; "$V" destroy --force ic-bare >/dev/null 2>&1; rm -rf "$tmp"' EXIT
# a QEMU wrapper that drops vmctl's -cpu argument (TCG then uses its default qemu64)
cat >"$tmp/qemu" <<'WRAP'
#!/bin/bash
args=()
while [ $# -gt 0 ]; do
  if [ "$1" = -cpu ]; then shift 2; continue; fi
  args+=("$1"); shift
done
exec qemu-system-x86_64 "${args[@]}"
WRAP
chmod +x "$tmp/qemu"
"$V" image build-default >/dev/null
"$V" run ic-arat >/dev/null 2>&1
VMCTL_QEMU=$tmp/qemu "$V" run ic-bare >/dev/null 2>&1
sleep 3
pa=$("$V" status --json ic-arat | jq .pid)
pb=$("$V" status --json ic-bare | jq .pid)
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
a0=$(ticks "$pa"); b0=$(ticks "$pb")
sleep "$secs"
a1=$(ticks "$pa"); b1=$(ticks "$pb")
hz=$(getconf CLK_TCK)
awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v s="$secs" -v hz="$hz" 'BEGIN {
  printf "idle VM, host CPU over %d s: -cpu qemu64,+arat (vmctl) %.2f %%, TCG default qemu64 %.2f %% (ratio %.2f)\n",
    s, 100 * a / hz / s, 100 * b / hz / s, b ? a / b : 0 }'
