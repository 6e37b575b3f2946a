#!/bin/bash
# Snapshots of a VM with a writable disk (docs/snapshots.md "On disk"): the VM's qcow2 overlay
# becomes the snapshot's immutable layer, restore and each clone get a new overlay on it. What
# the guest wrote to its disk before the snapshot is there after a restore, what it wrote after
# is not; a clone's writes are its own (neither the source nor another clone sees them), also
# after a cold boot of the clone (the -blockdev chain overlay -> layer -> base); a clone's disk
# snapshotted again puts a layer on the layer (a chain, cloned and cold-booted); rm of a
# snapshot is refused while a VM's disk or another snapshot's layer is on its layer, allowed
# after, and takes the layer; a save failing after the disk switch, and vmctl killed after it,
# leave the source on its old overlay (the switch undone), running, its disk intact.
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

vm create dc-src --image "$base" --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" \
  --cmdline "$cmdline" --snapshottable >/dev/null || { fail "create dc-src"; finish; }
vm start dc-src --wait --timeout 180 >/dev/null ||
  { fail "start dc-src: $(tail -5 "$VMCTL_HOME/vms/dc-src/console.log" 2>/dev/null)"; finish; }
wait_disk dc-src
put dc-src 1 fileA || fail "write A"
expect_eq "A is on the disk" "$(get dc-src 1)" "fileA"

out=$(vm --json snapshot create dc-src s1) || { fail "snapshot create with a disk: $out"; finish; }
expect_eq "a template snapshot of a VM with a disk" "$(jq -r .kind <<<"$out")" "template"
sdir=$VMCTL_HOME/snapshots/dc-src/s1
[ -f "$sdir/disk.qcow2" ] && ok "the snapshot keeps the disk's layer" || fail "no layer in $sdir: $(ls "$sdir")"
expect_eq "the layer's backing file is the base" \
  "$(qemu-img info -U --output=json "$sdir/disk.qcow2" | jq -r '."backing-filename"')" "$base"
qemu-img convert -U -O raw "$sdir/disk.qcow2" "$VMCTL_HOME/src/layer.raw"
grep -q fileA "$VMCTL_HOME/src/layer.raw" && ok "A is in the layer itself" || fail "A not in the layer"
rm -f "$VMCTL_HOME/src/layer.raw"
expect_eq "the source's new overlay is on the layer" \
  "$(qemu-img info -U --output=json "$VMCTL_HOME/vms/dc-src/disk.qcow2" | jq -r '."backing-filename"')" \
  "$sdir/disk.qcow2"

# --- restore: A there, B (written after) not ---
vm snapshot restore dc-src s1 >/dev/null || { fail "restore"; finish; }
expect_eq "restored: A there" "$(get dc-src 1)" "fileA"
put dc-src 2 fileB || fail "write B"
expect_eq "B written" "$(get dc-src 2)" "fileB"
vm kill dc-src >/dev/null
vm snapshot restore dc-src s1 >/dev/null || fail "second restore"
expect_eq "restored again: A there" "$(get dc-src 1)" "fileA"
expect_eq "restored again: B (written after the snapshot) is not" "$(get dc-src 2)" ""
md5_layer=$(md5sum <"$sdir/disk.qcow2")

# --- clones: each its own overlay on the layer ---
vm clone dc-src s1 dc-c1 >/dev/null || { fail "clone dc-c1"; finish; }
vm clone dc-src s1 dc-c2 >/dev/null || { fail "clone dc-c2"; finish; }
expect_eq "clone dc-c1 sees A" "$(get dc-c1 1)" "fileA"
expect_eq "clone dc-c1 does not see B" "$(get dc-c1 2)" ""
put dc-c1 3 fileC || fail "write C in dc-c1"
expect_eq "c1 wrote C" "$(get dc-c1 3)" "fileC"
expect_eq "the source does not see C" "$(get dc-src 3)" ""
expect_eq "clone dc-c2 does not see C" "$(get dc-c2 3)" ""
expect_eq "clone dc-c2 sees A" "$(get dc-c2 1)" "fileA"
expect_eq "c1's disk is in its own directory" \
  "$(qemu-img info -U --output=json "$VMCTL_HOME/vms/dc-c1/disk.qcow2" | jq -r '."backing-filename"')" \
  "$sdir/disk.qcow2"
expect_eq "the layer did not change" "$(md5sum <"$sdir/disk.qcow2")" "$md5_layer"

# --- a cold boot of a clone: its disk (overlay -> layer -> base) is kept ---
vm stop dc-c1 >/dev/null 2>&1 || vm kill dc-c1 >/dev/null
if vm start dc-c1 --wait --timeout 180 >/dev/null; then
  wait_disk dc-c1
  expect_eq "cold-booted clone: A there" "$(get dc-c1 1)" "fileA"
  expect_eq "cold-booted clone: C there" "$(get dc-c1 3)" "fileC"
else
  fail "cold start of dc-c1: $(tail -5 "$VMCTL_HOME/vms/dc-c1/console.log" 2>/dev/null)"
fi

# --- a chain: a snapshot of a clone (its disk on s1's layer) puts a layer on that layer ---
put dc-c2 4 fileD || fail "write D in dc-c2"
vm snapshot create dc-c2 s2 --kind full >/dev/null || fail "snapshot s2 of the clone dc-c2"
s2dir=$VMCTL_HOME/snapshots/dc-c2/s2
expect_eq "s2's layer is on s1's" \
  "$(qemu-img info -U --output=json "$s2dir/disk.qcow2" | jq -r '."backing-filename"')" \
  "$sdir/disk.qcow2"
vm clone dc-c2 s2 dc-c3 >/dev/null || fail "clone dc-c3 of s2"
expect_eq "dc-c3 (on s2 on s1) sees A" "$(get dc-c3 1)" "fileA"
expect_eq "dc-c3 sees D" "$(get dc-c3 4)" "fileD"
expect_eq "dc-c3 does not see C" "$(get dc-c3 3)" ""
vm stop dc-c3 >/dev/null 2>&1 || vm kill dc-c3 >/dev/null
if vm start dc-c3 --wait --timeout 180 >/dev/null; then
  wait_disk dc-c3
  expect_eq "cold-booted dc-c3 (overlay -> s2 -> s1 -> base): A there" "$(get dc-c3 1)" "fileA"
  expect_eq "cold-booted dc-c3: D there" "$(get dc-c3 4)" "fileD"
else
  fail "cold start of dc-c3: $(vm --json start dc-c3 2>&1 | tail -3)"
fi
put dc-c3 5 fileE || fail "write E in dc-c3"
vm snapshot create dc-c3 s3 --kind full >/dev/null || fail "snapshot s3 of dc-c3 (a third layer)"
vm clone dc-c3 s3 dc-c4 >/dev/null || fail "clone dc-c4 of s3"
expect_eq "dc-c4 (three layers) sees A, D and E" \
  "$(get dc-c4 1),$(get dc-c4 4),$(get dc-c4 5)" "fileA,fileD,fileE"

# --- rm: refused while a VM's disk or another snapshot's layer is on the layer ---
expect_code "rm refused while clones reference it" vm_manager::snapshot::in_use snapshot rm dc-src s1
vm destroy --force dc-c1 >/dev/null
for n in dc-c2 dc-c3 dc-c4; do vm destroy --force $n >/dev/null; done
expect_code "rm of s1 refused while s2's layer is on it" vm_manager::snapshot::in_use snapshot rm dc-src s1
expect_code "rm of s2 refused while s3's layer is on it" vm_manager::snapshot::in_use snapshot rm dc-c2 s2
vm snapshot rm dc-c3 s3 >/dev/null && ok "rm of the top of the chain" || fail "rm s3"
vm snapshot rm dc-c2 s2 >/dev/null && ok "rm of s2 once s3 is gone" || fail "rm s2"
[ ! -e "$s2dir" ] && ok "rm removes s2's layer" || fail "s2's layer is left: $(ls "$s2dir")"
expect_code "rm refused while the source's disk is on the layer" vm_manager::snapshot::in_use snapshot rm dc-src s1
vm destroy --force dc-src >/dev/null
vm snapshot rm dc-src s1 >/dev/null && ok "rm allowed once nothing references it" || fail "rm after"
[ ! -e "$sdir" ] && ok "rm removes the layer" || fail "the layer is left: $(ls "$sdir")"

# --- a full snapshot: the source goes on, on its new overlay (the layer under it) ---
vm create dc-f --image "$base" --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" \
  --cmdline "$cmdline" >/dev/null && vm start dc-f --wait --timeout 180 >/dev/null ||
  { fail "start f"; finish; }
wait_disk dc-f
put dc-f 1 fullA || fail "write A in f"
vm snapshot create dc-f s --kind full >/dev/null || fail "full snapshot of f"
expect_eq "f goes on after a full snapshot" "$(state_of dc-f)" running
put dc-f 2 fullB || fail "write B in f"
expect_eq "f still sees A (its layer)" "$(get dc-f 1)" fullA
expect_eq "f sees B (its new overlay)" "$(get dc-f 2)" fullB
vm clone dc-f s dc-fc >/dev/null || fail "clone fc"
expect_eq "fc sees A" "$(get dc-fc 1)" fullA
expect_eq "fc does not see B" "$(get dc-fc 2)" ""
vm stop dc-fc >/dev/null 2>&1 || vm kill dc-fc >/dev/null
if vm start dc-fc --wait --timeout 180 >/dev/null; then
  wait_disk dc-fc
  expect_eq "fc cold-booted (jailed): A there" "$(get dc-fc 1)" fullA
else
  fail "cold start of fc: $(vm --json start dc-fc 2>&1 | tail -3)"
fi
vm destroy --force dc-fc >/dev/null
vm destroy --force dc-f >/dev/null
vm snapshot rm dc-f s >/dev/null && ok "rm of f/s once f and fc are gone" || fail "rm f/s"

# --- crash safety of the disk switch (docs/snapshots.md): a save that fails after it, and a
# vmctl killed after it, leave the source on its old overlay, its chain valid and no SNAP.tmp ---
vm create dc-k --image "$base" --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" \
  --cmdline "$cmdline" >/dev/null && vm start dc-k --wait --timeout 180 >/dev/null ||
  { fail "start dc-k"; finish; }
wait_disk dc-k
put dc-k 1 keepA || fail "write A in dc-k"
kdisk=$VMCTL_HOME/vms/dc-k/disk.qcow2
backing_of() { qemu-img info -U --output=json "$1" | jq -r '."backing-filename" // "none"'; }
check_k() { # WHAT LAYER: dc-k runs on its own overlay on LAYER, nothing of the snapshot is left
  expect_eq "$1: dc-k runs" "$(state_of dc-k)" running
  expect_eq "$1: the overlay is on what it was on" "$(backing_of "$kdisk")" "$2"
  local extra
  extra=$(ls "$kdisk".* 2>/dev/null)
  [ -z "$extra" ] && ok "$1: no new overlay left" || fail "$1: left: $extra"
  local left
  left=$(ls "$VMCTL_HOME/snapshots/dc-k" 2>/dev/null | grep -v '^ok$')
  [ -z "$left" ] && ok "$1: no snapshot directory left" || fail "$1: left: $left"
  expect_eq "$1: A intact" "$(get dc-k 1)" keepA
}
export VMCTL_TEST_SNAPSHOT_SAVE_FAIL=1
expect_code "a save failing after the switch fails the snapshot" vm_manager::snapshot::failed \
  snapshot create dc-k bad --kind full
unset VMCTL_TEST_SNAPSHOT_SAVE_FAIL
check_k "after a failed save" "$base"
expect_eq "the failed snapshot is not listed" "$(vm --json snapshot list dc-k | jq length)" 0
put dc-k 2 keepB || fail "write B in dc-k after the failed save"

# killed after the switch (the layer moved into SNAP.tmp, the source's config on it)
VMCTL_TEST_DISK_SWITCH_DELAY_MS=30000 "$VMCTL" snapshot create dc-k mid --kind full >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do [ -e "$VMCTL_HOME/snapshots/dc-k/mid.tmp/disk.qcow2" ] && break; sleep 0.1; done
[ -e "$VMCTL_HOME/snapshots/dc-k/mid.tmp/disk.qcow2" ] && ok "the layer is in SNAP.tmp in the window" ||
  fail "the killed snapshot never switched the disk"
sleep 1
expect_eq "in the window the overlay is the new one, on the layer" "$(backing_of "$kdisk")" \
  "$VMCTL_HOME/snapshots/dc-k/mid/disk.qcow2"
kill -9 $pid
wait $pid 2>/dev/null
vm snapshot list dc-k >/dev/null || fail "the next snapshot command after the kill"
[ ! -e "$VMCTL_HOME/snapshots/dc-k/mid.tmp" ] && ok "the repair leaves no SNAP.tmp" || fail "mid.tmp left"
check_k "after a kill in the window" "$base"
expect_eq "after the kill: B intact" "$(get dc-k 2)" keepB
put dc-k 3 keepC || fail "write C in dc-k after the repair"
# a cold boot: the chain on disk is the one the store records
vm stop dc-k >/dev/null 2>&1 || vm kill dc-k >/dev/null
if vm start dc-k --wait --timeout 180 >/dev/null; then
  wait_disk dc-k
  expect_eq "cold-booted after the repairs: A, B, C there" \
    "$(get dc-k 1),$(get dc-k 2),$(get dc-k 3)" "keepA,keepB,keepC"
else
  fail "cold start of dc-k after the repairs: $(vm --json start dc-k 2>&1 | tail -3)"
fi

# the same on a layer (dc-k's disk on a snapshot's layer): its chain stays valid
vm snapshot create dc-k ok --kind full >/dev/null || fail "a snapshot of dc-k"
okl=$VMCTL_HOME/snapshots/dc-k/ok/disk.qcow2
put dc-k 4 keepD || fail "write D in dc-k on its layer"
export VMCTL_TEST_SNAPSHOT_SAVE_FAIL=1
expect_code "a failed save of a disk on a layer" vm_manager::snapshot::failed \
  snapshot create dc-k bad2 --kind full
unset VMCTL_TEST_SNAPSHOT_SAVE_FAIL
check_k "after a failed save on a layer" "$okl"
expect_eq "after a failed save on a layer: D intact" "$(get dc-k 4)" keepD
vm stop dc-k >/dev/null 2>&1 || vm kill dc-k >/dev/null
if vm start dc-k --wait --timeout 180 >/dev/null; then
  wait_disk dc-k
  expect_eq "cold-booted on its layer: A, C, D there" \
    "$(get dc-k 1),$(get dc-k 3),$(get dc-k 4)" "keepA,keepC,keepD"
else
  fail "cold start of dc-k on its layer: $(vm --json start dc-k 2>&1 | tail -3)"
fi
vm destroy --force dc-k >/dev/null
vm snapshot rm dc-k ok >/dev/null || fail "rm dc-k/ok"
[ -z "$(find "$VMCTL_HOME/vms" -mindepth 1 2>/dev/null)" ] && ok "destroy leaves no VM directory" ||
  fail "left in vms/: $(ls "$VMCTL_HOME/vms")"
[ -z "$(find "$VMCTL_HOME/snapshots" -type f 2>/dev/null)" ] && ok "no snapshot files left" ||
  fail "left in snapshots/: $(ls -R "$VMCTL_HOME/snapshots")"

finish
