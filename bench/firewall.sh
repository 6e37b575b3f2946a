#!/bin/bash
# The firewall of TAP VMs at scale (docs/benchmarks.md, "Firewall rules at 200 VMs"): rule and set
# element counts with 1 and 200 VMs, the time to apply and remove one VM's rules with 1 and with 200
# VMs installed, and the throughput and round trip of one flow from a fake VM (a veth in its own
# namespace, as in tests/integration/test-firewall.sh) through its rules with the vmctl table
# absent, with 1 VM and with 200 VMs. Root; everything in namespaces this script makes.
#   bench/firewall.sh [BUILD_DIR]      ROUNDS=3 SECONDS_PER_RUN=2
set -euo pipefail
BUILD=${1:-build}
D=$(readlink -f "$BUILD/tests/integration/fw-driver")
FLOW=$(readlink -f "$(dirname "$0")/fw-flow.py")
ROUNDS=${ROUNDS:-3} SECS=${SECONDS_PER_RUN:-2}
H=fbh$$ A=fba$$ U=fbu$$ E=fbe$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in $H $A $U $E; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
for ns in $H $A $U $E; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec "$H" sysctl -qw net.ipv4.ip_forward=1
ip -n "$H" link add vt-a type veth peer name eth0 netns "$A"
ip -n "$H" addr add 10.77.0.1 peer 10.77.0.2 dev vt-a && ip -n "$H" link set vt-a up
ip -n "$A" addr add 10.77.0.2 peer 10.77.0.1 dev eth0 && ip -n "$A" link set eth0 up
ip -n "$A" route add default via 10.77.0.1
ip -n "$H" link add up0 type veth peer name eth0 netns "$U"
ip -n "$H" addr add 203.0.113.1/24 dev up0 && ip -n "$H" link set up0 up
ip -n "$U" addr add 203.0.113.2/24 dev eth0 && ip -n "$U" link set eth0 up
ip -n "$U" route add 10.77.0.0/16 via 203.0.113.1 # the bare run has no masquerade
ip netns exec "$U" python3 "$FLOW" server 5001 & pids+=($!)
sleep 0.5

fw() { ip netns exec "$H" "$D" "$@"; }
apply_a() { fw apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow 203.0.113.2:5001/tcp --allow-dns --fwd 2222:22; }
run() { ip netns exec "$A" python3 "$FLOW" "$1" 203.0.113.2 5001 "$SECS"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A st rr
for r in $(seq "$ROUNDS"); do
  fw table-remove
  st[bare]+="$(run stream) " rr[bare]+="$(run rr) "
  apply_a
  st[one]+="$(run stream) " rr[one]+="$(run rr) "
  [ "$r" = 1 ] && stats1=$(fw stats)
  fw fill 199 >/dev/null
  st[many]+="$(run stream) " rr[many]+="$(run rr) "
  [ "$r" = 1 ] && stats200=$(fw stats)
done
fw table-remove
# apply/remove per VM: into an empty table, and with 200 VMs installed (in a namespace of its own)
one=$(ip netns exec "$E" "$D" bench 1)
ip netns exec "$E" "$D" table-remove
at200=$(ip netns exec "$E" "$D" bench 200)

echo "rounds $ROUNDS, $SECS s per run, medians"
for c in bare one many; do
  s=$(tr ' ' '\n' <<<"${st[$c]}" | grep . | median)
  t=$(tr ' ' '\n' <<<"${rr[$c]}" | grep . | median)
  eval "S_$c=$s T_$c=$t"
  printf '%-5s stream %8.1f MB/s   rr %7.1f us   (runs: %s| %s)\n' "$c" "$s" "$t" "${st[$c]}" "${rr[$c]}"
done
awk -v a="$S_many" -v b="$S_one" -v c="$T_many" -v d="$T_one" -v e="$S_bare" -v f="$T_bare" 'BEGIN {
  printf "throughput 200 VMs / 1 VM: %.3f   round trip 200 VMs / 1 VM: %.3f\n", a / b, c / d
  printf "throughput 1 VM / no table: %.3f   round trip 1 VM / no table: %.3f\n", b / e, d / f }'
echo "1 VM installed:    $stats1"
echo "200 VMs installed: $stats200"
echo "apply/remove, empty table: $one"
echo "apply/remove, 200 VMs:     $at200"
