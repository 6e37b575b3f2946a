#!/bin/bash
# The firewall of TAP VMs at scale (docs/benchmarks.md, "Firewall rules at 200 VMs"): rule and set
# element counts with 1 and 200 VMs, the time to apply and remove one VM's rules into an empty
# table and with 200 VMs installed, and the throughput and round trip of one flow from a fake VM
# (a veth in its own namespace, as in tests/integration/test-firewall.sh) to an uplink server
# through the host with no vmctl table, with the rules of 1 VM, and with those of 200 VMs. The
# three are three identical sets of namespaces side by side, measured in alternation (short runs,
# many rounds: the median and the best of each), so a busy host disturbs all three alike.
# Root; everything in namespaces this script makes.
#   bench/firewall.sh [BUILD_DIR]      ROUNDS=21 SECONDS_PER_RUN=0.5
set -euo pipefail
BUILD=${1:-build}
D=$(readlink -f "$BUILD/tests/integration/fw-driver")
FLOW=$(readlink -f "$(dirname "$0")/fw-flow.py")
ROUNDS=${ROUNDS:-21} SECS=${SECONDS_PER_RUN:-0.5}
P=fb$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for c in bare one many; do for r in h a u; do ip netns del "$P$r$c" 2>/dev/null || true; done; done
  ip netns del "${P}e" 2>/dev/null || true
}
trap cleanup EXIT
# topo C: namespaces ${P}hC (host), ${P}aC (the fake VM), ${P}uC (the uplink and its server)
topo() {
  local c=$1 H=${P}h$1 A=${P}a$1 U=${P}u$1
  for ns in $H $A $U; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  ip netns exec "$H" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$H" link add vt-a type veth peer name eth0 netns "$A"
  ip -n "$H" addr add 10.77.0.1 peer 10.77.0.2 dev vt-a && ip -n "$H" link set vt-a up
  ip -n "$A" addr add 10.77.0.2 peer 10.77.0.1 dev eth0 && ip -n "$A" link set eth0 up
  ip -n "$A" route add default via 10.77.0.1
  ip -n "$H" link add up0 type veth peer name eth0 netns "$U"
  ip -n "$H" addr add 203.0.113.1/24 dev up0 && ip -n "$H" link set up0 up
  ip -n "$U" addr add 203.0.113.2/24 dev eth0 && ip -n "$U" link set eth0 up
  ip -n "$U" route add 10.77.0.0/16 via 203.0.113.1 # bare has no masquerade
  ip netns exec "$U" python3 "$FLOW" server 5001 &
  pids+=($!)
  [ "$c" = bare ] && return
  ip netns exec "$H" "$D" apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow 203.0.113.2:5001/tcp \
    --allow-dns --fwd 2222:22
  if [ "$c" = many ]; then ip netns exec "$H" "$D" fill 199 >/dev/null; fi
}
for c in bare one many; do topo $c; done
stats1=$(ip netns exec "${P}hone" "$D" stats)
stats200=$(ip netns exec "${P}hmany" "$D" stats)
sleep 0.5

run() { ip netns exec "${P}a$2" python3 "$FLOW" "$1" 203.0.113.2 5001 "$SECS"; }
declare -A st rr
orders=("bare one many" "one many bare" "many bare one") # no configuration always goes first
for i in $(seq "$ROUNDS"); do
  for c in ${orders[$((i % 3))]}; do st[$c]+="$(run stream $c) "; rr[$c]+="$(run rr $c) "; done
done
# apply/remove per VM: into an empty table, and with 200 VMs installed
ip netns add "${P}e"
one=$(ip netns exec "${P}e" "$D" bench 1)
ip netns exec "${P}e" "$D" table-remove
at200=$(ip netns exec "${P}e" "$D" bench 200)

med() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
best() { tr ' ' '\n' | grep . | sort -n | sed -n "$1"; }
echo "rounds $ROUNDS, $SECS s per run, in alternation"
declare -A S T Sb Tb
for c in bare one many; do
  S[$c]=$(med <<<"${st[$c]}") T[$c]=$(med <<<"${rr[$c]}")
  Sb[$c]=$(best '$p' <<<"${st[$c]}") Tb[$c]=$(best 1p <<<"${rr[$c]}")
  printf '%-5s stream median %7.1f MB/s best %7.1f   rr median %6.1f us best %6.1f\n' "$c" \
    "${S[$c]}" "${Sb[$c]}" "${T[$c]}" "${Tb[$c]}"
done
awk -v s1="${S[one]}" -v s2="${S[many]}" -v s0="${S[bare]}" -v t1="${T[one]}" -v t2="${T[many]}" \
  -v t0="${T[bare]}" -v b1="${Sb[one]}" -v b2="${Sb[many]}" -v c1="${Tb[one]}" -v c2="${Tb[many]}" 'BEGIN {
  printf "200 VMs / 1 VM:   throughput %.3f (best %.3f)   round trip %.3f (best %.3f)\n", s2/s1, b2/b1, t2/t1, c2/c1
  printf "1 VM / no table:  throughput %.3f   round trip %.3f\n", s1/s0, t1/t0 }'
echo "1 VM installed:    $stats1"
echo "200 VMs installed: $stats200"
echo "apply/remove, empty table: $one"
echo "apply/remove, 200 VMs:     $at200"
