#!/usr/bin/env bash
# What --net netns:PATH costs a VM's life: create + start (no wait) + destroy --force of the
# default guest with --net none, --net netns:PATH (the pod namespace's TAP and two tc redirects)
# and --net tap (lease, TAP, route, nftables), interleaved, N rounds; the mean of each and the
# ratios to --net none. Root.
#   VMCTL=$PWD/build/src/cli/vmctl VMCTL_TEST_IMAGES=/work/images bash bench/net-netns.sh [N]
set -u
N=${1:-8}
VMCTL=${VMCTL:?VMCTL=path/to/vmctl}
POD=vmctl-bnn-pod$$
PEER=vmctl-bnn-peer$$
HOME_DIR=$(mktemp -d /tmp/vmctl-bench-netns.XXXXXX)
trap '$VMCTL --home $HOME_DIR list -q 2>/dev/null | while read -r n; do
        $VMCTL --home $HOME_DIR destroy --force "$n" >/dev/null 2>&1; done
      ip netns del $POD 2>/dev/null; ip netns del $PEER 2>/dev/null; rm -rf "$HOME_DIR"' EXIT
mkdir -p "$HOME_DIR" && ln -s "${VMCTL_TEST_IMAGES:?}" "$HOME_DIR/images"
ip netns add "$POD" && ip netns add "$PEER"
ip -n "$POD" link set lo up && ip -n "$PEER" link set lo up
ip link add bn0 netns "$POD" type veth peer name bn1 netns "$PEER"
ip -n "$POD" addr add 10.67.0.2/24 dev bn0 && ip -n "$POD" link set bn0 up
ip -n "$POD" route add default via 10.67.0.1
ip -n "$PEER" addr add 10.67.0.1/24 dev bn1 && ip -n "$PEER" link set bn1 up
v() { "$VMCTL" --home "$HOME_DIR" "$@"; }
now() { date +%s%N; }
declare -A net=([none]=none [netns]="netns:/var/run/netns/$POD" [tap]=tap) total=([none]=0 [netns]=0 [tap]=0)
for i in $(seq "$N"); do
  for mode in none netns tap; do
    t0=$(now)
    v create "b$mode$i" --net "${net[$mode]}" >/dev/null 2>&1 && v start "b$mode$i" >/dev/null 2>&1 &&
      v destroy --force "b$mode$i" >/dev/null 2>&1 || { echo "failed: $mode $i"; exit 1; }
    total[$mode]=$((total[$mode] + $(now) - t0))
  done
done
none=$((total[none] / N / 1000000)) netns=$((total[netns] / N / 1000000)) tap=$((total[tap] / N / 1000000))
echo "create+start+destroy, mean of $N: none ${none} ms, netns ${netns} ms, tap ${tap} ms"
awk -v a="$netns" -v b="$none" -v c="$tap" 'BEGIN { printf "netns / none %.2fx, tap / none %.2fx\n", a / b, c / b }'
