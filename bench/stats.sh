#!/bin/bash
# The cost of `vmctl stats`: one `vmctl stats NAME --json` against `vmctl status NAME --json` on
# the same running VM (the baseline: the same store read and process check, without /proc, QMP
# or the agent), interleaved; then `stats --json`, `stats --prometheus` and `status --json` of
# every VM with 10 VMs running; --no-guest shows what the agent's share is. Medians of RUNS runs each.
# Usage: bench/stats.sh BUILD_DIR [RUNS] (the default guest in $VMCTL_TEST_IMAGES, default
# /work/images)
set -euo pipefail
build=${1:?build dir}
runs=${2:-20}
vmctl=$(realpath "$build/src/cli/vmctl")
images=${VMCTL_TEST_IMAGES:-/work/images}
home=$(mktemp -d /tmp/vmctl-bench-stats.XXXXXX)
mkdir -p "$home/images"
ln -s "$images/default" "$home/images/default"
v() { "$vmctl" --home "$home" "$@"; }
trap 'for n in $(v list -q 2>/dev/null); do v destroy --force "$n" >/dev/null 2>&1; done; rm -rf "$home"' EXIT

ms() { date +%s%N; }
median() { sort -n | awk '{a[NR] = $1} END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m / 1e6 }'; }
bench() { # OUT-FILE CMD...: one run, appends nanoseconds
  local out=$1; shift
  local t0; t0=$(ms)
  "$@" >/dev/null 2>&1 || true
  echo $(($(ms) - t0)) >>"$out"
}

for i in $(seq 10); do
  v create "b$i" --net none --memory 128 >/dev/null 2>&1
done
for i in $(seq 10); do v start "b$i" >/dev/null; done
# on user-mode networking a sample also runs `cat /proc/net/dev` in the guest (guest_network)
v create u1 --net user --memory 128 >/dev/null 2>&1
v start u1 --wait --timeout 300 >/dev/null
# every agent answers before measuring
for i in $(seq 10); do
  for _ in $(seq 300); do v exec "b$i" -- true >/dev/null 2>&1 && break; sleep 0.2; done
done
for _ in $(seq 300); do v exec u1 -- true >/dev/null 2>&1 && break; sleep 0.2; done
echo "VMs running: $(v list --json | jq '[.[] | select(.state == "running")] | length')"

d=$(mktemp -d)
for _ in $(seq "$runs"); do
  bench "$d/status1" v status b1 --json
  bench "$d/stats1" v stats b1 --json
  bench "$d/prom1" v stats b1 --prometheus
  bench "$d/nog1" v stats b1 --json --no-guest
  bench "$d/user1" v stats u1 --json
  bench "$d/status10" sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do '$vmctl' --home '$home' status b\$i --json; done"
  bench "$d/stats10" v stats --json b1 b2 b3 b4 b5 b6 b7 b8 b9 b10
  bench "$d/prom10" v stats --prometheus b1 b2 b3 b4 b5 b6 b7 b8 b9 b10
  bench "$d/nog10" v stats --prometheus --no-guest b1 b2 b3 b4 b5 b6 b7 b8 b9 b10
done
s1=$(median <"$d/status1"); t1=$(median <"$d/stats1"); p1=$(median <"$d/prom1")
g1=$(median <"$d/nog1"); g10=$(median <"$d/nog10"); u1=$(median <"$d/user1")
s10=$(median <"$d/status10"); t10=$(median <"$d/stats10"); p10=$(median <"$d/prom10")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "| command | median | ratio to \`status NAME --json\` |"
echo "|---|---|---|"
echo "| \`vmctl status b1 --json\` | $s1 ms | 1.00 |"
echo "| \`vmctl stats b1 --json\` | $t1 ms | $(ratio "$t1" "$s1") |"
echo "| \`vmctl stats b1 --prometheus\` | $p1 ms | $(ratio "$p1" "$s1") |"
echo "| \`vmctl stats b1 --json --no-guest\` | $g1 ms | $(ratio "$g1" "$s1") |"
echo "| \`vmctl stats u1 --json\` (user-mode networking) | $u1 ms | $(ratio "$u1" "$s1") |"
echo "| 10 × \`vmctl status bN --json\` | $s10 ms | $(ratio "$s10" "$s1") |"
echo "| \`vmctl stats --json\` (10 VMs) | $t10 ms | $(ratio "$t10" "$s1") (per VM: $(ratio "$t10" "$s10") of a status) |"
echo "| \`vmctl stats --prometheus\` (10 VMs) | $p10 ms | $(ratio "$p10" "$s1") |"
echo "| \`vmctl stats --prometheus --no-guest\` (10 VMs) | $g10 ms | $(ratio "$g10" "$s1") |"
rm -rf "$d"
