#!/usr/bin/env bash
# What --net tap costs a VM's life: create + start (no wait) + destroy --force of the default
# guest, N times with --net none and N times with --net tap (TAP, address, route, nftables rules,
# lease), alternating, in a network namespace of its own; prints the mean of each and the
# difference (the network's setup and teardown). Then, with THROUGHPUT=1, a guest's download and
# ping round trip
# through the TAP with its firewall against the same download with vmctl's table removed (a bare
# TAP): their ratio. Root; VMCTL and VMCTL_TEST_IMAGES as for the integration tests.
#   VMCTL=$PWD/build/src/cli/vmctl VMCTL_TEST_IMAGES=/work/images bash bench/net-tap.sh [N]
set -u
N=${1:-10}
VMCTL=${VMCTL:?VMCTL=path/to/vmctl}
NS=vmctl-bench-h$$
UP=vmctl-bench-u$$
HOME_DIR=$(mktemp -d /tmp/vmctl-bench-net.XXXXXX)
trap 'ip netns exec $NS $VMCTL --home $HOME_DIR list -q 2>/dev/null | while read -r n; do
        ip netns exec $NS $VMCTL --home $HOME_DIR destroy --force "$n" >/dev/null 2>&1; done
      [ -n "${SRV:-}" ] && kill $SRV 2>/dev/null
      ip netns del $NS 2>/dev/null; ip netns del $UP 2>/dev/null; rm -rf "$HOME_DIR"' EXIT
mkdir -p "$HOME_DIR" && ln -s "${VMCTL_TEST_IMAGES:?}" "$HOME_DIR/images"
ip netns add "$NS" && ip netns add "$UP"
ip -n "$NS" link set lo up && ip -n "$UP" link set lo up
ip link add up0 netns "$NS" type veth peer name up1 netns "$UP"
ip -n "$NS" addr add 10.99.0.1/24 dev up0 && ip -n "$NS" link set up0 up
ip -n "$UP" addr add 10.99.0.2/24 dev up1 && ip -n "$UP" link set up1 up
ip -n "$NS" route add default via 10.99.0.2
v() { ip netns exec "$NS" "$VMCTL" --home "$HOME_DIR" "$@"; }
now() { date +%s%N; }

declare -A total=([none]=0 [tap]=0)
for i in $(seq "$N"); do
  for mode in none tap; do
    t0=$(now)
    v create "b$mode$i" --net "$mode" >/dev/null 2>&1 && v start "b$mode$i" >/dev/null 2>&1 &&
      v destroy --force "b$mode$i" >/dev/null 2>&1 || { echo "failed: $mode $i"; exit 1; }
    total[$mode]=$((total[$mode] + $(now) - t0))
  done
done
none=$((total[none] / N / 1000000)) tap=$((total[tap] / N / 1000000))
echo "create+start+destroy, mean of $N: --net none ${none} ms, --net tap ${tap} ms," \
  "difference $((tap - none)) ms"

[ "${THROUGHPUT:-0}" = 1 ] || exit 0
mkdir -p "$HOME_DIR/www" && head -c 20000000 /dev/zero >"$HOME_DIR/www/big.bin"
(cd "$HOME_DIR/www" && exec ip netns exec "$UP" python3 -m http.server 8000 --bind 10.99.0.2) \
  >/dev/null 2>&1 &
SRV=$!
sleep 1
v create tp --net tap --allow 10.99.0.2 >/dev/null 2>&1 &&
  v start tp --wait >/dev/null 2>&1 || { echo "failed: start tp"; exit 1; }
xfer() {
  v exec tp -- sh -c 'a=$(cut -d" " -f1 /proc/uptime); printf "GET /big.bin HTTP/1.0\r\n\r\n" |
    nc -w 20 10.99.0.2 8000 | wc -c >/dev/null; b=$(cut -d" " -f1 /proc/uptime)
    echo "$a $b" | awk "{printf \"%d\", (\$2 - \$1) * 1000}"'
}
rtt() { # mean ping round trip in microseconds
  v exec tp -- ping -q -c 20 -i 0.05 10.99.0.2 | awk -F/ '/avg/ {printf "%d", $4 * 1000}'
}
fw=0 bare=0 rfw=0 rbare=0
to_bare() {
  rules=$(ip netns exec "$NS" nft list table inet vmctl)
  ip netns exec "$NS" nft delete table inet vmctl
  ip netns exec "$NS" nft add table ip benchnat
  ip netns exec "$NS" nft add chain ip benchnat post '{ type nat hook postrouting priority 100; }'
  ip netns exec "$NS" nft add rule ip benchnat post oifname up0 masquerade
}
to_fw() {
  ip netns exec "$NS" nft delete table ip benchnat
  ip netns exec "$NS" nft -f - <<<"$rules"
}
# alternating which goes first: the guest warms up over the runs
for i in 1 2 3 4; do
  if [ $((i % 2)) = 1 ]; then
    fw=$((fw + $(xfer))) rfw=$((rfw + $(rtt)))
    to_bare
    bare=$((bare + $(xfer))) rbare=$((rbare + $(rtt)))
  else
    to_bare
    bare=$((bare + $(xfer))) rbare=$((rbare + $(rtt)))
    to_fw
    fw=$((fw + $(xfer))) rfw=$((rfw + $(rtt)))
    continue
  fi
  to_fw
done
echo "20 MB download, 4 runs: with the firewall ${fw} ms, bare TAP (masquerade only) ${bare} ms," \
  "throughput ratio $(awk "BEGIN {printf \"%.2f\", $bare / $fw}")"
echo "ping round trip, 4 x 20: with the firewall $((rfw / 4)) us, bare TAP $((rbare / 4)) us," \
  "ratio $(awk "BEGIN {printf \"%.2f\", $rbare / $rfw}")"
