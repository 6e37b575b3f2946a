#!/bin/bash
# Snapshots of a VM with a writable disk (docs/snapshots.md "On disk"): the VM's qcow2 overlay
# becomes the snapshot's immutable layer, restore and each clone get a new overlay on it. What
# the guest wrote to its disk before the snapshot is there after a restore, what it wrote after
# is not; a clone's writes are its own (neither the source nor another clone sees them), also
# after a cold boot of the clone (the -blockdev chain overlay -> layer -> base); rm of the
# snapshot is refused while a VM's disk is on its layer, allowed after, and takes the layer.
source "$(dirname "$0")/lib.sh"
need_guest
command -v qemu-img >/dev/null || skip "qemu-img is not installed"
setup_home

snap_cleanup() {
  local rows names
  rows=$("$VMCTL" snapshot list --json 2>/dev/null | jq -r '.[] | "\(.vm) \(.name)"' 2>/dev/null)
  names=$("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null)
  for n in $names; do "$VMCTL" destroy --force "$n" >/dev/null 2>&1; done
  while read -r v s; do [ -n "$v" ] && "$VMCTL" snapshot rm "$v" "$s" >/dev/null 2>&1; done <<<"$rows"
  cleanup
}
trap snap_cleanup EXIT

d=$VMCTL_TEST_IMAGES/default
mkdir -p "$VMCTL_HOME/src"
base=$VMCTL_HOME/src/base.qcow2
qemu-img create -q -f qcow2 "$base" 64M
cmdline="console=ttyS0 rdinit=/init panic=-1 quiet cryptomgr.notests"

# sector N of the guest's disk (/dev/vda): write a word (synced), read it back from the disk
# (the page cache dropped first)
put() { vm exec "$1" -- sh -c "printf '%-16s' $3 | dd of=/dev/vda bs=512 seek=$2 conv=sync,fsync 2>/dev/null && sync"; }
get() {
  vm exec "$1" -- sh -c "sync; echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=512 skip=$2 count=1 2>/dev/null | head -c 16 | tr -d ' \0'"
}
wait_disk() {
  vm exec "$1" -- sh -c 'for i in $(seq 100); do [ -b /dev/vda ] && exit 0; sleep 0.1; done; exit 1' ||
    fail "$1: no /dev/vda"
}

vm create dksrc --image "$base" --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" \
  --cmdline "$cmdline" --snapshottable >/dev/null || { fail "create dksrc"; finish; }
vm start dksrc --wait --timeout 180 >/dev/null ||
  { fail "start dksrc: $(tail -5 "$VMCTL_HOME/vms/dksrc/console.log" 2>/dev/null)"; finish; }
wait_disk dksrc
put dksrc 1 fileA || fail "write A"
expect_eq "A is on the disk" "$(get dksrc 1)" "fileA"

out=$(vm --json snapshot create dksrc s1) || { fail "snapshot create with a disk: $out"; finish; }
expect_eq "a template snapshot of a VM with a disk" "$(jq -r .kind <<<"$out")" "template"
sdir=$VMCTL_HOME/snapshots/dksrc/s1
[ -f "$sdir/disk.qcow2" ] && ok "the snapshot keeps the disk's layer" || fail "no layer in $sdir: $(ls "$sdir")"
expect_eq "the layer's backing file is the base" \
  "$(qemu-img info -U --output=json "$sdir/disk.qcow2" | jq -r '."backing-filename"')" "$base"
qemu-img convert -U -O raw "$sdir/disk.qcow2" "$VMCTL_HOME/src/layer.raw"
grep -q fileA "$VMCTL_HOME/src/layer.raw" && ok "A is in the layer itself" || fail "A not in the layer"
rm -f "$VMCTL_HOME/src/layer.raw"
expect_eq "the source's new overlay is on the layer" \
  "$(qemu-img info -U --output=json "$VMCTL_HOME/vms/dksrc/disk.qcow2" | jq -r '."backing-filename"')" \
  "$sdir/disk.qcow2"

# --- restore: A there, B (written after) not ---
vm snapshot restore dksrc s1 >/dev/null || { fail "restore"; finish; }
expect_eq "restored: A there" "$(get dksrc 1)" "fileA"
put dksrc 2 fileB || fail "write B"
expect_eq "B written" "$(get dksrc 2)" "fileB"
vm kill dksrc >/dev/null
vm snapshot restore dksrc s1 >/dev/null || fail "second restore"
expect_eq "restored again: A there" "$(get dksrc 1)" "fileA"
expect_eq "restored again: B (written after the snapshot) is not" "$(get dksrc 2)" ""
md5_layer=$(md5sum <"$sdir/disk.qcow2")

# --- clones: each its own overlay on the layer ---
vm clone dksrc s1 c1 >/dev/null || { fail "clone c1"; finish; }
vm clone dksrc s1 c2 >/dev/null || { fail "clone c2"; finish; }
expect_eq "clone c1 sees A" "$(get c1 1)" "fileA"
expect_eq "clone c1 does not see B" "$(get c1 2)" ""
put c1 3 fileC || fail "write C in c1"
expect_eq "c1 wrote C" "$(get c1 3)" "fileC"
expect_eq "the source does not see C" "$(get dksrc 3)" ""
expect_eq "clone c2 does not see C" "$(get c2 3)" ""
expect_eq "clone c2 sees A" "$(get c2 1)" "fileA"
expect_eq "c1's disk is in its own directory" \
  "$(qemu-img info -U --output=json "$VMCTL_HOME/vms/c1/disk.qcow2" | jq -r '."backing-filename"')" \
  "$sdir/disk.qcow2"
expect_eq "the layer did not change" "$(md5sum <"$sdir/disk.qcow2")" "$md5_layer"

# --- a cold boot of a clone: its disk (overlay -> layer -> base) is kept ---
vm stop c1 >/dev/null 2>&1 || vm kill c1 >/dev/null
if vm start c1 --wait --timeout 180 >/dev/null; then
  wait_disk c1
  expect_eq "cold-booted clone: A there" "$(get c1 1)" "fileA"
  expect_eq "cold-booted clone: C there" "$(get c1 3)" "fileC"
else
  fail "cold start of c1: $(tail -5 "$VMCTL_HOME/vms/c1/console.log" 2>/dev/null)"
fi

expect_code "a disk on a layer already cannot be snapshotted (one layer on the base)" \
  vm_manager::config::invalid snapshot create c2 again

# --- rm: refused while a VM's disk is on the layer ---
expect_code "rm refused while clones reference it" vm_manager::snapshot::in_use snapshot rm dksrc s1
vm destroy --force c1 >/dev/null
vm destroy --force c2 >/dev/null
expect_code "rm refused while the source's disk is on the layer" vm_manager::snapshot::in_use snapshot rm dksrc s1
vm destroy --force dksrc >/dev/null
vm snapshot rm dksrc s1 >/dev/null && ok "rm allowed once nothing references it" || fail "rm after"
[ ! -e "$sdir" ] && ok "rm removes the layer" || fail "the layer is left: $(ls "$sdir")"

# --- a full snapshot: the source goes on, on its new overlay (the layer under it) ---
vm create f --image "$base" --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" \
  --cmdline "$cmdline" >/dev/null && vm start f --wait --timeout 180 >/dev/null ||
  { fail "start f"; finish; }
wait_disk f
put f 1 fullA || fail "write A in f"
vm snapshot create f s --kind full >/dev/null || fail "full snapshot of f"
expect_eq "f goes on after a full snapshot" "$(state_of f)" running
put f 2 fullB || fail "write B in f"
expect_eq "f still sees A (its layer)" "$(get f 1)" fullA
expect_eq "f sees B (its new overlay)" "$(get f 2)" fullB
vm clone f s fc >/dev/null || fail "clone fc"
expect_eq "fc sees A" "$(get fc 1)" fullA
expect_eq "fc does not see B" "$(get fc 2)" ""
vm stop fc >/dev/null 2>&1 || vm kill fc >/dev/null
if vm start fc --wait --timeout 180 >/dev/null; then
  wait_disk fc
  expect_eq "fc cold-booted (jailed): A there" "$(get fc 1)" fullA
else
  fail "cold start of fc: $(vm --json start fc 2>&1 | tail -3)"
fi
vm destroy --force fc >/dev/null
vm destroy --force f >/dev/null
vm snapshot rm f s >/dev/null && ok "rm of f/s once f and fc are gone" || fail "rm f/s"

finish
