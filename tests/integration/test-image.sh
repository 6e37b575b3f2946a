#!/bin/bash
# The image cache and VM disks: import of every format qemu-img makes, list/inspect/convert/
# rm/prune, per-VM qcow2 overlays (qemu-img check, backing file, --disk), raw root filesystem
# clones with their SHA-256 stamp, the cloud-init seed ISO (read back by isoinfo and blkid), and
# a q35 boot with the overlay and the seed attached (default guest's kernel, agent ready).
source "$(dirname "$0")/lib.sh"
command -v qemu-img >/dev/null || skip "qemu-img is not installed"

export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-image.XXXXXX)
cleanup_image() {
  for n in $("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null); do
    "$VMCTL" destroy --force "$n" >/dev/null 2>&1
  done
  rm -rf "$VMCTL_HOME"
}
trap cleanup_image EXIT
src=$VMCTL_HOME/src
mkdir -p "$src"

for f in qcow2 raw vmdk vdi vhdx vpc; do
  qemu-img create -q -f $f "$src/disk-$f.img" 64M
  out=$(vm --json image import "$src/disk-$f.img" --name "i-$f")
  expect_eq "import $f: detected format" "$(jq -r .format <<<"$out")" $f
  out=$(vm --json image inspect "i-$f")
  [ "$(jq -r .virtual_size <<<"$out")" -ge 67108864 ] && ok "inspect $f: virtual size" || fail "inspect $f: $out"
  expect_eq "inspect $f: no backing file" "$(jq -r .backing_file <<<"$out")" null
done
expect_eq "list shows the imported images" "$(vm --json image list | jq -r '[.[].name | select(startswith("i-"))] | length')" 6
: >"$src/empty.img"
expect_code "empty file" vm_manager::image::format_detection_failed image import "$src/empty.img"
qemu-img create -q -f qcow2 -b "$src/disk-qcow2.img" -F qcow2 "$src/overlay.qcow2"
expect_code "an overlay is not a cache image" vm_manager::image::unsafe image import "$src/overlay.qcow2"
out=$(vm --json image inspect "$src/overlay.qcow2")
expect_eq "inspect path: backing file" "$(jq -r .backing_file <<<"$out")" "$src/disk-qcow2.img"
expect_code "name taken" vm_manager::image::already_exists image import "$src/disk-raw.img" --name i-raw
expect_code "bad name is still bad input" vm_manager::config::invalid image import "$src/disk-raw.img" --name "-bad"
expect_code "inspect of nothing" vm_manager::image::not_found image inspect no-such-image
expect_code "rm of nothing" vm_manager::image::not_found image rm no-such-image

out=$(vm --json image convert i-qcow2 "$src/conv.vmdk" --format vmdk)
expect_eq "convert to vmdk" "$(jq -r .format <<<"$out")" vmdk
expect_code "qemu-img convert failing" vm_manager::image::conversion_failed image convert i-qcow2 "$src/no/such/dir/x.raw" --format raw
expect_code "convert to an unknown format" vm_manager::config::invalid image convert i-qcow2 "$src/x" --format nope
printf 'QFI\xfb\0\0\0\3garbage-garbage-garbage-garbage-garbage-garbage-garbage-garbage-garbage' >"$src/bad.qcow2"
expect_code "convert of a damaged image" vm_manager::image::format_detection_failed image convert "$src/bad.qcow2" "$src/y" --format raw

# VM disks: a qcow2 overlay on the cached base, grown by --disk
vm create ov --image i-qcow2 --disk 2 >/dev/null && ok "create with --image" || fail "create with --image"
dir=$VMCTL_HOME/vms/ov
qemu-img check -q "$dir/disk.qcow2" && ok "overlay passes qemu-img check" || fail "overlay check"
info=$(qemu-img info --output=json "$dir/disk.qcow2")
expect_eq "overlay backing file" "$(jq -r '."backing-filename"' <<<"$info")" "$VMCTL_HOME/images/i-qcow2/disk"
expect_eq "overlay backing format" "$(jq -r '."backing-filename-format"' <<<"$info")" qcow2
expect_eq "overlay grown by --disk" "$(jq -r '."virtual-size"' <<<"$info")" 2147483648
expect_eq "q35 by default for disk images" "$(vm --json status ov | jq -r .machine)" q35
if have isoinfo genisoimage "the seed ISO's files"; then
  expect_eq "seed meta-data hostname" "$(isoinfo -i "$dir/seed.iso" -J -x /meta-data | grep local-hostname)" "local-hostname: ov"
  isoinfo -i "$dir/seed.iso" -J -x /user-data | grep -q 'NOPASSWD:ALL' && ok "seed default user with sudo" || fail "seed user-data"
fi
have blkid util-linux "the seed ISO's label" && expect_eq "seed label" "$(blkid -p -s LABEL -o value "$dir/seed.iso")" cidata
expect_code "--disk smaller than the image" vm_manager::config::invalid create small --image i-raw --disk 0
vm create ov2 --image i-vmdk >/dev/null
expect_eq "vmdk base format recorded" "$(qemu-img info --output=json "$VMCTL_HOME/vms/ov2/disk.qcow2" | jq -r '."backing-filename-format"')" vmdk
printf '#cloud-config\nhostname: mine\n' >"$src/user-data"
ssh-keygen -q -t ed25519 -N "" -f "$src/key" >/dev/null
vm create ov3 --image i-raw --cloud-init "$src/user-data" >/dev/null && ok "create with --cloud-init" || fail "create with --cloud-init"
have isoinfo genisoimage "--cloud-init in the seed" && expect_eq "--cloud-init passed through" "$(isoinfo -i "$VMCTL_HOME/vms/ov3/seed.iso" -J -x /user-data)" "$(cat "$src/user-data")"
vm create ov4 --image i-raw --ssh-key "$src/key.pub" >/dev/null
have isoinfo genisoimage "--ssh-key in the seed" && { isoinfo -i "$VMCTL_HOME/vms/ov4/seed.iso" -J -x /user-data | grep -qF "$(cut -d' ' -f2 "$src/key.pub")" && ok "--ssh-key in user-data" || fail "--ssh-key in user-data"; }
expect_code "--ssh-key that is no key" vm_manager::cloudinit::iso_failed create ov5 --image i-raw --ssh-key "$src/user-data"
[ ! -e "$VMCTL_HOME/vms/ov5" ] && ok "failed create removed its directory" || fail "ov5 directory left"
expect_code "missing base image" vm_manager::image::overlay_creation_failed create ov6 --image no-such-image
expect_code "--cloud-init with the default guest" vm_manager::config::invalid create ov7 --cloud-init "$src/user-data"

# rm refuses an image in use; prune --all keeps used images
expect_code "rm of an image in use" vm_manager::image::in_use image rm i-qcow2
expect_eq "in_use names the vms" "$(jq -r .error.details.vms <<<"$LAST_JSON")" ov
vm image rm i-vdi >/dev/null && ok "rm unused" || fail "rm unused"
out=$(vm --json image prune --all)
expect_eq "prune --all removes unused images" "$(jq -r '.removed | sort | join(",")' <<<"$out")" "i-vhdx,i-vpc"

# raw root filesystems booted with --kernel: a clone, checked against the template's SHA-256
kernel=${VMCTL_TEST_IMAGES:-/nonexistent}/default/vmlinux
if [ ! -f "$kernel" ]; then
  skip_section "the rootfs checks: the default guest was not built (run scripts/test.sh, which builds it first)"
elif have mkfs.ext4 e2fsprogs "the rootfs checks"; then
  truncate -s 32M "$src/rootfs.ext4" && mkfs.ext4 -q -F "$src/rootfs.ext4"
  vm image import "$src/rootfs.ext4" --name rootfs >/dev/null
  vm create rf --image rootfs --kernel "$kernel" >/dev/null && ok "rootfs create" || fail "rootfs create"
  cmp -s "$src/rootfs.ext4" "$VMCTL_HOME/vms/rf/rootfs.raw" && ok "rootfs cloned" || fail "rootfs clone differs"
  expect_eq "rootfs on microvm" "$(vm --json status rf | jq -r .machine)" microvm
  printf 'X' | dd of="$VMCTL_HOME/images/rootfs/disk" bs=1 seek=5000 conv=notrunc status=none
  expect_code "tampered rootfs template" vm_manager::image::rootfs_failed create rf2 --image rootfs --kernel "$kernel"
fi

# sparse import: holes stay holes (blocks on disk far below the apparent size)
truncate -s 1G "$src/sparse.raw"
printf 'head' | dd of="$src/sparse.raw" conv=notrunc status=none
printf 'tail' | dd of="$src/sparse.raw" bs=1M seek=1000 conv=notrunc status=none
vm image import "$src/sparse.raw" --name sparse >/dev/null && ok "sparse import" || fail "sparse import"
f=$VMCTL_HOME/images/sparse/disk
expect_eq "sparse import: apparent size kept" "$(stat -c %s "$f")" 1073741824
used=$(du -k "$f" | cut -f1)
[ "$used" -lt 10240 ] && ok "sparse import: holes kept ($used KiB on disk)" || fail "sparse import wrote the holes: $used KiB on disk"
cmp -s "$src/sparse.raw" "$f" && ok "sparse import: same bytes" || fail "sparse import: content differs"

# Ctrl-C (SIGINT) during import: no temporary directory left; a killed import's is removed by the
# next image command
dd if=/dev/zero of="$src/big.raw" bs=1M count=64 status=none
VMCTL_TEST_IMAGE_COPY_DELAY_MS=400 "$VMCTL" image import "$src/big.raw" --name big >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do compgen -G "$VMCTL_HOME/images/.tmp-big-*" >/dev/null && break; sleep 0.05; done
compgen -G "$VMCTL_HOME/images/.tmp-big-*" >/dev/null && ok "import in progress" || fail "no .tmp dir seen during import"
kill -INT $pid; wait $pid; rc=$?
expect_eq "SIGINT: import exits 130" "$rc" 130
compgen -G "$VMCTL_HOME/images/.tmp-*" >/dev/null && fail "SIGINT left $(ls -d "$VMCTL_HOME"/images/.tmp-*)" || ok "SIGINT: no .tmp dir left"
[ ! -e "$VMCTL_HOME/images/big" ] && ok "SIGINT: no image" || fail "SIGINT: image 'big' exists"
VMCTL_TEST_IMAGE_COPY_DELAY_MS=400 "$VMCTL" image import "$src/big.raw" --name big >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do compgen -G "$VMCTL_HOME/images/.tmp-big-*" >/dev/null && break; sleep 0.05; done
kill -KILL $pid; wait $pid 2>/dev/null
compgen -G "$VMCTL_HOME/images/.tmp-big-*" >/dev/null && ok "SIGKILL leaves a .tmp dir" || fail "no .tmp dir after SIGKILL"
vm image list >/dev/null
compgen -G "$VMCTL_HOME/images/.tmp-*" >/dev/null && fail "stale .tmp dir not removed by the next command" || ok "next image command removed the stale .tmp dir"

# q35 boot of an imported image's overlay (+ seed) with the default guest's kernel: the agent answers
if [ ! -f "$kernel" ]; then
  skip_section "the q35 boot: the default guest was not built (run scripts/test.sh, which builds it first)"
elif have qemu-system-x86_64 qemu-system-x86 "the q35 boot"; then
  d=$VMCTL_TEST_IMAGES/default
  cmdline="console=ttyS0 rdinit=/init panic=-1 quiet cryptomgr.notests"
  vm create boot --image i-qcow2 --machine q35 --kernel "$d/vmlinux" --initrd "$d/initrd.img" --cmdline "$cmdline" >/dev/null
  if vm start boot --wait --timeout 120 >/dev/null 2>&1; then
    ok "q35 boot with overlay and seed: ready"
    # virtio_blk is among the modules the default guest loads after its agent started
    out=$(vm exec boot -- sh -c 'for i in $(seq 100); do [ -e /sys/block/vdb ] && break; sleep 0.1; done; cat /sys/block/vd*/size' 2>&1)
    grep -q '^131072$' <<<"$out" && ok "guest sees the 64 MiB overlay disk" || fail "guest disks: $out"
    [ "$(wc -l <<<"$out")" -eq 2 ] && ok "guest sees the seed disk too" || fail "guest disks: $out"
  else
    fail "q35 boot: $(tail -5 "$VMCTL_HOME/vms/boot/console.log" 2>/dev/null)"
  fi
  vm destroy --force boot >/dev/null
fi

finish
