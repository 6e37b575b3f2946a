#!/bin/bash
# Density (docs/snapshots.md, docs/benchmarks.md): 50 idle clones of one template snapshot at once
# on this machine, every one answering exec with its own hostname; and the host PSS of QEMU per
# idle clone against a cold-booted VM of the same size (printed, and checked below 1x: clones share
# the template's pages; the figure for the record is docs/benchmarks.md's).
# DENSITY_CLONES (default 50), DENSITY_MEMORY (default 128M).
source "$(dirname "$0")/lib.sh"
need_guest
setup_home
N=${DENSITY_CLONES:-50}
MEM=${DENSITY_MEMORY:-128M}
dens_cleanup() {
  for n in $("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null); do
    "$VMCTL" destroy --force "$n" >/dev/null 2>&1; done
  "$VMCTL" snapshot rm dsrc base >/dev/null 2>&1
  cleanup
}
trap dens_cleanup EXIT
pss_kb() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null; }
pid_of() { vm status --json "$1" | jq -r .pid; }

vm create dsrc --snapshottable --memory "$MEM" >/dev/null && vm start dsrc --wait >/dev/null ||
  { fail "create and start dsrc"; finish; }
vm snapshot create dsrc base >/dev/null || { fail "snapshot create"; finish; }
vm create cold --memory "$MEM" >/dev/null && vm start cold --wait >/dev/null || fail "a cold-booted VM"

t0=$(date +%s)
vm clone dsrc base d --count "$N" --timeout 120 >/dev/null || fail "clone --count $N"
t1=$(date +%s)
running=$(vm list --json | jq '[.[] | select((.name | startswith("d-")) and .state == "running")] | length')
expect_eq "$N clones running at once" "$running" "$N"

answered=0
for i in $(seq "$N"); do
  h=$(timeout 120 "$VMCTL" exec "d-$i" -- hostname 2>/dev/null)
  [ "$h" = "d-$i" ] && answered=$((answered + 1)) || echo "d-$i answered '$h'"
done
t2=$(date +%s)
expect_eq "every clone answers exec with its own hostname" "$answered" "$N"
# still all alive after the round (none died of memory or a watchdog meanwhile)
running=$(vm list --json | jq '[.[] | select((.name | startswith("d-")) and .state == "running")] | length')
expect_eq "all $N still running after the exec round" "$running" "$N"

sleep 5
total=0 counted=0
for i in $(seq "$N"); do
  p=$(pss_kb "$(pid_of "d-$i")"); [ -n "$p" ] && { total=$((total + p)); counted=$((counted + 1)); }
done
cold_pss=$(pss_kb "$(pid_of cold)")
if [ "$counted" -gt 0 ] && [ -n "$cold_pss" ]; then
  per=$((total / counted))
  echo "density: $N clones of a $MEM guest: clone --count $N $((t1 - t0)) s, exec round $((t2 - t1)) s;" \
    "QEMU PSS per idle clone $per KiB, cold-booted $cold_pss KiB, ratio" \
    "$(awk -v a="$per" -v b="$cold_pss" 'BEGIN {printf "%.3fx", a / b}')"
  [ "$per" -lt "$cold_pss" ] && ok "a clone costs less host memory than a cold-booted VM" ||
    fail "PSS per clone $per KiB >= cold-booted $cold_pss KiB"
else
  fail "cannot read PSS ($counted clones, cold '$cold_pss')"
fi
for i in $(seq "$N"); do vm destroy --force "d-$i" >/dev/null || fail "destroy d-$i"; done
vm snapshot rm dsrc base >/dev/null || fail "snapshot rm after the clones"
finish
