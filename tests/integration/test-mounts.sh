#!/bin/bash
# Host directories in a VM (vmctl create --mount SRC:DST[:ro], virtio-fs): a host file is read in
# the guest, a guest write reaches the host, :ro refuses writes (enforced on the host: a read-only
# bind mount under virtiofsd), a symlink in SRC pointing outside does not reach the host's file
# (virtiofsd's sandbox), bad mounts are config::invalid naming the field, and destroy leaves no
# virtiofsd. Needs the default guest built with the virtiofs module (guest/build-default.sh).
. "$(dirname "$0")/lib.sh"
need_guest
[ -x /usr/lib/qemu/virtiofsd ] || skip "virtiofsd is not installed (Debian package qemu-system-common)"
[ "$(id -u)" = 0 ] || skip "virtiofsd's sandbox needs root"
setup_home
src=$VMCTL_HOME/src ro=$VMCTL_HOME/ro outside=$VMCTL_HOME/outside
mkdir -p "$src" "$ro" "$outside"
echo host-data >"$src/hello"
echo ro-data >"$ro/file"
echo secret >"$outside/secret"
ln -s "$outside/secret" "$src/escape"

expect_code "a missing source" vm_manager::config::invalid create bad --mount /nonexistent/x:/mnt
jq -e '.error.details.field == "mount"' <<<"$LAST_JSON" >/dev/null && ok "it names the field" ||
  fail "field: $LAST_JSON"
expect_code "a relative target" vm_manager::config::invalid create bad --mount "$src:mnt"
expect_code "a bad option" vm_manager::config::invalid create bad --mount "$src:/mnt:rx"

vm create fs --mount "$src:/mnt/src" --mount "$ro:/mnt/ro:ro" >/dev/null || fail "create fs"
vm start fs --wait --timeout 180 >/dev/null || fail "start fs"
expect_eq "the guest reads the host's file" "$(vm exec fs -- cat /mnt/src/hello 2>&1)" host-data
vm exec fs -- sh -c 'echo guest-data >/mnt/src/from-guest' || fail "guest write"
expect_eq "the guest's write is on the host" "$(cat "$src/from-guest" 2>&1)" guest-data
expect_eq "the ro mount reads" "$(vm exec fs -- cat /mnt/ro/file 2>&1)" ro-data
if vm exec fs -- sh -c 'echo x >/mnt/ro/new' 2>/dev/null; then fail "write to the ro mount succeeded"
else ok "the ro mount refuses writes"; fi
# even remounted rw in the guest: the host's bind mount is read-only
vm exec fs -- sh -c 'mount -o remount,rw /mnt/ro; echo x >/mnt/ro/new2' >/dev/null 2>&1
[ ! -e "$ro/new" ] && [ ! -e "$ro/new2" ] && ok "nothing was written to the ro source" ||
  fail "the ro source got a file"
out=$(vm exec fs -- cat /mnt/src/escape 2>&1)
[ "$out" != secret ] && ok "a symlink out of SRC does not reach the host's file" ||
  fail "the guest read a host file outside SRC"
# a hostile guest's root cannot leave a set-user-ID program or a device node for the host: the
# file server (root on the host) refuses those modes (supervise.c's seccomp filter)
vm exec fs -- sh -c 'cd /mnt/src; cp /bin/busybox suid; chmod 4755 suid; chmod g+s suid
  echo x >sgid; chmod 2755 sgid; mknod cdev c 1 3; mknod bdev b 8 0; mkfifo fifo
  chmod 755 sgid' >/dev/null 2>&1
expect_eq "no set-user/group-ID file reaches the host" \
  "$(find "$src" -perm /6000 | wc -l)" 0
expect_eq "no device node reaches the host" "$(find "$src" \( -type c -o -type b \) | wc -l)" 0
expect_eq "ordinary modes and fifos still work" \
  "$(stat -c %a "$src/sgid"):$(stat -c %F "$src/fifo")" "755:fifo"
pids=$(pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/fs/" | tr '\n' ' ')
[ -n "$pids" ] && ok "virtiofsd runs per mount ($pids)" || fail "no virtiofsd"
vm destroy fs --force >/dev/null || fail "destroy"
for _ in $(seq 100); do pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/" >/dev/null || break; sleep 0.05; done
pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/" >/dev/null && fail "virtiofsd left after destroy" ||
  ok "destroy leaves no virtiofsd"

# a crash (QEMU SIGKILLed) takes its virtiofsd with it
vm create fs2 --mount "$src:/mnt/src" >/dev/null && vm start fs2 >/dev/null || fail "start fs2"
qpid=$(vm status --json fs2 | jq -r .pid)
kill -9 "$qpid"
for _ in $(seq 100); do pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/" >/dev/null || break; sleep 0.05; done
pgrep -f "virtiofsd --socket-path=$VMCTL_HOME/vms/" >/dev/null && fail "virtiofsd left after a crash" ||
  ok "a crashed VM leaves no virtiofsd"
vm destroy fs2 --force >/dev/null
finish
