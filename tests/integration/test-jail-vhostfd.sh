#!/bin/bash
# vhost-vsock under the jail (docs/isolation.md, "vhost-vsock"), end to end as far as a host
# without /dev/vhost-vsock allows: in a mount namespace of its own (`unshare -m`, the host's /dev
# untouched) /dev is a tmpfs with the usual nodes bound in and a stand-in /dev/vhost-vsock (a
# bind of /dev/null). vmctl then gives the VM a guest CID, opens the stand-in itself and passes
# it to the jailed QEMU (whose own /dev has no vhost-vsock at all) as vhostfd=N; QEMU's vhost
# ioctl on that descriptor fails (it is /dev/null), and that failure, in qemu.log and the start's
# error, is the proof that the descriptor crossed the supervisor, the jail and exec: a QEMU that
# opened the device itself would say "failed to open vhost device". With a real device (a host
# with vhost_vsock loaded) the same start succeeds and the agent goes over vsock; not here.
. "$(dirname "$0")/lib.sh"
need_guest
[ "$(id -u)" = 0 ] || skip "the jail needs root (vmctl runs unconfined as a user)"
command -v unshare >/dev/null || skip "unshare (package util-linux) is not installed"

if [ "${JAIL_VHOSTFD_INNER:-}" != 1 ]; then
  JAIL_VHOSTFD_INNER=1 exec unshare -m --propagation private bash "$0" "$@"
fi

# a /dev of our own: the nodes vmctl and the jail bind, and the stand-in
saved=$(mktemp -d /tmp/vmctl-devsave.XXXXXX)
mount --rbind /dev "$saved" || { echo "FAIL: cannot keep the real /dev"; exit 1; }
mount -t tmpfs -o mode=0755,size=1m tmpfs /dev || { echo "FAIL: cannot mount a tmpfs on /dev"; exit 1; }
for n in null zero full random urandom tty kvm; do
  [ -e "$saved/$n" ] || continue
  touch "/dev/$n" && mount --bind "$saved/$n" "/dev/$n"
done
for d in net pts shm; do
  [ -e "$saved/$d" ] || continue
  mkdir -p "/dev/$d" && mount --rbind "$saved/$d" "/dev/$d"
done
touch /dev/vhost-vsock && mount --bind "$saved/null" /dev/vhost-vsock
umount -l "$saved" && rmdir "$saved"

setup_home
vm create vs --net none >/dev/null 2>&1 || { fail "create vs"; finish; }
cid=$(vm status --json vs | jq -r .cid)
[ "$cid" != null ] && [ "$cid" -ge 3 ] && ok "a guest CID ($cid): vmctl sees a vhost-vsock" ||
  fail "no guest CID with the stand-in /dev/vhost-vsock: $(vm status --json vs | jq -c .cid)"
out=$(vm --json start vs 2>/dev/null); rc=$?
log=$(cat "$VMCTL_HOME/vms/vs/qemu.log" 2>/dev/null)
[ "$rc" != 0 ] && grep -q "vhost-vsock-device,guest-cid=$cid,vhostfd=[0-9]*: vhost_set_owner failed: Inappropriate ioctl" <<<"$log" &&
  ok "the jailed QEMU used the descriptor vmctl opened (vhostfd=, the vhost ioctl on it)" ||
  fail "start: exit $rc, $(jq -c .error.code <<<"$out"), qemu.log: $(tail -3 <<<"$log")"
grep -q "failed to open vhost device" <<<"$log" && fail "QEMU opened the device itself" ||
  ok "QEMU did not open /dev/vhost-vsock itself"
vm destroy --force vs >/dev/null 2>&1
ls -d /sys/fs/cgroup/*/vmctl/vs-* /sys/fs/cgroup/vmctl/vs-* 2>/dev/null | grep -q . &&
  fail "the failed start left its cgroup" || ok "no cgroup left"
finish
