#!/bin/bash
# A guest that fills the host's disk (issue 16, part 3). The VM's home is a 48 MiB tmpfs; the
# default guest's kernel and initrd boot with a 1 GiB qcow2 disk (--kernel --image), and the
# guest writes 100 MiB to /dev/vda: the overlay cannot grow, QEMU pauses the VM (werror=enospc,
# runstate io-error). Checks that the exec that was running fails naming the I/O error (not "the
# agent stopped answering"), that status says paused by io-error with the device's io-status,
# that a new exec says so at once, and that after the space is freed `vmctl resume` continues
# the VM and exec works again.
. "$(dirname "$0")/lib.sh"
need_guest
command -v qemu-img >/dev/null || skip "qemu-img is needed for the disk image (apt-get install qemu-utils)"
[ "$(id -u)" = 0 ] || skip "mounting the small tmpfs needs root"
setup_home
base=$VMCTL_HOME
mkdir -p "$base/fs"
mount -t tmpfs -o size=48m tmpfs "$base/fs" || skip "cannot mount a tmpfs here"
trap 'cleanup; umount "$base/fs" 2>/dev/null; rm -rf "$base"' EXIT
export VMCTL_HOME=$base/fs/home
mkdir -p "$VMCTL_HOME/images"
ln -s "$VMCTL_TEST_IMAGES/default" "$VMCTL_HOME/images/default"
def=$VMCTL_TEST_IMAGES/default

# the default guest's command line (tsc_early_khz is the host's), from a VM made and dropped
vm create probe >/dev/null 2>&1 || fail "create probe"
cmdline=$(vm status --json probe | jq -r .cmdline)
vm destroy --force probe >/dev/null 2>&1
qemu-img create -q -f qcow2 "$VMCTL_HOME/blank.qcow2" 1G || fail "qemu-img create"
vm image import "$VMCTL_HOME/blank.qcow2" --name blank >/dev/null || fail "import blank"
rm -f "$VMCTL_HOME/blank.qcow2"
vm create io --kernel "$def/vmlinux" --initrd "$def/initrd.img" --image blank \
  --cmdline "$cmdline" --net none >/dev/null 2>&1 || { fail "create io"; finish; }
vm start io --wait >/dev/null 2>&1 || { fail "start io"; finish; }
for _ in $(seq 100); do vm exec io -- test -b /dev/vda && break; sleep 0.2; done
vm exec io -- test -b /dev/vda && ok "guest has /dev/vda" || { fail "no /dev/vda in the guest"; finish; }

# --- the exec that fills the disk
t0=$(date +%s.%N)
out=$(timeout 300 "$VMCTL" --json exec io -- \
  dd if=/dev/urandom of=/dev/vda bs=1M count=100 oflag=direct 2>/dev/null); rc=$?
t1=$(date +%s.%N)
echo "info: the filling exec ended after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s (silence limit 30 s; reported, not asserted)"
expect_eq "the filling exec fails (exit 1)" "$rc" 1
expect_eq "with exec::unavailable" "$(jq -r .error.code <<<"$out")" vm_manager::exec::unavailable
msg=$(jq -r .error.message <<<"$out")
grep -q "disk I/O error (disk0: nospace)" <<<"$msg" && ok "it names the I/O error: $msg" ||
  fail "the error does not name the I/O error: $out"
grep -q "vmctl resume io" <<<"$(jq -r .error.help <<<"$out")" && ok "help says resume" ||
  fail "help: $out"

# --- status and list
st=$(vm status --json io)
expect_eq "status: paused by io-error" "$(jq -r '[.state, .paused_by, .pause_cause] | join(" ")' <<<"$st")" \
  "paused io-error disk0: nospace"
expect_eq "list agrees" "$(vm list --json | jq -r '.[] | select(.name == "io") | .paused_by')" io-error
vm status io | grep -q "^paused by: io-error (disk0: nospace)" && ok "status text" ||
  fail "status text: $(vm status io)"

# --- a new exec says it without waiting for the agent's deadline
t0=$(date +%s.%N)
out=$(vm --json exec io -- true); rc=$?
echo "info: a new exec failed after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s (reported, not asserted)"
expect_eq "new exec: exit 1, exec::unavailable" "$rc/$(jq -r .error.code <<<"$out")" "1/vm_manager::exec::unavailable"
expect_eq "new exec: reason" "$(jq -r .error.details.reason <<<"$out")" \
  "paused by QEMU after a disk I/O error (disk0: nospace)"
out=$(vm --json cp io:/init "$base/x" 2>/dev/null)
expect_eq "cp says it too" "$(jq -r .error.details.reason <<<"$out")" \
  "paused by QEMU after a disk I/O error (disk0: nospace)"

# --- free space, resume
mount -o remount,size=512m "$base/fs" || fail "grow the tmpfs"
vm resume io >/dev/null || fail "resume io"
st=
for _ in $(seq 100); do
  st=$(vm status --json io | jq -r '.state + "/" + (.paused_by // "-")')
  [ "$st" = "running/-" ] && break
  sleep 0.2
done
expect_eq "running again after resume" "$st" "running/-"
# the guest may first finish the dd it was paused in (urandom under TCG, oflag=direct): on a
# loaded host its agent can take longer than one exec's 8.5 s wait to answer; up to three tries
# (each miss reported), and the console's tail if none works
out=""
for try in 1 2 3; do
  out=$(vm exec io -- echo back 2>"$base/exec.err") && break
  echo "info: exec after resume, try $try: $(grep -m1 '×' "$base/exec.err")"
done
expect_eq "exec works again" "$out" back
[ "$out" = back ] || tail -5 "$VMCTL_HOME/vms/io/console.log" 2>/dev/null | sed 's/^/console: /'
finish
