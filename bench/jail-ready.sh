#!/bin/bash
# Time to ready with the jail against without (docs/isolation.md): `vmctl run NAME` (create +
# start + wait until the agent answers) jailed (the default as root) and with --no-jail, N runs
# each, interleaved; medians and their ratio. Then the processes of one VM each way and their
# memory: the jail adds none (the supervisor was there before; QEMU is the PID namespace's init).
# Usage (as root): bench/jail-ready.sh BUILD_DIR [N] — the default guest from $VMCTL_TEST_IMAGES
# when set, else built into the bench's home.
set -euo pipefail
build=${1:?build dir}; n=${2:-10}
[ "$(id -u)" = 0 ] || { echo "the jail needs root" >&2; exit 1; }
vmctl=$build/src/cli/vmctl
home=$(mktemp -d /tmp/vmctl-bench-jail.XXXXXX)
trap 'for v in $("$vmctl" --home "$home" list --json | jq -r ".[].name"); do "$vmctl" --home "$home" destroy --force "$v" >/dev/null; done; rm -rf "$home"' EXIT
if [ -n "${VMCTL_TEST_IMAGES:-}" ]; then ln -s "$VMCTL_TEST_IMAGES" "$home/images"
else "$vmctl" --home "$home" image build-default >/dev/null; fi

ms() { date +%s%N; }
jailed=() free=()
for i in $(seq "$n"); do
  t0=$(ms); "$vmctl" --home "$home" run "j$i" --timeout 60 >/dev/null; t1=$(ms)
  "$vmctl" --home "$home" destroy --force "j$i" >/dev/null
  jailed+=($(( (t1 - t0) / 1000000 )))
  t0=$(ms); "$vmctl" --home "$home" run "n$i" --no-jail --timeout 60 >/dev/null; t1=$(ms)
  "$vmctl" --home "$home" destroy --force "n$i" >/dev/null
  free+=($(( (t1 - t0) / 1000000 )))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mj=$(median "${jailed[@]}"); mf=$(median "${free[@]}")
echo "jailed (ms):    ${jailed[*]}"
echo "--no-jail (ms): ${free[*]}"
echo "median jailed ${mj} ms, median --no-jail ${mf} ms, ratio $(awk "BEGIN {printf \"%.3f\", $mj/$mf}")"

# the processes of one VM each way: the supervisor and QEMU, their RSS
for mode in jail no-jail; do
  extra=(); [ "$mode" = no-jail ] && extra=(--no-jail)
  "$vmctl" --home "$home" run "p-$mode" --timeout 60 "${extra[@]}" >/dev/null
  pid=$("$vmctl" --home "$home" status --json "p-$mode" | jq -r .pid)
  sup=$(awk '{print $4}' "/proc/$pid/stat")
  rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
  procs=$(pgrep -f "$home/vms/p-$mode/" | wc -l)
  echo "$mode: QEMU pid $pid RSS $(rss "$pid") KiB; supervisor pid $sup ($(cat "/proc/$sup/comm")) RSS $(rss "$sup") KiB; processes naming the VM directory: $procs"
  "$vmctl" --home "$home" destroy --force "p-$mode" >/dev/null
done
