#!/bin/bash
# The firewall of TAP VMs (src/lib/firewall.c, through tests/integration/fw-driver) on real kernel
# networking, entirely inside network namespaces this test makes: a "host" namespace holding the
# vmctl table, two fake VMs (a veth standing in for each TAP, the guest end in a namespace of its
# own, routed point to point), an "uplink" namespace with HTTP servers on two ports, a UDP DNS
# stand-in and a private and a link-local address, and a service on the host itself.
#   - without rules everything is reachable (the plumbing works, so a failure below is the rules)
#   - no allow entry: nothing reachable; an allowed address:port is, another port is not
#   - the host is not reachable from a VM (its TAP address, its uplink address)
#   - a VM cannot reach another VM, not even with --allow-all
#   - private ranges and 169.254.0.0/16 stay closed under 0.0.0.0/0, open to an entry inside them;
#     --allow-all opens private ranges but not link-local
#   - DNS only when allowed, only to the resolver given
#   - a forward (DNAT) reaches the guest from the uplink, from the host's address and 127.0.0.1
#   - apply replaces, twice is the same; remove leaves nothing of the VM and is idempotent;
#     list names the VMs
#   - invalid input is refused before any netfilter call: no table is created
#   - 16 concurrent applies and then removes of different VMs all land
#   - without libnftables.so.1: host::missing_dependency, nothing created
source "$(dirname "$0")/lib.sh"
FW_DRIVER=${FW_DRIVER:-$(dirname "$VMCTL")/../../tests/integration/fw-driver}
[ -x "$FW_DRIVER" ] || { fail "no fw-driver at $FW_DRIVER (build with ninja)"; finish; }
[ "$(id -u)" = 0 ] || skip "needs root for network namespaces and nftables"
command -v ip >/dev/null || skip "ip is not installed (Debian package iproute2)"
command -v curl >/dev/null || skip "curl is not installed (Debian package curl)"
command -v python3 >/dev/null || skip "python3 is not installed (Debian package python3)"
command -v nft >/dev/null || skip "nft is not installed (Debian package nftables; the test reads the ruleset with it)"
ip netns add "fwchk$$" 2>/dev/null || skip "cannot create a network namespace here"
ip netns del "fwchk$$"

H=fwh$$ A=fwa$$ B=fwb$$ U=fwu$$ N=fwn$$
pids=()
cleanup_fw() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  for ns in $H $A $B $U $N; do ip netns del "$ns" 2>/dev/null; done
}
trap cleanup_fw EXIT

inh() { ip netns exec "$H" "$@"; }
fwd() { ip netns exec "$H" "$FW_DRIVER" "$@"; }
for ns in $H $A $B $U $N; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec "$H" sysctl -qw net.ipv4.ip_forward=1
# fake VM a: TAP "vt-a" on the host, 10.77.0.1 <-> 10.77.0.2
ip -n "$H" link add vt-a type veth peer name eth0 netns "$A"
ip -n "$H" addr add 10.77.0.1 peer 10.77.0.2 dev vt-a && ip -n "$H" link set vt-a up
ip -n "$A" addr add 10.77.0.2 peer 10.77.0.1 dev eth0 && ip -n "$A" link set eth0 up
ip -n "$A" route add default via 10.77.0.1
# fake VM b: "vt-b", 10.77.1.1 <-> 10.77.1.2
ip -n "$H" link add vt-b type veth peer name eth0 netns "$B"
ip -n "$H" addr add 10.77.1.1 peer 10.77.1.2 dev vt-b && ip -n "$H" link set vt-b up
ip -n "$B" addr add 10.77.1.2 peer 10.77.1.1 dev eth0 && ip -n "$B" link set eth0 up
ip -n "$B" route add default via 10.77.1.1
# the uplink: 203.0.113.0/24 (public stand-in), 192.168.77.0/24 (private), 169.254.169.254
# (metadata). It has no route back to 10.77/16: only masquerade makes replies come back.
ip -n "$H" link add up0 type veth peer name eth0 netns "$U"
ip -n "$H" addr add 203.0.113.1/24 dev up0 && ip -n "$H" addr add 192.168.77.1/24 dev up0
ip -n "$H" link set up0 up
ip -n "$U" addr add 203.0.113.2/24 dev eth0 && ip -n "$U" addr add 192.168.77.2/24 dev eth0
ip -n "$U" addr add 169.254.169.254/32 dev eth0 && ip -n "$U" link set eth0 up
ip -n "$H" route add 169.254.169.254/32 via 203.0.113.2

www=$(mktemp -d /tmp/vmctl-fw.XXXXXX)
echo hello-uplink >"$www/index.html"
serve() { # NS PORT: an HTTP server in NS on every address
  ip netns exec "$1" python3 -m http.server "$2" --bind 0.0.0.0 --directory "$www" >/dev/null 2>&1 &
  pids+=($!)
}
serve "$U" 8001; serve "$U" 8002; serve "$H" 8000; serve "$A" 8080; serve "$B" 8080
# a DNS stand-in: answers any datagram on udp 53 with "dns-ok"
ip netns exec "$U" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    d, a = s.recvfrom(512); s.sendto(b"dns-ok", a)' &
pids+=($!)
# reachable NS URL: one HTTP fetch with a deadline
reachable() { ip netns exec "$1" curl -s -o /dev/null --connect-timeout 2 --max-time 4 "$2"; }
# dns NS ADDR: one datagram to ADDR:53 answered within 1.5 s
dns() {
  ip netns exec "$1" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
s.sendto(b"q", (sys.argv[1], 53))
try: sys.exit(0 if s.recv(64) == b"dns-ok" else 1)
except OSError: sys.exit(1)' "$2"
}
yes_() { if reachable "$1" "$2"; then ok "$3"; else fail "$3: $2 not reachable from $1"; fi; }
no_() { if reachable "$1" "$2"; then fail "$3: $2 reachable from $1"; else ok "$3"; fi; }
# wait (with a deadline) for the servers to listen
for _ in $(seq 50); do
  reachable "$U" http://203.0.113.2:8002/ && reachable "$A" http://10.77.0.2:8080/ &&
    reachable "$B" http://10.77.1.2:8080/ && reachable "$H" http://127.0.0.1:8000/ && break
  sleep 0.1
done

# --- without rules: the plumbing works (so the denials below are the firewall's) ---
yes_ "$A" http://10.77.0.1:8000/ "no rules: the host's service is reachable from VM a"
yes_ "$A" http://10.77.1.2:8080/ "no rules: VM a reaches VM b"
inh nft list tables | grep -q vmctl && fail "a vmctl table exists before any apply"

# --- invalid input: refused before any netfilter call, nothing created ---
for bad in 10.0.0.1/8 10.0.0.0/33 10.0.0.0/8:0 10.0.0.0/8:70000 10.0.0.0/8:90-80 "1.2.3.4:80/icmp" example.com; do
  err=$(ip netns exec "$N" "$FW_DRIVER" apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow "$bad" 2>&1)
  rc=$?
  if [ $rc -eq 1 ] && grep -q '^vm_manager::network::config_invalid: ' <<<"$err" && grep -qx 'field: allow' <<<"$err"; then
    ok "allow '$bad' refused: ${err%%$'\n'*}"
  else
    fail "allow '$bad': exit $rc: $err"
  fi
done
err=$(ip netns exec "$N" "$FW_DRIVER" apply 'bad name' vt-a 10.77.0.2 10.77.0.1 2>&1)
grep -q 'config_invalid' <<<"$err" && grep -qx 'field: name' <<<"$err" && ok "a bad VM name is refused" || fail "bad VM name: $err"
err=$(ip netns exec "$N" "$FW_DRIVER" apply vm-a 'vt"a' 10.77.0.2 10.77.0.1 2>&1)
grep -qx 'field: ifname' <<<"$err" && ok "a bad interface name is refused" || fail "bad ifname: $err"
expect_eq "no table after refused input" "$(ip netns exec "$N" nft list tables)" ""

# --- no allow entry: nothing ---
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 || fail "apply vm-a"
no_ "$A" http://203.0.113.2:8001/ "no allow: the uplink server is closed"
no_ "$A" http://10.77.0.1:8000/ "no allow: the host's TAP address is closed"
no_ "$A" http://203.0.113.1:8000/ "no allow: the host's uplink address is closed"
if dns "$A" 203.0.113.2; then fail "no allow: DNS answered"; else ok "no allow: no DNS"; fi

# --- one address:port ---
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow 203.0.113.2:8001/tcp || fail "apply vm-a allow"
yes_ "$A" http://203.0.113.2:8001/ "allowed 203.0.113.2:8001/tcp is reachable (masqueraded)"
no_ "$A" http://203.0.113.2:8002/ "another port on the same server stays closed"
no_ "$A" http://10.77.0.1:8000/ "the host stays closed"
rules1=$(fwd stats)
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow 203.0.113.2:8001/tcp || fail "re-apply"
expect_eq "applying the same VM twice leaves the same rules" "$(fwd stats)" "$rules1"

# --- VM to VM ---
fwd apply vm-b vt-b 10.77.1.2 10.77.1.1 --allow-all || fail "apply vm-b"
no_ "$B" http://10.77.0.2:8080/ "VM b (allow-all) cannot reach VM a"
no_ "$A" http://10.77.1.2:8080/ "VM a cannot reach VM b"
no_ "$B" http://10.77.1.1:8000/ "allow-all: the host's TAP address stays closed"
no_ "$B" http://203.0.113.1:8000/ "allow-all: the host's uplink address stays closed"
yes_ "$B" http://192.168.77.2:8001/ "allow-all: a private range is open"
yes_ "$B" http://203.0.113.2:8002/ "allow-all: the uplink is open"
no_ "$B" http://169.254.169.254:8001/ "allow-all: link-local (metadata) stays closed"
expect_eq "list names both VMs" "$(fwd list | sort | paste -sd,)" "vm-a,vm-b"

# --- private ranges ---
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow 0.0.0.0/0 || fail "apply 0/0"
yes_ "$A" http://203.0.113.2:8002/ "0.0.0.0/0 opens the uplink"
no_ "$A" http://192.168.77.2:8001/ "0.0.0.0/0 leaves 192.168.0.0/16 closed"
no_ "$A" http://169.254.169.254:8001/ "0.0.0.0/0 leaves 169.254.0.0/16 closed"
no_ "$A" http://10.77.1.2:8080/ "0.0.0.0/0 leaves VM b closed"
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow 192.168.77.0/24:8001/tcp --allow 169.254.169.254 || fail "apply private"
yes_ "$A" http://192.168.77.2:8001/ "an entry inside 192.168.0.0/16 opens it"
no_ "$A" http://192.168.77.2:8002/ "only on its port"
yes_ "$A" http://169.254.169.254:8002/ "an entry for 169.254.169.254 opens it"
no_ "$A" http://203.0.113.2:8001/ "and nothing else"

# --- DNS ---
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 --allow-dns --dns 203.0.113.2 || fail "apply dns"
if dns "$A" 203.0.113.2; then ok "--allow-dns: the resolver answers"; else fail "--allow-dns: no answer"; fi
if dns "$A" 192.168.77.2; then fail "--allow-dns: another resolver answered"; else ok "--allow-dns: only the resolver given"; fi
no_ "$A" http://203.0.113.2:8001/ "--allow-dns opens nothing else"

# --- forwards (DNAT) ---
fwd apply vm-a vt-a 10.77.0.2 10.77.0.1 --fwd 18080:8080 || fail "apply fwd"
yes_ "$U" http://203.0.113.1:18080/ "a forward reaches the guest from the uplink"
yes_ "$H" http://203.0.113.1:18080/ "a forward reaches the guest from the host (its uplink address)"
yes_ "$H" http://10.77.0.1:18080/ "a forward reaches the guest from the host (its TAP address)"
yes_ "$H" http://127.0.0.1:18080/ "a forward reaches the guest from the host as 127.0.0.1"
expect_eq "route_localnet is on for the TAP (only)" "$(inh cat /proc/sys/net/ipv4/conf/vt-a/route_localnet /proc/sys/net/ipv4/conf/all/route_localnet | paste -sd,)" "1,0"
ip -n "$U" route add 10.77.0.0/16 via 203.0.113.1
no_ "$U" http://10.77.0.2:8080/ "the guest itself is not reachable from the uplink, only through the forward"
ip -n "$U" route del 10.77.0.0/16 via 203.0.113.1
no_ "$B" http://10.77.1.1:18080/ "VM b cannot reach VM a through a forward either"
err=$(fwd apply vm-c vt-c 10.77.2.2 10.77.2.1 --fwd 18080:80 2>&1)
grep -q "host port 18080/tcp is forwarded to VM 'vm-a'" <<<"$err" && ok "a host port held by another VM is refused, naming it" || fail "conflicting forward: $err"

# --- remove ---
fwd remove vm-a || fail "remove vm-a"
left=$(inh nft list table inet vmctl | grep -c 'vm-a\|vt-a\|10\.77\.0\.2')
expect_eq "remove leaves nothing of vm-a in the table" "$left" 0
fwd remove vm-a && ok "remove twice is fine" || fail "second remove failed"
expect_eq "list after remove" "$(fwd list)" "vm-b"
fwd remove vm-b || fail "remove vm-b"
expect_eq "nothing of any VM is left" "$(fwd list)" ""
expect_eq "only the base rules are left" "$(fwd stats)" "rules 7 elements 6"
fwd table-remove && expect_eq "table-remove deletes the table" "$(inh nft list tables)" ""
fwd remove vm-a && ok "remove with no table is fine" || fail "remove with no table failed"
# --- concurrent applies and removes of different VMs (racing creates) all land ---
jobs_=()
for i in $(seq 0 15); do
  ip netns exec "$N" "$FW_DRIVER" apply "c$i" "vc$i" "10.99.0.$((i + 2))" 10.99.1.1 \
    --allow 1.2.3.0/24:443/tcp --fwd "$((4000 + i)):22" &
  jobs_+=($!)
done
wait "${jobs_[@]}" # not the servers
expect_eq "16 concurrent applies: 16 VMs have rules" "$(ip netns exec "$N" "$FW_DRIVER" list | wc -l)" 16
jobs_=()
for i in $(seq 0 15); do ip netns exec "$N" "$FW_DRIVER" remove "c$i" & jobs_+=($!); done
wait "${jobs_[@]}"
expect_eq "16 concurrent removes: none left" "$(ip netns exec "$N" "$FW_DRIVER" list | wc -l)" 0
expect_eq "16 concurrent removes: only the base rules" "$(ip netns exec "$N" "$FW_DRIVER" stats)" "rules 7 elements 6"
# --- without libnftables: host::missing_dependency naming the package, nothing created ---
lib=$(ldconfig -p | awk '$1 == "libnftables.so.1" { print $NF; exit }')
if [ -n "$lib" ] && unshare --mount --propagation private true 2>/dev/null; then
  ip netns exec "$N" "$FW_DRIVER" table-remove
  err=$(ip netns exec "$N" unshare --mount --propagation private bash -c \
    'mount --bind /dev/null "$1" && shift && exec "$@"' _ "$(readlink -f "$lib")" \
    "$FW_DRIVER" apply vm-a vt-a 10.77.0.2 10.77.0.1 2>&1)
  if grep -q '^vm_manager::host::missing_dependency: cannot load libnftables.so.1' <<<"$err"; then
    ok "without libnftables.so.1: host::missing_dependency"
  else
    fail "without libnftables.so.1: $err"
  fi
  expect_eq "without libnftables: no table" "$(ip netns exec "$N" nft list tables)" ""
else
  skip_section "the missing-library check: libnftables.so.1 not in ldconfig or no private mount namespace"
fi
rm -rf "$www"
finish
