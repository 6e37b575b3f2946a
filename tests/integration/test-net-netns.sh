#!/usr/bin/env bash
# --net netns:PATH (docs/networking.md, "A pod's network namespace"): the VM takes over an existing
# network namespace's uplink, as a containerd shim does with a pod's. The test makes a "pod"
# namespace (eth0 10.66.0.2/24, default route via 10.66.0.1, as a CNI plugin leaves it) and a
# "peer" one (10.66.0.1, an HTTP server on port 8000). Checks: invalid paths and a namespace
# without a default route are refused with their codes and nothing is left; the guest gets the
# pod's address, MAC and gateway; it fetches the peer's page; the peer reaches a server in the
# guest at the pod's address (so to the network the VM is the pod); the pod's own stack sees
# none of it; kill -9 of QEMU and then any command leave no redirect; stop and destroy leave no
# TAP, no ingress qdisc, no QEMU in the namespace.
TEST_NAME=net-netns
. "$(dirname "$0")/lib.sh"
fails=0
need_guest
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, TAP devices, tc)"
command -v ip >/dev/null || skip "ip is not installed (Debian package iproute2)"
command -v tc >/dev/null || skip "tc is not installed (Debian package iproute2)"
command -v jq >/dev/null || skip "jq is not installed (Debian package jq)"
[ -c /dev/net/tun ] || skip "/dev/net/tun is missing (kernel module tun)"

POD=vmctl-nn-pod$$
PEER=vmctl-nn-peer$$
BARE=vmctl-nn-bare$$
setup_home
WORK=$(mktemp -d /tmp/vmctl-net-netns-work.XXXXXX)
nn_cleanup() {
  cleanup
  [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null
  for n in "$POD" "$PEER" "$BARE"; do ip netns del "$n" 2>/dev/null; done
  rm -rf "$WORK"
}
trap nn_cleanup EXIT

ip netns add "$POD" && ip netns add "$PEER" && ip netns add "$BARE" ||
  skip "cannot create network namespaces"
for n in "$POD" "$PEER" "$BARE"; do ip -n "$n" link set lo up; done
ip link add nn0 netns "$POD" type veth peer name nn1 netns "$PEER"
ip -n "$POD" link set nn0 name eth0
ip -n "$POD" addr add 10.66.0.2/24 dev eth0 && ip -n "$POD" link set eth0 up
ip -n "$POD" route add default via 10.66.0.1
ip -n "$PEER" addr add 10.66.0.1/24 dev nn1 && ip -n "$PEER" link set nn1 up
POD_MAC=$(ip -n "$POD" -j link show eth0 | jq -r '.[0].address')
mkdir -p "$WORK/www"
echo "page-from-peer" >"$WORK/www/index.html"
(cd "$WORK/www" && exec ip netns exec "$PEER" python3 -m http.server 8000 --bind 10.66.0.1) \
  >/dev/null 2>&1 &
SRV_PID=$!
for i in $(seq 50); do
  ip netns exec "$PEER" python3 -c 'import socket; socket.create_connection(("10.66.0.1", 8000), 1)' \
    2>/dev/null && break
  sleep 0.1
done

what_is_left() { # in the pod namespace: our TAP, an ingress qdisc on eth0
  local t q
  t=$(ip -n "$POD" -o link show 2>/dev/null | grep -c 'vmctl0')
  q=$(tc -n "$POD" qdisc show dev eth0 2>/dev/null | grep -c ingress)
  echo "tap=$t ingress=$q"
}

# --- refused before anything exists ---
expect_code "a relative namespace path" vm_manager::network::config_invalid \
  create bad1 --net netns:var/run/netns/x
expect_eq "the error names the field" "$(jq -r '.error.details.field' <<<"$LAST_JSON")" "net"
expect_code "a namespace path that does not exist" vm_manager::network::config_invalid \
  create bad2 --net netns:/var/run/netns/no-such-ns-$$
expect_code "a path that is not a namespace" vm_manager::network::config_invalid \
  create bad3 --net netns:/etc/passwd
expect_eq "refused creates leave no VM" "$(vm list --json | jq length)" "0"
vm create bare --net "netns:/var/run/netns/$BARE" >/dev/null
expect_code "a namespace without a default route" vm_manager::network::setup_failed start bare
expect_eq "... and the failed start leaves nothing in it" \
  "$(ip -n "$BARE" -o link show | grep -c vmctl0)" "0"
vm destroy --force bare >/dev/null

# --- the VM is the pod ---
vm create pod1 --net "netns:/var/run/netns/$POD" >/dev/null && vm start pod1 --wait >/dev/null ||
  fail "create + start of a netns VM"
expect_eq "status shows the net" "$(vm status --json pod1 | jq -r .net)" "netns:/var/run/netns/$POD"
expect_eq "the redirect is there while it runs" "$(what_is_left)" "tap=1 ingress=1"
# the default guest's /init configures eth0 in its background part, shortly after ready
addr=
for i in $(seq 60); do
  addr=$(vm exec pod1 -- sh -c 'ip -o -4 addr show eth0 2>/dev/null' | awk '{print $4}')
  [ -n "$addr" ] && break
  sleep 0.25
done
expect_eq "the guest has the pod's address" "$addr" "10.66.0.2/24"
expect_eq "the guest has the pod's MAC" \
  "$(vm exec pod1 -- cat /sys/class/net/eth0/address)" "$POD_MAC"
expect_eq "the guest's gateway is the pod's" \
  "$(vm exec pod1 -- ip route | awk '/^default/ {print $3}')" "10.66.0.1"
page=
for i in $(seq 20); do
  page=$(vm exec pod1 -- sh -c "printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 4 10.66.0.1 8000 2>/dev/null | tail -n 1")
  [ "$page" = page-from-peer ] && break
  sleep 0.25
done
expect_eq "the guest fetches the peer's page" "$page" "page-from-peer"

# a server in the guest, reached from the peer at the pod's address
vm exec pod1 -- sh -c 'echo guest-answer >/tmp/a; (nc -l -p 7000 </tmp/a >/dev/null 2>&1 &)' >/dev/null
got=
for i in $(seq 20); do
  got=$(ip netns exec "$PEER" python3 -c '
import socket
s = socket.create_connection(("10.66.0.2", 7000), 2)
print(s.recv(100).decode().strip())' 2>/dev/null)
  [ -n "$got" ] && break
  sleep 0.25
done
expect_eq "the peer reaches the guest at the pod's address" "$got" "guest-answer"
# the pod's own stack is bypassed: nothing listens on 7000 there, and its counters stay still
rx_before=$(ip netns exec "$POD" cat /proc/net/snmp | awk '/^Ip: [0-9]/ {print $3}')
vm exec pod1 -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 4 10.66.0.1 8000 >/dev/null 2>&1"
rx_after=$(ip netns exec "$POD" cat /proc/net/snmp | awk '/^Ip: [0-9]/ {print $3}')
expect_eq "the pod's own IP stack receives none of the guest's traffic" "$rx_after" "$rx_before"

# --- one VM per namespace: a second is refused, and its destroy leaves the first's network ---
vm create pod2 --net "netns:/var/run/netns/$POD" >/dev/null
expect_code "a second VM on a taken namespace" vm_manager::network::setup_failed start pod2
vm destroy --force pod2 >/dev/null
expect_eq "... its destroy leaves the first VM's TAP and redirect" "$(what_is_left)" "tap=1 ingress=1"
page=$(vm exec pod1 -- sh -c "printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 4 10.66.0.1 8000 2>/dev/null | tail -n 1")
expect_eq "... and the first VM still reaches its peer" "$page" "page-from-peer"

# --- kill -9 of QEMU: the next command reconciles, the redirect goes ---
pid=$(vm status --json pod1 | jq -r .pid)
kill -9 "$pid"
for i in $(seq 50); do [ "$(state_of pod1)" = crashed ] && break; sleep 0.1; done
expect_eq "a killed QEMU is seen as crashed" "$(state_of pod1)" "crashed"
expect_eq "... and leaves no redirect or TAP in the namespace" "$(what_is_left)" "tap=0 ingress=0"

# --- start again, stop, destroy ---
vm start pod1 --wait >/dev/null || fail "a second start"
expect_eq "a second start makes them again" "$(what_is_left)" "tap=1 ingress=1"
vm stop pod1 >/dev/null
expect_eq "stop removes them" "$(what_is_left)" "tap=0 ingress=0"
vm start pod1 --wait >/dev/null || fail "a third start"
vm destroy --force pod1 >/dev/null
expect_eq "destroy removes them" "$(what_is_left)" "tap=0 ingress=0"
expect_eq "no QEMU is left" "$(pgrep -fc "$VMCTL_HOME/vms/")" "0"
expect_eq "the pod keeps its own address" \
  "$(ip -n "$POD" -o -4 addr show eth0 | awk '{print $4}')" "10.66.0.2/24"

finish
