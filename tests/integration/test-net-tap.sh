#!/usr/bin/env bash
# --net tap (docs/networking.md) with real kernel networking, all of it in two network namespaces
# this test makes: "host" (where vmctl runs, under `ip netns exec`) and "uplink" (an HTTP server
# at 10.99.0.2 on ports 8000 and 8001, the host's default route). Checks: a TAP VM gets its
# address; without an allow rule it reaches nothing; with --allow of the server's address and
# port it fetches a page and the other port stays closed; two VMs cannot reach each other; a
# forward from the host reaches a server in the guest; a rate limit caps a transfer (a ratio
# against an unlimited VM); destroy, kill -9 of QEMU and of vmctl leave no TAP, route or nftables
# rule behind; invalid options create nothing; 32 racing creates get distinct addresses; a tiny
# pool fails cleanly when exhausted.
TEST_NAME=net-tap
. "$(dirname "$0")/lib.sh"
fails=0
need_guest
[ "$(id -u)" -eq 0 ] || skip "needs root (network namespaces, TAP devices, nftables)"
command -v ip >/dev/null || skip "ip is not installed (Debian package iproute2)"
command -v nft >/dev/null || skip "nft is not installed (Debian package nftables)"
command -v jq >/dev/null || skip "jq is not installed (Debian package jq)"
command -v curl >/dev/null || skip "curl is not installed (Debian package curl)"
[ -c /dev/net/tun ] || skip "/dev/net/tun is missing (kernel module tun)"

REAL_VMCTL=$VMCTL
NS=vmctl-nt-h$$
UP=vmctl-nt-u$$
setup_home
WORK=$(mktemp -d /tmp/vmctl-net-tap-work.XXXXXX)
net_cleanup() {
  cleanup
  [ -n "${SRV_PIDS:-}" ] && kill $SRV_PIDS 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  ip netns del "$UP" 2>/dev/null
  rm -rf "$WORK"
}
trap net_cleanup EXIT

ip netns add "$NS" && ip netns add "$UP" || skip "cannot create network namespaces"
ip -n "$NS" link set lo up
ip -n "$UP" link set lo up
ip link add up0 netns "$NS" type veth peer name up1 netns "$UP"
ip -n "$NS" addr add 10.99.0.1/24 dev up0 && ip -n "$NS" link set up0 up
ip -n "$UP" addr add 10.99.0.2/24 dev up1 && ip -n "$UP" link set up1 up
ip -n "$NS" route add default via 10.99.0.2
mkdir -p "$WORK/www"
echo "page-from-uplink" >"$WORK/www/index.html"
head -c 3000000 /dev/urandom >"$WORK/www/big.bin"
SRV_PIDS=
for p in 8000 8001; do
  (cd "$WORK/www" && exec ip netns exec "$UP" python3 -m http.server "$p" --bind 10.99.0.2) \
    >/dev/null 2>&1 &
  SRV_PIDS="$SRV_PIDS $!"
done

# every vmctl (lib.sh's helpers included) runs in the host namespace
# (`ip netns exec` mounts a fresh sysfs, without the cgroup hierarchies the jail's limits need:
# mounted again there, the same hierarchies as the host's)
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
  CGMOUNT='mount -t cgroup2 cgroup2 /sys/fs/cgroup'
else
  CGMOUNT='mount -t tmpfs cgroup /sys/fs/cgroup && for c in '"$(for c in cpu cpuacct memory pids blkio; do [ -d /sys/fs/cgroup/$c ] && printf '%s ' $c; done)"'; do mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done'
fi
cat >"$WORK/vmctl" <<EOF
#!/bin/sh
exec ip netns exec $NS sh -c '$CGMOUNT; exec "\$0" "\$@"' $REAL_VMCTL "\$@"
EOF
chmod +x "$WORK/vmctl"
VMCTL=$WORK/vmctl
inns() { ip netns exec "$NS" "$@"; }

for i in $(seq 50); do
  inns curl -s -m 1 http://10.99.0.2:8000/ >/dev/null && inns curl -s -m 1 http://10.99.0.2:8001/ \
    >/dev/null && break
  sleep 0.1
done

# A guest's HTTP GET with busybox nc: the body's byte count, or nothing when it cannot connect.
gexec() { "$VMCTL" exec "$@"; }
fetch_in() { # VM HOST PORT PATH
  gexec "$1" -- sh -c "printf 'GET $4 HTTP/1.0\r\n\r\n' | nc -w 4 $2 $3 2>/dev/null | tail -n 1"
}
# What vmctl made on the host for VM name: TAPs, routes, nftables chains
taps() { ip -n "$NS" -o link show | grep -o 'vm-[^:@]*' | sort; }
rules_of() { inns nft list ruleset 2>/dev/null | grep -c "vm $1\"" ; }
routes() { ip -n "$NS" route show | grep -c '^10\.88\.'; }

# --- invalid options: refused before anything is made ---
expect_code "--allow with a bad CIDR" vm_manager::network::config_invalid \
  create bad --net tap --allow 10.0.0.0/33
expect_eq "the error names the field" "$(jq -r .error.details.field <<<"$LAST_JSON")" allow
expect_code "--allow with a bad port" vm_manager::network::config_invalid \
  create bad --net tap --allow 10.0.0.0/8:99999
expect_code "--allow without --net tap" vm_manager::network::config_invalid \
  create bad --net user --allow 10.0.0.0/8
expect_code "--rate-limit-mbps without --net tap" vm_manager::network::config_invalid \
  create bad --rate-limit-mbps 5
expect_code "--disk-iops without a disk" vm_manager::config::invalid \
  create bad --net tap --disk-iops 100
expect_eq "nothing was created" "$("$VMCTL" list --json | jq length)" 0

# --- three VMs: no rule, an allow rule with a forward, a rate limit ---
vm create deny --net tap >/dev/null 2>&1 || fail "create deny"
vm create web --net tap --allow 10.99.0.2:8000/tcp --port 18080:80 >/dev/null 2>&1 || fail "create web"
vm create slow --net tap --allow 10.99.0.2:8000/tcp --rate-limit-mbps 8 >/dev/null 2>&1 ||
  fail "create slow"
for v in deny web slow; do
  vm start --wait --timeout 120 "$v" >/dev/null 2>"$WORK/err" || fail "start $v: $(cat "$WORK/err")"
done

ip_of() { "$VMCTL" status --json "$1" | jq -r .ip; }
WEB_IP=$(ip_of web)
DENY_IP=$(ip_of deny)
st=$("$VMCTL" status --json web)
case "$WEB_IP" in 10.88.*/30) ok "web has an address from the pool ($WEB_IP)" ;;
  *) fail "web's address: '$WEB_IP'" ;; esac
expect_eq "status has the MAC" "$(jq -r '.mac | test("^52:54:")' <<<"$st")" true
expect_eq "status has the egress policy" "$(jq -c .egress <<<"$st")" \
  '{"policy":"deny","allow":["10.99.0.2/32:8000/tcp"],"dns":false}'
got=$(gexec web -- ip -4 -o addr show dev eth0 | awk '{print $4}')
expect_eq "the guest configured its address" "$got" "$WEB_IP"
[ "$DENY_IP" != "$WEB_IP" ] && ok "two VMs, two addresses" || fail "both have $WEB_IP"
ns=$("$VMCTL" network show --json)
expect_eq "network show lists web's address" \
  "$(jq -r '.vms[] | select(.name == "web") | .ip' <<<"$ns")" "$WEB_IP"
expect_eq "network show counts the leases" "$(jq -r .leased <<<"$ns")" 3

expect_eq "without an allow rule the server is unreachable" "$(fetch_in deny 10.99.0.2 8000 /)" ""
expect_eq "with --allow the page is fetched" "$(fetch_in web 10.99.0.2 8000 /)" page-from-uplink
expect_eq "another port of the same server stays closed" "$(fetch_in web 10.99.0.2 8001 /)" ""

# a server in each guest; neither VM reaches the other's
for v in web deny; do
  gexec "$v" -- sh -c "mkdir -p /www && echo page-from-$v >/www/index.html && httpd -p 80 -h /www"
done
expect_eq "deny cannot reach web" "$(fetch_in deny "${WEB_IP%/*}" 80 /)" ""
expect_eq "web cannot reach deny" "$(fetch_in web "${DENY_IP%/*}" 80 /)" ""
expect_eq "a forward from the host reaches the guest's server" \
  "$(inns curl -s -m 5 http://10.99.0.1:18080/)" page-from-web
expect_eq "the forward reaches it on 127.0.0.1 too" \
  "$(inns curl -s -m 5 http://127.0.0.1:18080/)" page-from-web
expect_eq "the forward reaches it from the uplink too" \
  "$(ip netns exec "$UP" curl -s -m 5 http://10.99.0.1:18080/)" page-from-web

# the rate limit: the same transfer, limited and not, timed in the guests (a ratio)
xfer() { # VM: milliseconds for big.bin, bytes
  gexec "$1" -- sh -c 'a=$(cut -d" " -f1 /proc/uptime); printf "GET /big.bin HTTP/1.0\r\n\r\n" |
    nc -w 20 10.99.0.2 8000 | wc -c >/tmp/n; b=$(cut -d" " -f1 /proc/uptime)
    echo "$a $b $(cat /tmp/n)" | awk "{printf \"%d %d\n\", (\$2 - \$1) * 1000, \$3}"'
}
read -r t_fast n_fast <<<"$(xfer web)"
read -r t_slow n_slow <<<"$(xfer slow)"
if [ "${n_fast:-0}" -gt 3000000 ] && [ "${n_slow:-0}" -gt 3000000 ] &&
  [ "$t_slow" -gt $((2 * t_fast)) ]; then
  ok "the rate limit caps the transfer (${t_slow} ms limited against ${t_fast} ms)"
else
  fail "rate limit: limited ${t_slow:-?} ms / ${n_slow:-?} bytes, unlimited ${t_fast:-?} ms / ${n_fast:-?} bytes"
fi

# --- cleanup: destroy, kill -9 of QEMU, kill -9 of vmctl ---
web_tap=$("$VMCTL" status --json web | jq -r .tap)
vm destroy --force web >/dev/null || fail "destroy web"
taps | grep -qx "$web_tap" && fail "destroy left TAP $web_tap" || ok "destroy removed the TAP"
expect_eq "destroy removed web's rules" "$(rules_of web)" 0
ip -n "$NS" route show | grep -q "$web_tap" && fail "destroy left a route" || ok "no route of web"

pid=$("$VMCTL" status --json deny | jq -r .pid)
kill -9 "$pid"
for i in $(seq 50); do [ "$(state_of deny)" = crashed ] && break; sleep 0.1; done
expect_eq "kill -9 of QEMU: the VM is crashed" "$(state_of deny)" crashed
expect_eq "kill -9 of QEMU: its rules are gone" "$(rules_of deny)" 0
taps | grep -q '^vm-deny' && fail "kill -9 of QEMU left its TAP" || ok "kill -9 of QEMU: no TAP"

VMCTL_TEST_START_DELAY_MS=4000 "$VMCTL" start deny >/dev/null 2>&1 &
vpid=$!
for i in $(seq 100); do [ "$(rules_of deny)" -gt 0 ] && break; sleep 0.1; done
[ "$(rules_of deny)" -gt 0 ] && ok "a start in progress installed the rules" || fail "no rules"
kill -9 "$vpid"
wait "$vpid" 2>/dev/null
for i in $(seq 50); do taps | grep -q '^vm-deny' || break; sleep 0.1; done
taps | grep -q '^vm-deny' && fail "kill -9 of vmctl left the TAP" || ok "kill -9 of vmctl: no TAP"
out=$("$VMCTL" doctor --json 2>/dev/null)
expect_eq "doctor sees the rules the killed start left" \
  "$(jq -r '.[] | select(.name == "vm network") | .status' <<<"$out" 2>/dev/null)" warn
"$VMCTL" doctor --fix >/dev/null 2>&1
expect_eq "doctor --fix removed them" "$(rules_of deny)" 0
vm destroy --force deny slow >/dev/null || fail "destroy deny slow"
expect_eq "no TAP is left" "$(taps | wc -l)" 0
expect_eq "no route is left" "$(routes)" 0
expect_eq "no VM chain is left" "$(inns nft list ruleset 2>/dev/null | grep -c '^\s*chain .*-')" 0

# --- snapshots: a clone gets a link of its own (docs/snapshots.md, "Networking") ---
vm create tsrc --net tap --snapshottable --allow 10.99.0.2:8000/tcp --port 18090:80 >/dev/null 2>&1 ||
  fail "create tsrc"
vm start --wait --timeout 120 tsrc >/dev/null 2>"$WORK/err" || fail "start tsrc: $(cat "$WORK/err")"
SRC_IP=$(ip_of tsrc)
vm snapshot create tsrc s1 >/dev/null 2>"$WORK/err" || fail "snapshot tsrc: $(cat "$WORK/err")"
out=$("$VMCTL" --json clone tsrc s1 tc --count 2 2>&1) || fail "clone --count 2 of a tap VM: $out"
for c in tc-1 tc-2; do
  cip=$(ip_of "$c")
  [ -n "$cip" ] && [ "$cip" != null ] && [ "$cip" != "$SRC_IP" ] &&
    ok "$c has an address of its own ($cip, the source's $SRC_IP)" || fail "$c's address: '$cip'"
  expect_eq "$c: the guest moved eth0 to it" \
    "$(gexec "$c" -- ip -4 -o addr show dev eth0 | awk '{print $4}')" "$cip"
  expect_eq "$c: its NIC has the lease's MAC" "$(gexec "$c" -- cat /sys/class/net/eth0/address)" \
    "$("$VMCTL" status --json "$c" | jq -r .mac)"
  expect_eq "$c: its allow rule holds (the page is fetched)" "$(fetch_in "$c" 10.99.0.2 8000 /)" \
    page-from-uplink
  expect_eq "$c: another port stays closed" "$(fetch_in "$c" 10.99.0.2 8001 /)" ""
  gexec "$c" -- sh -c "mkdir -p /www && echo page-from-$c >/www/index.html && httpd -p 80 -h /www"
  hp=$("$VMCTL" status --json "$c" | jq -r '.ports[0].host')
  expect_eq "$c: its own host port forwards to it" "$(inns curl -s -m 5 "http://127.0.0.1:$hp/")" \
    "page-from-$c"
done
expect_eq "one clone cannot reach the other" \
  "$(fetch_in tc-1 "$(ip_of tc-2 | cut -d/ -f1)" 80 /)" ""
expect_code "no warm pool of a tap VM's snapshot" vm_manager::config::invalid pool tsrc/s1 --size 1
vm snapshot restore tsrc s1 >/dev/null 2>"$WORK/err" || fail "restore tsrc: $(cat "$WORK/err")"
expect_eq "the restored source keeps its address" \
  "$(gexec tsrc -- ip -4 -o addr show dev eth0 | awk '{print $4}')" "$SRC_IP"
vm destroy --force tc-1 tc-2 tsrc >/dev/null || fail "destroy the clones and tsrc"
vm snapshot rm tsrc s1 >/dev/null 2>&1
expect_eq "no TAP of a clone is left" "$(taps | wc -l)" 0
expect_eq "no rule of a clone is left" "$(( $(rules_of tc-1) + $(rules_of tc-2) + $(rules_of tsrc) ))" 0

# --- a guest that never configures its address ---
vm create noaddr --net tap >/dev/null 2>&1 || fail "create noaddr"
VMCTL_TEST_NO_GUEST_ADDRESS=1 expect_code "a guest without its address" \
  vm_manager::network::ip_discovery_timeout start --wait --timeout 20 noaddr
expect_eq "the error names the address" "$(jq -r .error.details.ip <<<"$LAST_JSON")" \
  "$(ip_of noaddr | cut -d/ -f1)"
vm destroy --force noaddr >/dev/null || fail "destroy noaddr"

# --- disk IOPS: QEMU takes the throttle group and node (a blank disk: firmware, no OS) ---
if have qemu-img qemu-utils "disk IOPS"; then
  qemu-img create -q -f qcow2 "$WORK/blank.qcow2" 64M
  vm create io --image "$WORK/blank.qcow2" --net none --disk-iops 100 >/dev/null 2>&1 &&
    vm start io >/dev/null 2>&1 || fail "create/start io with --disk-iops"
  expect_eq "a VM with --disk-iops runs" "$(state_of io)" running
  pid=$("$VMCTL" status --json io | jq -r .pid)
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'throttle-group,id=tg0,x-iops-total=100' &&
    ok "QEMU has the throttle group" || fail "no throttle group on QEMU's command line"
  expect_eq "status has disk_iops" "$("$VMCTL" status --json io | jq .disk_iops)" 100
  vm destroy --force io >/dev/null || fail "destroy io"
fi

# --- the pool: 32 racing creates, exhaustion ---
pids=()
for i in $(seq 32); do
  "$VMCTL" create "r$i" --net tap >/dev/null 2>"$WORK/race.$i" &
  pids+=($!)
done
wait "${pids[@]}"
n_ok=$("$VMCTL" list --json | jq '[.[] | select(.name | startswith("r"))] | length')
expect_eq "32 racing creates all succeeded" "$n_ok" 32
n_ip=$("$VMCTL" list --json | jq -r '.[].name' | while read -r n; do ip_of "$n"; done | sort -u |
  grep -c '^10\.88\.')
expect_eq "32 racing creates got 32 distinct addresses" "$n_ip" 32
for i in $(seq 32); do "$VMCTL" destroy "r$i" >/dev/null 2>&1; done

export VMCTL_NET_POOL=10.77.0.0/29 # two /30 links
vm create p1 --net tap >/dev/null 2>&1 && vm create p2 --net tap >/dev/null 2>&1 || fail "create p1 p2"
expect_code "an exhausted pool" vm_manager::network::setup_failed create p3 --net tap
expect_eq "the error names the pool" "$(jq -r .error.details.pool <<<"$LAST_JSON")" 10.77.0.0/29
expect_eq "the failed create left no VM" \
  "$("$VMCTL" list --json | jq '[.[] | select(.name == "p3")] | length')" 0
vm destroy p1 >/dev/null
vm create p3 --net tap >/dev/null 2>&1 && ok "a destroyed VM's address is leased again" ||
  fail "create p3 after destroy p1"
unset VMCTL_NET_POOL

finish
