#!/bin/bash
# What the guest knows about itself, timed (issue 17), on the default guest under TCG:
#  - agent start -> eth0 configured, on the guest's own clock (the agent process's start time
#    against the mtime of /etc/resolv.conf, which /init writes last), no polling in the guest;
#  - ready -> first HTTP answer through the forward from busybox httpd started right at ready
#    (curl from the host, retried with a 0.5 s bound: a connection made before eth0 is up hangs);
#  - the hostname: the kernel command line (`vmctl.hostname=`, parsed by /init with builtins)
#    against the agent's METADATA push: the cost of /init's parsing (1000 runs of the same
#    snippet in the guest's busybox sh) and of one push (vmctl_guest_push_metadata through
#    tests/agent/exec-many.c: process + connect + ping + push, against the same with INFO).
# Usage: bench/guest-meta.sh BUILD_DIR [N] [IMAGE_DIR]   (IMAGE_DIR: a built default guest to use
# instead of building one, e.g. to compare two /init versions)
set -euo pipefail
build=$(cd "${1:?build dir}" && pwd); n=${2:-5}; image=${3:-}
src=$(cd "$(dirname "$0")/.." && pwd)
vmctl=$build/src/cli/vmctl
home=$(mktemp -d /tmp/vmctl-bench-meta.XXXXXX)
trap 'for v in $("$vmctl" --home "$home" list --json | jq -r ".[].name"); do "$vmctl" --home "$home" destroy --force "$v" >/dev/null; done; pkill -9 -f "$home/" || true; rm -rf "$home"' EXIT
if [ -n "$image" ]; then
  mkdir -p "$home/images" && cp -a "$image" "$home/images/default"
else
  "$vmctl" --home "$home" image build-default >/dev/null
fi
v() { "$vmctl" --home "$home" "$@"; }
ms() { echo $(($(date +%s%N) / 1000000)); }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

net=() http=()
for i in $(seq "$n"); do
  v run "w$i" --net user --port 0:80 >/dev/null 2>&1
  t0=$(ms)
  v exec "w$i" -- sh -c 'mkdir -p /www && echo hi >/www/index.html && httpd -p 80 -h /www'
  port=$(v status --json "w$i" | jq -r '.ports[] | select(.guest == 80) | .host')
  until [ "$(curl -sf --max-time 0.5 "http://127.0.0.1:$port/")" = hi ]; do
    [ $(($(ms) - t0)) -lt 60000 ] || { echo "no answer from w$i" >&2; break; }
  done
  http+=($(($(ms) - t0)))
  # on the guest's clock: agent start (field 22, ticks since boot) -> /etc/resolv.conf written
  net+=($(v exec "w$i" -- sh -c 'btime=$(awk "/^btime/ {print \$2}" /proc/stat)
    st=$(cut -d" " -f22 /proc/$(pidof vmctl-agent)/stat); m=$(stat -c "%Y %y" /etc/resolv.conf)
    awk -v b="$btime" -v s="$st" -v m="$m" "BEGIN { split(m, p, \" \"); split(p[3], t, \":\");
      printf \"%d\", ((int(m) - b) + (t[3] - int(t[3])) - s / 100) * 1000 }"'))
  v destroy --force "w$i" >/dev/null
done
echo "agent start -> eth0 configured, guest clock (ms): ${net[*]}; median $(median "${net[@]}")"
echo "ready -> first HTTP answer through the forward (ms): ${http[*]}; median $(median "${http[@]}")"

v run h >/dev/null 2>&1
parse=$(v exec h -- sh -c 'cmdline=$(cat /proc/cmdline); read t0 x </proc/uptime
  i=0; while [ $i -lt 1000 ]; do
    h= ; set -f; for w in $cmdline; do case $w in vmctl.hostname=?*) h=${w#vmctl.hostname=} ;; esac; done; set +f
    i=$((i + 1)); done
  read t1 x </proc/uptime; awk -v a="$t0" -v b="$t1" "BEGIN { printf \"%.2f\", (b - a) }"')
echo "/init's cmdline parsing in the guest: $parse ms per boot (1000 runs took $parse s)"
tmp=$home/t; mkdir -p "$tmp"
gcc -std=gnu17 -O2 -I"$src/include" -I"$build/include" -o "$tmp/exec-many" "$src/tests/agent/exec-many.c" \
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
