#!/bin/bash
# A `vmctl run --rm` VM does not outlive its vmctl: SIGKILL it, and its supervisor kills QEMU
# (and its virtiofsd), and the next command removes the VM (row and directory).
. "$(dirname "$0")/lib.sh"
need_guest
setup_home
mounts=()
[ -x /usr/lib/qemu/virtiofsd ] && [ "$(id -u)" = 0 ] && mkdir -p "$VMCTL_HOME/src" &&
  mounts=(--mount "$VMCTL_HOME/src:/mnt")
"$VMCTL" run owned --rm "${mounts[@]}" -- sleep 600 >/dev/null 2>&1 &
owner=$!
qpid=
# booted: its console shell is up (watched without opening the store while run writes it)
for _ in $(seq 1800); do
  qpid=$(pgrep -f -- "-pidfile $VMCTL_HOME/vms/owned/qemu.pid")
  [ -n "$qpid" ] && grep -q "root@owned" "$VMCTL_HOME/vms/owned/console.log" 2>/dev/null && break
  sleep 0.1
done
[ -n "$qpid" ] && ok "the VM runs ($qpid)" || fail "the VM did not come up"
kill -9 "$owner"
wait "$owner" 2>/dev/null
for _ in $(seq 100); do [ -d "/proc/$qpid" ] || break; sleep 0.05; done
[ -d "/proc/$qpid" ] && fail "QEMU outlived its SIGKILLed owner" || ok "QEMU died with its owner"
pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/" >/dev/null && fail "virtiofsd left" || ok "no virtiofsd left"
out=$(vm list --json | jq -r '.[].name')
expect_eq "the next command removed the VM" "$out" ""
[ -d "$VMCTL_HOME/vms/owned" ] && fail "its directory is left" || ok "its directory is gone"

# without --rm the VM is not bound: it outlives vmctl (as before)
vm create free >/dev/null && vm start free >/dev/null || fail "start free"
expect_eq "an unbound VM keeps running" "$(state_of free)" running
finish
