#!/bin/bash
# Host ports for user-mode forwards: reserved in the store, distinct across VMs created at the
# same moment by separate vmctl processes, reachable, released on destroy; the SSH forward in
# status; --net none has none (and `vmctl ssh` says why).
. "$(dirname "$0")/lib.sh"
need_guest
setup_home
command -v sqlite3 >/dev/null || skip "sqlite3 is not installed"

# --- 32 creates racing (no QEMU): every reserved host port distinct ---
for i in $(seq 1 32); do
  vm create "c$i" --net user --port 0:80 --port 0:53/udp >/dev/null 2>"$VMCTL_HOME/c$i.err" &
done
wait
n=$(vm list --json | jq length)
expect_eq "32 parallel creates succeeded" "$n" 32
ports=$(vm list --json | jq -r '.[].ports[] | "\(.host)/\(.protocol)"')
expect_eq "3 forwards each (80/tcp, 53/udp, ssh 22/tcp)" "$(wc -l <<<"$ports")" 96
expect_eq "no host port used twice" "$(sort <<<"$ports" | uniq -d | wc -l)" 0
ssh_fwds=$(vm list --json | jq '[.[].ports[] | select(.guest == 22 and .protocol == "tcp")] | length')
expect_eq "every VM has its SSH forward" "$ssh_fwds" 32
expect_eq "store reservations match" \
  "$(sqlite3 "$VMCTL_HOME/vmctl.db" 'select count(*) from ports')" 96
expect_eq "keys made 0600" "$(stat -c %a "$VMCTL_HOME/vms/c1/id_ed25519")" 600

# an explicit port held by another VM is refused, nothing is created
taken=$(vm status --json c1 | jq -r '.ports[] | select(.guest == 80) | .host')
expect_code "explicit port reserved by another VM" vm_manager::network::setup_failed \
  create dup --port "$taken:8080"
expect_eq "refused create left nothing" "$(vm list --json | jq '[.[] | select(.name=="dup")] | length')" 0

# destroy releases the reservations (and nothing else)
for i in $(seq 1 32); do vm destroy "c$i" >/dev/null & done
wait
expect_eq "destroy released every port" \
  "$(sqlite3 "$VMCTL_HOME/vmctl.db" 'select count(*) from ports')" 0

# --net none: no forwards, and SSH cannot find an address
vm create quiet --net none >/dev/null
expect_eq "--net none has no ports" "$(vm status --json quiet | jq '.ports | length')" 0
vm start quiet --wait >/dev/null
expect_code "ssh without a network" vm_manager::network::ip_discovery_timeout ssh quiet -- true
vm destroy --force quiet >/dev/null

# --- 8 VMs started in parallel by separate processes: distinct ports, each forward reachable ---
N=8
for i in $(seq 1 $N); do
  vm run "p$i" --memory 128 --net user --port 0:7000 -- true >"$VMCTL_HOME/p$i.out" 2>&1 &
done
wait
running=$(vm list --json | jq '[.[] | select(.state == "running")] | length')
expect_eq "$N VMs running" "$running" "$N"
hostports=$(for i in $(seq 1 $N); do
  vm status --json "p$i" | jq -r '.ports[] | select(.guest == 7000) | .host'
done)
expect_eq "$N distinct forwarded ports" "$(sort -u <<<"$hostports" | grep -c .)" "$N"

# In each guest (its /init configured eth0 with slirp's fixed address) serve one line on port
# 7000 with busybox nc, started through the agent; then read it from the host through the forward.
for i in $(seq 1 $N); do
  vm exec "p$i" --timeout 120 -- sh -c "echo hello-from-p$i | nc -l -p 7000" \
    >/dev/null 2>&1 &
done
read_line() { # PORT: one line through the forward, retried until the guest listens
  local deadline=$((SECONDS + 60)) line
  while [ $SECONDS -lt $deadline ]; do
    if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
      line=$(timeout 5 head -n1 <&3)
      exec 3>&-
      if [ -n "$line" ]; then echo "$line"; return 0; fi
    fi
    sleep 0.3
  done
  return 1
}
for i in $(seq 1 $N); do
  p=$(vm status --json "p$i" | jq -r '.ports[] | select(.guest == 7000) | .host')
  expect_eq "forward of p$i (127.0.0.1:$p) reaches p$i" "$(read_line "$p")" "hello-from-p$i"
done
wait
for i in $(seq 1 $N); do vm destroy --force "p$i" >/dev/null & done
wait
expect_eq "all ports released" "$(sqlite3 "$VMCTL_HOME/vmctl.db" 'select count(*) from ports')" 0
finish
