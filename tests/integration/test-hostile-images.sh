#!/bin/bash
# Hostile disk images: files crafted so that QEMU, opening them, would hand the guest a host file
# (a qcow2 backing file or external data file, vmdk extents or parent, a json: filename, a raw
# disk that looks like qcow2 when probed, an image swapped after create). Every one must be
# refused by `create --image PATH`, by `image import`, or at `start`, with its code; the one a
# guest can make itself (a qcow2 header written onto its raw disk) must boot as raw. Then the
# modes of everything vmctl and QEMU create, under umask 000.
# Prints "hostile-images: N trials, N escapes".
source "$(dirname "$0")/lib.sh"
command -v qemu-img >/dev/null || skip "qemu-img is not installed"
umask 000
# a home of its own (no images/ link to the shared default guest: this test imports images)
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-hostile.XXXXXX)
trap cleanup EXIT
src=$VMCTL_HOME/src
mkdir -p "$src"
trials=0
escapes=0

# The host file a hostile image points at: a marker the guest must never see.
marker="HOST-SECRET-$$-$RANDOM"
secret=$src/secret
{ printf '%s\n' "$marker"; head -c 1048576 /dev/zero; } >"$secret"

# refused WHAT CODE CMD...: one trial; vmctl must fail with CODE (and create no VM)
refused() {
  local what=$1 code=$2; shift 2
  trials=$((trials + 1))
  local before=$fails
  expect_code "$what" "$code" "$@"
  [ "$fails" -gt "$before" ] && escapes=$((escapes + 1))
}

# crafted images
qemu-img create -q -f qcow2 -F raw -b "$secret" "$src/backing.qcow2" 1M
qemu-img create -q -f qcow2 -F raw -u -b "json:{\"driver\":\"file\",\"filename\":\"$secret\"}" "$src/json-backing.qcow2" 1M
qemu-img create -q -f qcow2 -o data_file="$src/datafile",data_file_raw=on "$src/datafile.qcow2" 1M
cp "$secret" "$src/datafile" # what the data file holds is the host's
{ cat "$src/backing.qcow2"; head -c 1048576 /dev/zero; } >"$src/looks-qcow2.raw"
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "%s" 0\n' "$secret" >"$src/extent.vmdk"
qemu-img convert -q -f raw -O vmdk "$secret" "$src/parent.vmdk"
qemu-img create -q -f vmdk -F vmdk -b "$src/parent.vmdk" "$src/child.vmdk"
qemu-img create -q -f qed -F raw -b "$secret" "$src/backing.qed" 1M

for img in backing.qcow2 json-backing.qcow2 datafile.qcow2 looks-qcow2.raw extent.vmdk child.vmdk; do
  refused "create --image $img" vm_manager::image::unsafe create "h-${img%%.*}" --image "$src/$img"
  refused "import $img" vm_manager::image::unsafe image import "$src/$img" --name "h-${img%%.*}"
done
expect_eq "unsafe names the backing file" "$(vm --json create h-x --image "$src/backing.qcow2" | jq -r .error.details.backing_file)" "$secret"
# qed: a format our header parser does not know, with a backing file: qemu-img disagrees
refused "create --image backing.qed" vm_manager::image::format_detection_failed create h-qed --image "$src/backing.qed"
refused "import backing.qed" vm_manager::image::format_detection_failed image import "$src/backing.qed"
# a json: (protocol) filename is no file
refused "create --image json:" vm_manager::image::overlay_creation_failed create h-json --image "json:{\"driver\":\"file\",\"filename\":\"$secret\"}"
# convert would copy the host file into its output
refused "convert backing.qcow2" vm_manager::image::unsafe image convert "$src/backing.qcow2" "$src/out.raw" --format raw
[ ! -e "$src/out.raw" ] && ok "convert wrote nothing" || fail "convert wrote $src/out.raw"
expect_eq "no VM was created" "$(vm --json list | jq length)" 0
[ -z "$(ls -A "$VMCTL_HOME/images" 2>/dev/null | grep -v '^default$')" ] && ok "nothing was imported" || fail "images: $(ls "$VMCTL_HOME/images")"

# swapped after create: the next start refuses (before QEMU runs)
qemu-img create -q -f qcow2 "$src/good.qcow2" 1M
vm create swap-path --image "$src/good.qcow2" --net none >/dev/null || fail "create from good.qcow2"
cp "$src/backing.qcow2" "$src/good.qcow2"
refused "start after the base (a path) became an overlay" vm_manager::image::unsafe start swap-path
qemu-img create -q -f qcow2 "$src/good2.qcow2" 1M
vm image import "$src/good2.qcow2" --name good >/dev/null || fail "import good2.qcow2"
vm create swap-cache --image good --net none >/dev/null || fail "create from good"
cp "$src/datafile.qcow2" "$VMCTL_HOME/images/good/disk"
refused "start after the cached base gained a data file" vm_manager::image::unsafe start swap-cache
vm create swap-ov --image "$src/good2.qcow2" --net none >/dev/null || fail "create from good2.qcow2"
qemu-img rebase -q -u -F raw -b "$secret" "$VMCTL_HOME/vms/swap-ov/disk.qcow2"
refused "start after the overlay's backing file changed" vm_manager::image::unsafe start swap-ov
[ -z "$(pgrep -f "$VMCTL_HOME/vms/swap-")" ] && ok "no QEMU was started for them" || fail "QEMU running for a refused start"

# modes, under umask 000 (set above)
mode() { stat -c %a "$1"; }
expect_eq "vmctl.db is 0600" "$(mode "$VMCTL_HOME/vmctl.db")" 600
for f in "$VMCTL_HOME/vmctl.db-wal" "$VMCTL_HOME/vmctl.db-shm"; do
  [ -e "$f" ] && expect_eq "$(basename "$f") is 0600" "$(mode "$f")" 600
done
expect_eq "vms/ is 0700" "$(mode "$VMCTL_HOME/vms")" 700
expect_eq "a VM directory is 0700" "$(mode "$VMCTL_HOME/vms/swap-ov")" 700
expect_eq "the overlay is 0600" "$(mode "$VMCTL_HOME/vms/swap-ov/disk.qcow2")" 600
expect_eq "seed.iso is 0600" "$(mode "$VMCTL_HOME/vms/swap-ov/seed.iso")" 600
expect_eq "the cached image is 0600" "$(mode "$VMCTL_HOME/images/good/disk")" 600
expect_eq "images/<name>/ is 0700" "$(mode "$VMCTL_HOME/images/good")" 700
expect_eq "images/ is 0700" "$(mode "$VMCTL_HOME/images")" 700

# A guest writes a qcow2 header (backing file: the host secret) onto its raw disk: the next
# boot must still present the raw bytes (QEMU is told "raw", never probes). Then the runtime
# files' modes.
if [ -n "${VMCTL_TEST_IMAGES:-}" ] && [ -f "$VMCTL_TEST_IMAGES/default/vmlinux" ] && command -v qemu-system-x86_64 >/dev/null; then
  d=$VMCTL_TEST_IMAGES/default
  truncate -s 16M "$src/rootfs.raw"
  vm image import "$src/rootfs.raw" --name rootfs >/dev/null || fail "import rootfs.raw"
  cmdline="console=ttyS0 rdinit=/init panic=-1 quiet cryptomgr.notests"
  vm create rawvm --image rootfs --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" --cmdline "$cmdline" --net none >/dev/null || fail "create rawvm"
  dd if="$src/backing.qcow2" of="$VMCTL_HOME/vms/rawvm/rootfs.raw" conv=notrunc status=none
  trials=$((trials + 1))
  if vm start rawvm --wait --timeout 120 >/dev/null 2>&1; then
    out=$(vm exec rawvm -- sh -c 'for i in $(seq 100); do [ -e /sys/block/vda ] && head -c 1 /dev/vda >/dev/null 2>&1 && break; sleep 0.1; done; head -c 4 /dev/vda | od -An -c; grep -c '"$marker"' /dev/vda' 2>&1)
    if grep -q 'Q   F   I' <<<"$out" && ! grep -qx '[1-9]*' <<<"$(tail -1 <<<"$out")"; then
      ok "guest-written qcow2 header: the disk is still raw ($(head -1 <<<"$out" | tr -s ' '))"
    else
      fail "guest-written qcow2 header: guest sees: $out"
      escapes=$((escapes + 1))
    fi
    pid=$(vm --json status rawvm | jq -r .pid)
    tr '\0' '\n' </proc/"$pid"/cmdline | grep -q '"driver":"raw"' && ok "QEMU is told the disk is raw" || fail "argv names no raw driver"
    v=$VMCTL_HOME/vms/rawvm
    for s in qmp.sock agent.sock agent.1.sock console.sock; do
      expect_eq "$s is 0600" "$(mode "$v/$s")" 600
    done
    for f in console.log qemu.log qemu.pid rootfs.raw seed.iso; do
      expect_eq "$f is 0600" "$(mode "$v/$f")" 600
    done
    expect_eq "the running VM's directory is 0700" "$(mode "$v")" 700
  else
    fail "rawvm did not boot: $(tail -5 "$VMCTL_HOME/vms/rawvm/qemu.log" 2>/dev/null)"
    escapes=$((escapes + 1))
  fi
  vm destroy --force rawvm >/dev/null
else
  echo "note: default guest not built: the boot of a raw disk with a qcow2 header and the socket modes were not checked"
  [ "${CI:-}" = true ] && fail "CI: the default guest is required"
fi

echo "hostile-images: $trials trials, $escapes escapes"
[ "$escapes" -eq 0 ] || fail "$escapes hostile images got through"
finish
