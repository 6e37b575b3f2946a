#!/bin/bash
# Snapshots (docs/snapshots.md, docs/benchmarks.md "Snapshots, restore and clone"), all in one run:
#  1. cold boot to ready (`start --wait`) against `snapshot restore` to ready, same VM, N each,
#     interleaved; and the cost of --snapshottable (cold boot with and without);
#  2. restore to ready of a 2 GiB guest against a 256 MiB one (template);
#  3. `clone --count 10` against ten cold boots (create + start --wait, one after the other);
#  4. host PSS of QEMU per idle clone against a cold-booted VM (without --snapshottable);
#  5. snapshot create time against RAM size, template and full;
#  6. clone to ready from a warm pool (`vmctl pool`) against a clone without one and a cold boot,
#     N each, interleaved, and the host PSS of one waiting pool process.
# Usage: bench/snapshot.sh BUILD_DIR [N] [SECTIONS] ; SECTIONS: e.g. "6" or "1 6" (default: all).
# VMCTL_BENCH_IMAGES=DIR uses DIR/default as the default guest (else it is built into the bench's
# home).
set -euo pipefail
build=${1:?build dir}; n=${2:-5}; sections=${3:-1 2 3 4 5 6}
want() { [[ " $sections " == *" $1 "* ]]; }
vmctl=$build/src/cli/vmctl
home=$(mktemp -d /tmp/vmctl-bench.XXXXXX)
v() { "$vmctl" --home "$home" "$@"; }
cleanup() {
  v pool list --json 2>/dev/null | jq -r '.[] | "\(.vm)/\(.snapshot)"' | while read -r p; do
    v pool rm "$p" >/dev/null; done
  for x in $(v list --json | jq -r '.[].name'); do v destroy --force "$x" >/dev/null; done
  v snapshot list --json | jq -r '.[] | "\(.vm) \(.name)"' | while read -r a b; do
    v snapshot rm "$a" "$b" >/dev/null; done
  pkill -9 -f "$home/" || true
  rm -rf "$home"
}
trap cleanup EXIT
if [ -n "${VMCTL_BENCH_IMAGES:-}" ]; then ln -s "$VMCTL_BENCH_IMAGES" "$home/images"
else v image build-default >/dev/null; fi

ms() { echo $(($(date +%s%N) / 1000)); } # usec
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
fmt() { awk -v u="$1" 'BEGIN {printf "%.1f ms", u/1000}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3fx", a/b}'; }
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }
pid_of() { v status --json "$1" | jq -r .pid; }

# --- 1. cold boot vs restore, and the cost of --snapshottable ---
if want 1 || want 2 || want 3 || want 4; then
v create t --snapshottable >/dev/null
v create plain >/dev/null
# r: taken the moment the guest is ready, while the default guest's /init still loads the NIC,
# disk and vsock modules in the background (its restores finish that work first); s: taken of
# the guest settled (3 s later), as a template prepared before it is snapshotted is
v start t --wait >/dev/null
v snapshot create t r >/dev/null
v start t --wait >/dev/null
sleep 3
v snapshot create t s >/dev/null
cold=() restore=() restore_r=() plain_cold=()
for i in $(seq "$n"); do
  t0=$(ms); v start t --wait >/dev/null; t1=$(ms); cold+=($((t1 - t0))); v kill t >/dev/null
  t0=$(ms); v ${BENCH_V:-} snapshot restore t s >/dev/null 2>>"${BENCH_LOG:-/dev/null}"; t1=$(ms); restore+=($((t1 - t0))); v kill t >/dev/null
  t0=$(ms); v snapshot restore t r >/dev/null; t1=$(ms); restore_r+=($((t1 - t0))); v kill t >/dev/null
  t0=$(ms); v start plain --wait >/dev/null; t1=$(ms); plain_cold+=($((t1 - t0))); v kill plain >/dev/null
done
mc=$(printf '%s\n' "${cold[@]}" | median); mr=$(printf '%s\n' "${restore[@]}" | median)
mrr=$(printf '%s\n' "${restore_r[@]}" | median)
mp=$(printf '%s\n' "${plain_cold[@]}" | median)
echo "1. cold boot to ready (snapshottable): $(fmt "$mc"); restore to ready (snapshot of the settled guest): $(fmt "$mr"); ratio $(ratio "$mr" "$mc")"
echo "   restore to ready of the snapshot taken at ready (its boot's last work still to do): $(fmt "$mrr"); ratio $(ratio "$mrr" "$mc")"
echo "   cold boot without --snapshottable: $(fmt "$mp"); with: $(fmt "$mc"); ratio $(ratio "$mc" "$mp")"
echo "   samples (usec): cold ${cold[*]}; restore ${restore[*]}; restore at ready ${restore_r[*]}"
# the floor: the same restore by QEMU alone (its command line as vmctl ran it, to the agent's
# first PONG: no jail, no store, no identity), bench/raw-restore.py
v snapshot restore t s >/dev/null
cp /proc/"$(pid_of t)"/cmdline "$home/t.cmdline"
v kill t >/dev/null
raw=$(python3 "$(dirname "$0")/raw-restore.py" "$home/t.cmdline" "$home/snapshots/t/s/state" "$n" | median)
echo "   restore by QEMU alone to the agent's first answer: $(fmt "$raw"); ratio to cold boot $(ratio "$raw" "$mc"); vmctl restore / QEMU alone $(ratio "$mr" "$raw")"
fi

# --- 2. restore of 2 GiB against 256 MiB ---
if want 2; then
v create big --snapshottable --memory 2G >/dev/null
v start big --wait >/dev/null
sleep 3 # settled, as t/s is
v snapshot create big s >/dev/null
small=() large=()
for i in $(seq "$n"); do
  t0=$(ms); v snapshot restore t s >/dev/null; t1=$(ms); small+=($((t1 - t0))); v kill t >/dev/null
  t0=$(ms); v snapshot restore big s >/dev/null; t1=$(ms); large+=($((t1 - t0))); v kill big >/dev/null
done
ms_=$(printf '%s\n' "${small[@]}" | median); ml=$(printf '%s\n' "${large[@]}" | median)
echo "2. restore to ready, 256 MiB: $(fmt "$ms_"); 2 GiB: $(fmt "$ml"); ratio $(ratio "$ml" "$ms_")"
fi

# --- 3. clone --count 10 against ten cold boots ---
if want 3 || want 4; then
t0=$(ms); v clone t s c --count 10 >/dev/null; t1=$(ms); tc=$((t1 - t0))
t0=$(ms)
for i in $(seq 10); do v create "b$i" >/dev/null; v start "b$i" --wait >/dev/null; done
t1=$(ms); tb=$((t1 - t0))
echo "3. clone --count 10: $(fmt "$tc"); ten cold boots: $(fmt "$tb"); ratio $(ratio "$tc" "$tb")"

# --- 4. PSS per idle clone against a cold-booted VM ---
sleep 5
pc=0; for i in $(seq 10); do pc=$((pc + $(pss_kb "$(pid_of "c-$i")"))); done
pb=0; for i in $(seq 10); do pb=$((pb + $(pss_kb "$(pid_of "b$i")"))); done
echo "4. QEMU PSS per idle VM: clone $((pc / 10)) KiB, cold-booted $((pb / 10)) KiB; ratio $(ratio "$pc" "$pb")"
for i in $(seq 10); do v destroy --force "c-$i" >/dev/null; v destroy --force "b$i" >/dev/null; done
fi

# --- 5. snapshot create time against RAM size ---
if want 5; then
line="5. snapshot create (save_ms, guest stopped):"
for mem in 256 1024 2048; do
  v create "m$mem" --snapshottable --memory "$mem" >/dev/null
  v create "f$mem" --memory "$mem" >/dev/null
  v start "m$mem" --wait >/dev/null; v start "f$mem" --wait >/dev/null
  tt=$(v --json snapshot create "m$mem" s | jq .save_ms)
  tf=$(v --json snapshot create "f$mem" s | jq .save_ms)
  line+=" $mem MiB template $(printf '%.1f' "$tt") ms full $(printf '%.1f' "$tf") ms;"
  v destroy --force "m$mem" >/dev/null; v destroy --force "f$mem" >/dev/null
done
echo "$line"
fi

# --- 6. clone from a warm pool against a clone without one and a cold boot ---
if want 6; then
pool_ready() { v pool list --json | jq -r '.[] | select(.vm == "w") | "\(.ready)/\(.size)"'; }
v create w --snapshottable >/dev/null; v start w --wait >/dev/null; v snapshot create w s >/dev/null
v create u --snapshottable >/dev/null; v start u --wait >/dev/null; v snapshot create u s >/dev/null
v pool w/s --size 2 >/dev/null
cold=() nopool=() pooled=()
for i in $(seq "$n"); do
  for _ in $(seq 600); do [ "$(pool_ready)" = 2/2 ] && break; sleep 0.1; done
  t0=$(ms); v clone w s "p$i" >/dev/null; t1=$(ms); pooled+=($((t1 - t0)))
  for _ in $(seq 600); do [ "$(pool_ready)" = 2/2 ] && break; sleep 0.1; done # the refill, off the clock
  v destroy --force "p$i" >/dev/null
  t0=$(ms); v start w --wait >/dev/null; t1=$(ms); cold+=($((t1 - t0))); v kill w >/dev/null
  t0=$(ms); v clone u s "n$i" >/dev/null; t1=$(ms); nopool+=($((t1 - t0))); v destroy --force "n$i" >/dev/null
done
mc=$(printf '%s\n' "${cold[@]}" | median); mn=$(printf '%s\n' "${nopool[@]}" | median)
mpl=$(printf '%s\n' "${pooled[@]}" | median)
echo "6. to ready: cold boot $(fmt "$mc"); clone without a pool $(fmt "$mn"); clone from a warm pool $(fmt "$mpl")"
echo "   pool / cold $(ratio "$mpl" "$mc"); no pool / cold $(ratio "$mn" "$mc"); pool / no pool $(ratio "$mpl" "$mn")"
echo "   samples (usec): cold ${cold[*]}; no pool ${nopool[*]}; pool ${pooled[*]}"
m=$(v pool list --json | jq -r '.[0].members[0]')
sleep 2
echo "   PSS of a waiting pool process: $(pss_kb "$(pid_of "$m")") KiB (the guest's RAM is $(v status --json "$m" | jq .memory_mib) MiB)"
v pool rm w/s >/dev/null
fi
