#!/bin/bash
# SPDX-License-Identifier: MIT
# Exec and cp benchmarks on one default-guest VM (TCG here):
#   - warm exec of `true`, 500 runs: echo round trip (floor) and library exec on one connection
#     (bench/exec-rtt.c), of busybox `true` and of the smallest static program (bench/exec-tiny.c),
#     each beside the guest's own cost of starting it (bench/exec-spawn.c, run inside the guest);
#     then the CLI (`vmctl exec VM -- true`, one process per run) and `vmctl --version` against
#     the library doing what one vmctl process does (bench/exec-cli.c, interleaved);
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
for b in exec-rtt exec-cli; do
  gcc -std=gnu17 -O2 -D_GNU_SOURCE -Iinclude -I"$build/include" -I"$build" -Isrc/lib -Isrc/proto \
    -Isrc/shared -o "$tmp/$b" \
    "bench/$b.c" src/lib/agent-transport.c src/lib/agent-session.c src/lib/agent-client.c \
    src/lib/error.c src/lib/error-table.c \
    src/lib/util/util.c src/proto/agent-proto.c -lpthread
done
sock=$("$V" status --json eb | jq -r .dir)/agent.sock
gcc -std=gnu17 -O2 -static -o "$tmp/exec-spawn" bench/exec-spawn.c
gcc -std=gnu17 -O2 -static -nostdlib -o "$tmp/exec-tiny" bench/exec-tiny.c
"$V" cp "$tmp/exec-spawn" eb:/tmp/exec-spawn
"$V" cp "$tmp/exec-tiny" eb:/tmp/exec-tiny
echo "== warm exec, $runs runs (TCG, $(nproc) host cores)"
# the channel's floor (echo) and the library's exec, of `true` (busybox) and of the smallest
# program (bench/exec-tiny.c); then the guest's own cost of starting each, measured inside it
"$tmp/exec-rtt" "$sock" "$runs" true
"$tmp/exec-rtt" "$sock" "$runs" /tmp/exec-tiny | grep library
# the CLI's cadence: a new session per exec, the guest idle meanwhile (4 ms: about what one vmctl
# process spends on the host before its EXEC goes out)
"$tmp/exec-rtt" "$sock" "$runs" true 4
"$V" exec eb -- /tmp/exec-spawn 100 0 /bin/true | grep vfork
"$V" exec eb -- /tmp/exec-spawn 100 0 /tmp/exec-tiny | grep vfork
# the CLI against the library doing what one vmctl process does (interleaved, timed in C)
"$tmp/exec-cli" "$V" eb "$sock" "$runs"
# several vmctl processes on one VM (4 agent ports): 4 x `sleep 1` at once against one after the
# other, wall time
t0=$(date +%s%N)
for i in 1 2 3 4; do "$V" exec eb -- sleep 1; done
seq_ns=$(( $(date +%s%N) - t0 ))
t0=$(date +%s%N)
for i in 1 2 3 4; do "$V" exec eb -- sleep 1 & done; wait
par_ns=$(( $(date +%s%N) - t0 ))
awk -v s="$seq_ns" -v p="$par_ns" 'BEGIN { printf "4 x exec sleep 1: one after the other %.2f s, 4 processes at once %.2f s (ratio %.2f)\n", s / 1e9, p / 1e9, p / s }'

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
