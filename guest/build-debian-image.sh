#!/bin/bash
# SPDX-License-Identifier: MIT
# Build a Debian 12 disk image that a user would really boot: debootstrap'ed from Debian's
# archive with the cloud kernel, cloud-init, openssh-server, sudo and vmctl-agent as a systemd
# service on the virtio-serial port org.vmctl.agent. The disk is a raw MBR disk with one ext4
# partition and GRUB (i386-pc, embedded after the MBR), so it boots on -M q35 with SeaBIOS.
# The kernel and initrd are also copied next to the image for direct kernel boot on -M microvm.
#
#   build-debian-image.sh OUTDIR AGENT [CACHEDIR]
#
# OUTDIR gets debian12.raw, vmlinuz, initrd.img and manifest. Nothing is done when
# OUTDIR/manifest matches the inputs (sha256 of AGENT and of this script); the debootstrap
# tree is cached in CACHEDIR (default ~/.cache/vmctl/debian12) and reused between runs. The
# build runs without root-only steps beyond debootstrap itself (no loop devices, no mounts
# besides debootstrap's own): the filesystem is made with `mkfs.ext4 -d`, GRUB's boot.img and
# core.img are written with dd.
#
# Host packages: debootstrap, e2fsprogs, fdisk (sfdisk), grub-pc-bin (grub-mkimage), coreutils.
set -euo pipefail
export LC_ALL=C

OUT=${1:?usage: build-debian-image.sh OUTDIR AGENT [CACHEDIR]}
AGENT=${2:?usage: build-debian-image.sh OUTDIR AGENT [CACHEDIR]}
CACHE=${3:-${XDG_CACHE_HOME:-$HOME/.cache}/vmctl/debian12}
MIRROR=${VMCTL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DISK_MIB=${VMCTL_DEBIAN_DISK_MIB:-2048}
PKGS=linux-image-cloud-amd64,cloud-init,openssh-server,sudo,systemd-sysv,udev,dbus,ca-certificates,ifupdown,isc-dhcp-client,netbase,iproute2,python3-yaml,python3-cffi-backend

for t in debootstrap mkfs.ext4 sfdisk grub-mkimage sha256sum; do
    command -v "$t" >/dev/null || { echo "build-debian-image: '$t' not found" >&2; exit 3; }
done
[ -x "$AGENT" ] || { echo "build-debian-image: agent '$AGENT' not executable" >&2; exit 2; }

# One build at a time per cache (tests run in parallel, and several of them use this image).
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock 8

want="script $(sha256sum <"$0" | cut -d' ' -f1)
agent $(sha256sum <"$AGENT" | cut -d' ' -f1)
packages $PKGS
disk_mib $DISK_MIB"
if [ -f "$OUT/manifest" ] && [ "$(cat "$OUT/manifest")" = "$want" ] && [ -f "$OUT/debian12.raw" ]; then
    echo "up to date: $OUT/debian12.raw"
    exit 0
fi

mkdir -p "$CACHE"
tree=$CACHE/rootfs
if [ ! -f "$CACHE/rootfs.done" ] || [ "$(cat "$CACHE/rootfs.done")" != "$PKGS" ]; then
    rm -rf "$tree"
    echo "STEP debootstrap (several minutes)"
    debootstrap --variant=minbase --include="$PKGS" bookworm "$tree" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
        { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
    rm -rf "$tree"/var/cache/apt/archives/*.deb
    echo "$PKGS" >"$CACHE/rootfs.done"
fi

work=$(mktemp -d "${OUT%/}.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "STEP configure"
# Configuration goes into a copy so the cached tree stays pristine.
cp -a "$tree" "$work/root"
r=$work/root
install -m 0755 "$AGENT" "$r/usr/local/bin/vmctl-agent"
cat >"$r/etc/systemd/system/vmctl-agent.service" <<'EOF'
[Unit]
Description=vmctl guest agent (virtio-serial port org.vmctl.agent)
After=systemd-udevd.service
Wants=systemd-udevd.service

[Service]
ExecStart=/usr/local/bin/vmctl-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/vmctl-agent.service "$r/etc/systemd/system/multi-user.target.wants/vmctl-agent.service"
# The agent does not wait for anything but its port: udev makes it, the agent polls sysfs.
mkdir -p "$r/etc/cloud/cloud.cfg.d"
cat >"$r/etc/cloud/cloud.cfg.d/90-vmctl.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
# minbase has no `locales`: the default en_US.UTF-8 would make cc_locale fail
locale: C.UTF-8
EOF
echo "debian" >"$r/etc/hostname"
cat >"$r/etc/fstab" <<'EOF'
/dev/vda1 / ext4 defaults,errors=remount-ro 0 1
EOF
# Quicker boots under TCG: no wait for a network that may not exist.
ln -sf /dev/null "$r/etc/systemd/system/systemd-networkd-wait-online.service"
ln -sf /dev/null "$r/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$r/etc/systemd/system/apt-daily-upgrade.timer"
ln -sf /dev/null "$r/etc/systemd/system/e2scrub_reap.service"
rm -f "$r/etc/machine-id" && touch "$r/etc/machine-id"
rm -f "$r"/etc/ssh/ssh_host_*   # cloud-init makes fresh host keys per instance

kver=$(ls "$r/lib/modules" | sort -V | tail -1)
[ -f "$r/boot/initrd.img-$kver" ] || { echo "build-debian-image: no initrd for $kver" >&2; exit 1; }
cmdline="root=/dev/vda1 ro console=ttyS0 net.ifnames=0 quiet tsc_early_khz=${VMCTL_TSC_KHZ:-0}"
cmdline=${cmdline% tsc_early_khz=0}
mkdir -p "$r/boot/grub"
cat >"$r/boot/grub/grub.cfg" <<EOF
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
linux /boot/vmlinuz-$kver $cmdline
initrd /boot/initrd.img-$kver
boot
EOF

echo "STEP filesystem"
part_start=2048 # sectors: 1 MiB, GRUB's core.img lives in the gap before it
part_mib=$((DISK_MIB - 1))
mkfs.ext4 -q -F -L root -d "$r" "$work/part.img" "${part_mib}M"
disk=$work/debian12.raw
truncate -s "${DISK_MIB}M" "$disk"
echo "start=$part_start, type=83, bootable" | sfdisk -q "$disk"
dd if="$work/part.img" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none

echo "STEP grub"
grub-mkimage -O i386-pc -o "$work/core.img" -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux configfile serial terminal echo test
[ "$(stat -c %s "$work/core.img")" -lt $((part_start * 512 - 512)) ] || { echo "core.img too big" >&2; exit 1; }
dd if=/usr/lib/grub/i386-pc/boot.img of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$work/core.img" of="$disk" bs=512 seek=1 conv=notrunc status=none

mkdir -p "$OUT"
cp "$r/boot/vmlinuz-$kver" "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
cp "$r/boot/initrd.img-$kver" "$OUT/initrd.img.tmp" && mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
echo "$cmdline" >"$OUT/cmdline"
mv "$disk" "$OUT/debian12.raw"
echo "$want" >"$OUT/manifest"
echo "built: $OUT/debian12.raw (kernel $kver)"
