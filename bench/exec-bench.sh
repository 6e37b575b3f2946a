#!/bin/bash
# SPDX-License-Identifier: MIT
# Exec and cp benchmarks on one default-guest VM (TCG here):
#   - warm exec of `true`, 500 runs: echo round trip (floor) and library exec on one connection
#     (bench/exec-rtt.c), then the CLI (`vmctl exec VM -- true`, one process per run);
#   - cp of a 256 MiB file in and out, beside `cat` through the same channel (exec -i / exec cat).
#   bench/exec-bench.sh [BUILD_DIR] [RUNS]       (default build-agent, 500)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-agent}
runs=${2:-500}
ninja -C "$build" src/cli/vmctl src/agent/vmctl-agent >/dev/null
V=$PWD/$build/src/cli/vmctl
export VMCTL_HOME=${VMCTL_HOME:-$(mktemp -d /tmp/exec-bench.XXXXXX)}
tmp=$(mktemp -d /tmp/exec-bench-data.XXXXXX)
trap '"$V" destroy --force eb >/dev/null 2>&1; rm -rf "$tmp"' EXIT
"$V" image build-default >/dev/null
"$V" run eb --memory 1024 >/dev/null 2>&1  # room for 256 MiB in the initramfs tmpfs
gcc -std=gnu17 -O2 -D_GNU_SOURCE -Iinclude -I"$build" -Isrc/lib -Isrc/proto -o "$tmp/exec-rtt" \
  bench/exec-rtt.c src/lib/agent-client.c src/lib/error.c src/lib/error-table.c \
  src/lib/util/util.c src/proto/agent-proto.c -lpthread
sock=$("$V" status --json eb | jq -r .dir)/agent.sock
echo "== warm exec, $runs runs (TCG, $(nproc) host cores)"
"$tmp/exec-rtt" "$sock" "$runs"
# the guest's own cost of starting a command: busybox sh running /bin/true 100 times (fork+exec+
# wait, all inside the guest; /proc/uptime has 10 ms resolution, hence 100 runs)
"$V" exec eb -- sh -c 'read a x </proc/uptime; i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done
  read b x </proc/uptime; echo "$a $b"' |
  awk '{ printf "%-28s     %7.3f ms per run (mean of 100)\n", "guest sh: /bin/true", ($2 - $1) * 10 }'
gcc -std=gnu17 -O2 -static -o "$tmp/exec-spawn" bench/exec-spawn.c
"$V" cp "$tmp/exec-spawn" eb:/tmp/exec-spawn && "$V" exec eb -- /tmp/exec-spawn 100
for i in $(seq "$runs"); do
  t0=$(date +%s%N); "$V" exec eb -- true; echo $(( $(date +%s%N) - t0 ))
done | sort -n | awk '{ v[NR] = $1 } END { printf "%-28s p50 %7.3f ms   p99 %7.3f ms\n", "CLI vmctl exec -- true", v[int(NR/2)+1]/1e6, v[int(NR*0.99)]/1e6 }'
for i in $(seq "$runs"); do
  t0=$(date +%s%N); "$V" --version >/dev/null; echo $(( $(date +%s%N) - t0 ))
done | sort -n | awk '{ v[NR] = $1 } END { printf "%-28s p50 %7.3f ms   p99 %7.3f ms\n", "CLI process alone (--version)", v[int(NR/2)+1]/1e6, v[int(NR*0.99)]/1e6 }'

[ "${EXEC_BENCH_CP:-1}" = 0 ] && exit 0  # EXEC_BENCH_CP=0: the exec figures only
echo "== 256 MiB through the channel"
head -c $((256 << 20)) /dev/urandom >"$tmp/big"
mibs() { awk -v ns="$1" 'BEGIN { printf "%7.1f MiB/s (%.2f s)", 256 / (ns / 1e9), ns / 1e9 }'; }
t0=$(date +%s%N); "$V" cp "$tmp/big" eb:/tmp/big; t=$(( $(date +%s%N) - t0 ))
echo "cp in  (host -> guest)      $(mibs $t)"
"$V" exec eb -- rm -f /tmp/big
t0=$(date +%s%N); "$V" exec eb -i -- sh -c 'cat >/tmp/big' <"$tmp/big"; t=$(( $(date +%s%N) - t0 ))
echo "cat in (exec -i cat >file)  $(mibs $t)"
t0=$(date +%s%N); "$V" cp eb:/tmp/big "$tmp/big2"; t=$(( $(date +%s%N) - t0 ))
echo "cp out (guest -> host)      $(mibs $t)"
cmp -s "$tmp/big" "$tmp/big2" || echo "MISMATCH after cp out"
t0=$(date +%s%N); "$V" exec eb -- cat /tmp/big >"$tmp/big3"; t=$(( $(date +%s%N) - t0 ))
echo "cat out (exec cat file)     $(mibs $t)"
cmp -s "$tmp/big" "$tmp/big3" || echo "MISMATCH after cat out"
