#!/bin/bash
# What the guest knows about itself, timed (issue 17), on the default guest under TCG:
#  - ready -> eth0 configured: `vmctl run --net user --port 0:80` returns (agent ready), then
#    `vmctl exec` polls until eth0 has 10.0.2.15 (each poll one exec: the figure is an upper bound
#    by about one exec);
#  - ready -> first HTTP answer through the forward from busybox httpd started right at ready;
#  - the hostname: the kernel command line (`vmctl.hostname=`, parsed by /init with builtins)
#    against the agent's METADATA push: the cost of /init's parsing (100 runs of the same
#    snippet in the guest's busybox sh) and of one push round trip (vmctl_guest_push_metadata,
#    through tests/agent/exec-many.c: connect + ping + push, against connect + ping alone).
# Usage: bench/guest-meta.sh BUILD_DIR [N]
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd); n=${2:-5}
src=$(cd "$(dirname "$0")/.." && pwd)
vmctl=$build/src/cli/vmctl
home=$(mktemp -d /tmp/vmctl-bench-meta.XXXXXX)
trap 'for v in $("$vmctl" --home "$home" list --json | jq -r ".[].name"); do "$vmctl" --home "$home" destroy --force "$v" >/dev/null; done; pkill -9 -f "$home/" ; rm -rf "$home"' EXIT
"$vmctl" --home "$home" image build-default >/dev/null
v() { "$vmctl" --home "$home" "$@"; }
ms() { echo $(($(date +%s%N) / 1000000)); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

net=() http=()
for i in $(seq "$n"); do
  v run "w$i" --net user --port 0:80 >/dev/null 2>&1
  t0=$(ms)
  v exec "w$i" -- sh -c 'mkdir -p /www && echo hi >/www/index.html && httpd -p 80 -h /www'
  port=$(v status --json "w$i" | jq -r '.ports[] | select(.guest == 80) | .host')
  until [ "$(curl -sf --max-time 2 "http://127.0.0.1:$port/")" = hi ]; do
    [ $(($(ms) - t0)) -lt 60000 ] || { echo "no answer from w$i" >&2; break; }
  done
  http+=($(($(ms) - t0)))
  v destroy --force "w$i" >/dev/null
  v run "n$i" --net user --port 0:80 >/dev/null 2>&1
  t0=$(ms)
  until v exec "n$i" -- sh -c 'ip -4 addr show eth0 | grep -q 10.0.2.15' 2>/dev/null; do
    [ $(($(ms) - t0)) -lt 60000 ] || { echo "no eth0 on n$i" >&2; break; }
  done
  net+=($(($(ms) - t0)))
  v destroy --force "n$i" >/dev/null
done
echo "ready -> eth0 configured (ms, one exec per poll): ${net[*]}; median $(median "${net[@]}")"
echo "ready -> first HTTP answer through the forward (ms): ${http[*]}; median $(median "${http[@]}")"

v run h >/dev/null 2>&1
parse=$(v exec h -- sh -c 'cmdline=$(cat /proc/cmdline); t0=$(date +%s%N)
  i=0; while [ $i -lt 100 ]; do
    h= ; set -f; for w in $cmdline; do case $w in vmctl.hostname=?*) h=${w#vmctl.hostname=} ;; esac; done; set +f
    i=$((i + 1)); done
  t1=$(date +%s%N); echo $(((t1 - t0) / 100000))')
echo "/init's cmdline parsing in the guest: $((parse / 10)).$((parse % 10)) ms per boot (100 runs)"
tmp=$home/t; mkdir -p "$tmp"
gcc -std=gnu17 -O2 -I"$src/include" -o "$tmp/exec-many" "$src/tests/agent/exec-many.c" \
  -L"$build/src/lib" -lvmctl -Wl,-rpath,"$build/src/lib"
push=() info=()
for i in $(seq 20); do
  t0=$(date +%s%N); "$tmp/exec-many" "$home" h metadata h A=1 s x >/dev/null; t1=$(date +%s%N)
  push+=($(((t1 - t0) / 100000)))
  t0=$(date +%s%N); "$tmp/exec-many" "$home" h info >/dev/null; t1=$(date +%s%N)
  info+=($(((t1 - t0) / 100000)))
done
mp=$(median "${push[@]}"); mi=$(median "${info[@]}")
echo "process + connect + ping + METADATA push: median $(awk "BEGIN {print $mp / 10}") ms; the same with INFO instead: median $(awk "BEGIN {print $mi / 10}") ms"
