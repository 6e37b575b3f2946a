#!/bin/bash
# SPDX-License-Identifier: MIT
# Build vmctl's default guest from Debian packages only: the stock cloud kernel (as a raw vmlinux
# for PVH boot on -M microvm), and an initramfs with busybox, the virtio/vsock modules, /init and
# vmctl-agent.
#
#   build-default.sh OUTDIR AGENT CACHEDIR [--force]
#
# OUTDIR gets vmlinux, initrd.img and manifest; it is built in OUTDIR.tmp.PID and renamed into
# place. Nothing is done when OUTDIR/manifest already describes the same inputs (kernel and
# busybox package versions, sha256 of AGENT and of this script) unless --force. Debian packages
# are downloaded with `apt-get download` into CACHEDIR/debs and reused while their sha256 matches
# the archive's.
#
# Host packages needed: apt (apt-get, apt-cache), dpkg (dpkg-deb), cpio, kmod (modinfo),
# coreutils, findutils, gzip, and the decompressor of the kernel image: lz4 for Debian's (xz-utils,
# zstd or bzip2 for other kernels).
#
# Output read by src/lib/guest.c: "STEP <text>" lines on stdout; for a missing tool one line
# "MISSING <command> <debian-package>" and exit status 3; any other failure exits 1 with the
# reason on stderr.
#
# Environment: VMCTL_KERNEL_PACKAGE (default linux-image-cloud-amd64), VMCTL_INITRD_COMPRESSION
# (none|gzip, default none: see the measurement below).
set -euo pipefail
export LC_ALL=C

KERNEL_META=${VMCTL_KERNEL_PACKAGE:-linux-image-cloud-amd64}
BUSYBOX_PKG=busybox-static
# Loaded by /init before the agent starts (the agent's port needs them), dependencies first.
EARLY_MODULES="virtio_mmio virtio_console"
# Loaded in the background after the agent started: network first (/init configures eth0 as
# soon as it appears: after virtio_net on microvm, after virtio_pci on q35), disks, vsock.
LATE_MODULES="virtio_net virtio_pci virtio_blk vmw_vsock_virtio_transport"
# Loaded by /init only when the VM has host directories (vmctl create --mount): virtio-fs, and 9p
# where the kernel has it (Debian's cloud kernel does not: 9p mounts need a kernel with 9p).
FS_MODULES="virtiofs"
FS_OPTIONAL_MODULES="9pnet_virtio 9p"
# Measured under TCG (-M microvm, 2.4 GHz host, 10 alternating boots each, QEMU spawn to first
# pong): the uncompressed 3.7 MB initrd mean 2.73 s (min 1.95), gzip -9 (1.6 MB) mean 2.77 s
# (min 2.09): the guest unpacks gzip slowly under TCG, QEMU loads the extra 2 MB for free.
COMPRESSION=${VMCTL_INITRD_COMPRESSION:-none}

step() { echo "STEP $*"; }
die() {
    echo "build-default: $*" >&2
    exit 1
}
need() { # command debian-package
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "MISSING $1 $2"
        echo "build-default: '$1' not found: install the Debian package '$2'" >&2
        exit 3
    fi
}

usage() {
    echo "usage: build-default.sh OUTDIR AGENT CACHEDIR [--force]" >&2
    exit 2
}
force=0
args=()
for a in "$@"; do
    case $a in
    --force) force=1 ;;
    -*) usage ;;
    *) args+=("$a") ;;
    esac
done
[ ${#args[@]} -eq 3 ] || usage
out=${args[0]}
agent=${args[1]}
cache=${args[2]}
[ -f "$agent" ] && [ -x "$agent" ] || die "the agent binary '$agent' does not exist (build vmctl-agent first)"
case $COMPRESSION in none | gzip) ;; *) die "VMCTL_INITRD_COMPRESSION must be none or gzip" ;; esac

need apt-get apt
need apt-cache apt
need dpkg-deb dpkg
need cpio cpio
need modinfo kmod
need sha256sum coreutils
need od coreutils
need find findutils
need gzip gzip

# --- what would we build? ---
step "resolving Debian packages"
# the meta package depends on the real, versioned one (linux-image-6.1.0-56-cloud-amd64)
kpkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ && !k { k = $2 } END { print k }' || true)
[ -n "$kpkg" ] || die "cannot resolve '$KERNEL_META' with apt-cache (run 'apt-get update' as root?)"

# pkg -> "version filename sha256" of the candidate version
pkg_info() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | awk '
        done { next }
        /^Version: / { v = $2 } /^Filename: / { f = $2 } /^SHA256: / { s = $2 }
        /^$/ { if (v != "") done = 1 }
        END { if (v != "" && f != "" && s != "") print v, f, s }'
}
read -r kver kfile ksha <<<"$(pkg_info "$kpkg")" || true
[ -n "${kver:-}" ] || die "apt-cache knows no installable version of '$kpkg' (run 'apt-get update' as root?)"
read -r bver bfile bsha <<<"$(pkg_info "$BUSYBOX_PKG")" || true
[ -n "${bver:-}" ] || die "apt-cache knows no installable version of '$BUSYBOX_PKG' (run 'apt-get update' as root?)"

agent_sha=$(sha256sum <"$agent" | cut -d' ' -f1)
script_sha=$(sha256sum <"${BASH_SOURCE[0]}" | cut -d' ' -f1)
manifest="kernel_package=$kpkg
kernel_version=$kver
busybox_version=$bver
agent_sha256=$agent_sha
script_sha256=$script_sha
initrd_compression=$COMPRESSION
early_modules=$EARLY_MODULES
late_modules=$LATE_MODULES
fs_modules=$FS_MODULES $FS_OPTIONAL_MODULES"

if [ $force -eq 0 ] && [ -f "$out/manifest" ] && [ -f "$out/vmlinux" ] && [ -f "$out/initrd.img" ] &&
    [ "$(cat "$out/manifest")" = "$manifest" ]; then
    step "up to date ($kpkg $kver)"
    exit 0
fi

# --- downloads (cached) ---
mkdir -p "$cache/debs"
apt_opts=(-q)
# as root, apt drops to the _apt user, which cannot write to the cache: silence that warning
[ "$(id -u)" -eq 0 ] && apt_opts+=(-o APT::Sandbox::User=root)

fetch() { # pkg version filename sha256; sets $deb to the verified .deb in the cache
    local pkg=$1 ver=$2 file=$3 sha=$4 dl got
    deb="$cache/debs/$(basename "$file")"
    if [ -f "$deb" ] && [ "$(sha256sum <"$deb" | cut -d' ' -f1)" = "$sha" ]; then
        return 0
    fi
    step "downloading $pkg $ver"
    rm -f "$deb"
    dl=$(mktemp -d "$cache/debs/.dl.XXXXXX")
    if ! (cd "$dl" && apt-get "${apt_opts[@]}" download "$pkg=$ver" >/dev/null); then
        rm -rf "$dl"
        die "apt-get download $pkg=$ver failed"
    fi
    got=$(find "$dl" -maxdepth 1 -name '*.deb' -print -quit)
    if [ -z "$got" ] || [ "$(sha256sum <"$got" | cut -d' ' -f1)" != "$sha" ]; then
        rm -rf "$dl"
        die "$pkg $ver: the download is missing or its sha256 does not match the archive's"
    fi
    mv "$got" "$deb"
    rm -rf "$dl"
}
fetch "$kpkg" "$kver" "$kfile" "$ksha"
kdeb=$deb
fetch "$BUSYBOX_PKG" "$bver" "$bfile" "$bsha"
bdeb=$deb

# --- work area, removed on exit ---
parent=$(dirname "$out")
mkdir -p "$parent"
tmp="$out.tmp.$$"
work=$(mktemp -d "${TMPDIR:-/tmp}/vmctl-build-default.XXXXXX")
cleanup() { rm -rf "$work" "$tmp"; }
trap cleanup EXIT
rm -rf "$tmp"
mkdir -p "$tmp"

step "extracting $kpkg"
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bdeb" "$work/busybox"

# --- vmlinux out of the bzImage ---
# The x86 boot header says where the compressed kernel is: setup_sects at 0x1f1 (0 means 4),
# payload_offset and payload_length (u32) at 0x248/0x24c, relative to the protected-mode code
# at (setup_sects + 1) * 512. The compression is told by its magic. The last 4 bytes of the
# payload are the decompressed size (gzip's ISIZE, or appended by the kernel build).
step "extracting vmlinux"
vmlinuz=$(find "$work/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
[ -n "$vmlinuz" ] || die "$kpkg has no /boot/vmlinuz-*"
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' \n'; }
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' \n'; }
[ "$(od -An -c -j $((0x202)) -N4 "$vmlinuz" | tr -d ' \n')" = "HdrS" ] ||
    die "$(basename "$vmlinuz") is not a bzImage"
setup_sects=$(u8 "$vmlinuz" $((0x1f1)))
[ "$setup_sects" -eq 0 ] && setup_sects=4
poff=$(u32 "$vmlinuz" $((0x248)))
plen=$(u32 "$vmlinuz" $((0x24c)))
start=$(((setup_sects + 1) * 512 + poff))
dd if="$vmlinuz" of="$work/payload" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$plen" \
    status=none
[ "$(stat -c %s "$work/payload")" -eq "$plen" ] || die "truncated kernel payload in $(basename "$vmlinuz")"
want_size=$(u32 "$work/payload" $((plen - 4)))
sig=$(od -An -tx1 -N6 "$work/payload" | tr -d ' \n')
decomp=()
case $sig in
1f8b*) decomp=(gzip -dc) pkg=gzip ;;
fd377a585a00) decomp=(xz -dc --single-stream) pkg=xz-utils ;;
28b52ffd*) decomp=(zstd -dc) pkg=zstd ;;
02214c18*) decomp=(lz4 -dc) pkg=lz4 ;;
425a68*) decomp=(bzip2 -dc) pkg=bzip2 ;;
5d0000*) decomp=(xz -dc --format=lzma) pkg=xz-utils ;;
*) die "unknown compression of the kernel payload (magic $sig)" ;;
esac
need "${decomp[0]}" "$pkg"
# the decompressors may complain about the 4-byte size trailer: judge by the result instead
if [ "${decomp[0]}" = gzip ]; then
    "${decomp[@]}" <"$work/payload" >"$tmp/vmlinux" 2>/dev/null || true
else
    truncate -s $((plen - 4)) "$work/payload"
    "${decomp[@]}" <"$work/payload" >"$tmp/vmlinux" 2>/dev/null || true
fi
[ "$(od -An -tx1 -N4 "$tmp/vmlinux" | tr -d ' \n')" = "7f454c46" ] ||
    die "decompressing the kernel with ${decomp[0]} did not give an ELF vmlinux"
[ "$(stat -c %s "$tmp/vmlinux")" -eq "$want_size" ] ||
    die "vmlinux is $(stat -c %s "$tmp/vmlinux") bytes, the kernel image says $want_size"
rm -f "$work/payload"

# --- kernel modules with their dependencies (the package has no modules.dep) ---
step "resolving kernel modules"
moddir=$(find "$work/kernel/lib/modules" "$work/kernel/usr/lib/modules" -mindepth 1 -maxdepth 1 \
    -type d -print -quit 2>/dev/null || true)
[ -n "$moddir" ] || die "$kpkg has no lib/modules/<version>"
declare -A modpath=() builtin=() seen=()
while IFS= read -r f; do
    name=$(basename "$f")
    name=${name%%.ko*}
    modpath[${name//-/_}]=$f
done < <(find "$moddir" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
if [ -f "$moddir/modules.builtin" ]; then
    while IFS= read -r f; do
        name=$(basename "$f")
        name=${name%%.ko*}
        builtin[${name//-/_}]=1
    done <"$moddir/modules.builtin"
fi
order=()
resolve() {
    local m=${1//-/_} d deps
    [ -n "${seen[$m]:-}" ] && return 0
    seen[$m]=1
    [ -n "${builtin[$m]:-}" ] && return 0
    [ -n "${modpath[$m]:-}" ] || die "kernel module '$m' is not in $kpkg"
    deps=$(modinfo -F depends "${modpath[$m]}") || die "modinfo failed on ${modpath[$m]}"
    for d in ${deps//,/ }; do
        resolve "$d"
    done
    order+=("$m")
}
for m in $EARLY_MODULES; do resolve "$m"; done
early=("${order[@]}")
order=()
for m in $LATE_MODULES; do resolve "$m"; done
late=("${order[@]}")
order=()
for m in $FS_MODULES; do resolve "$m"; done
for m in $FS_OPTIONAL_MODULES; do
    [ -n "${modpath[${m//-/_}]:-}${builtin[${m//-/_}]:-}" ] && resolve "$m"
done
fsmods=("${order[@]}")

# --- the initramfs tree ---
step "assembling the initramfs"
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,lib/modules}
chmod 1777 "$root/tmp"
install -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
# applet links made here rather than by `busybox --install` at every boot
while IFS= read -r applet; do
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done < <("$root/bin/busybox" --list-full)
# test the link itself: -e would follow it to the host's /bin/busybox, which a machine without
# Debian's busybox package does not have
[ -L "$root/bin/sh" ] || [ -f "$root/bin/sh" ] || die "busybox has no sh applet"
install -m 0755 "$agent" "$root/sbin/vmctl-agent"
for m in "${early[@]}" "${late[@]}" "${fsmods[@]}"; do
    f=${modpath[$m]}
    case $f in
    *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
    *.ko.xz) need xz xz-utils && xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) need zstd zstd && zstd -qdc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$f" >"$root/lib/modules/$m.ko" ;;
    esac
done
printf '%s\n' "${early[@]}" >"$root/lib/modules/early"
printf '%s\n' "${late[@]}" >"$root/lib/modules/late"
printf '%s\n' "${fsmods[@]}" >"$root/lib/modules/fs"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf 'vmctl\n' >"$root/etc/hostname"
# login shells (`vmctl shell`, the console): the metadata env the agent wrote, a prompt
cat >"$root/etc/profile" <<'EOF'
[ -r /run/vmctl/env ] && . /run/vmctl/env
PS1='\u@\h:\w\$ '
EOF
cat >"$root/init" <<'EOF'
#!/bin/sh
# vmctl default guest: mount, load the modules the agent's port needs, run the agent (restarted
# whenever it dies: a killed agent must not take the VM's exec channel with it).
# Every fork costs ~10 ms under TCG: only what the agent needs runs before it.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# the VM's name as hostname: vmctl.hostname=NAME on the kernel command line (builtins only);
# --net tap: vmctl.net=ADDR/LEN,GATEWAY[,DNS] (Debian kernels lack CONFIG_IP_PNP: ip= does nothing)
h= n= fs= mnts= && read -r cmdline </proc/cmdline && set -f && for w in $cmdline; do
    case $w in vmctl.hostname=?*) h=${w#vmctl.hostname=} ;; vmctl.net=?*) n=${w#vmctl.net=} ;;
    vmctl.fs=?*) fs=${w#vmctl.fs=} ;; vmctl.mounts=?*) mnts=${w#vmctl.mounts=} ;; esac
done && set +f && export VMCTL_NET="$n"
[ -n "$h" ] && echo "$h" >/etc/hostname || read -r h </etc/hostname
echo "$h" >/proc/sys/kernel/hostname
while read -r m; do insmod "/lib/modules/$m.ko"; done </lib/modules/early
# host directories before the agent (a command it runs finds them mounted):
# vmctl.fs=virtiofs|9p vmctl.mounts=TAG:DST:ro|rw,... (vmctl create --mount)
if [ -n "$mnts" ]; then
    while read -r m; do insmod "/lib/modules/$m.ko" 2>/dev/null; done </lib/modules/fs
    set -f; IFS=,
    for e in $mnts; do
        t=${e%%:*} r=${e#*:}; d=${r%:*} o=${r##*:}
        [ "$fs" = 9p ] && o=trans=virtio,version=9p2000.L,msize=262144,$o
        mkdir -p "$d"; i=0
        # the device may still be probing: retry for up to 5 s
        until mount -t "$fs" -o "$o" "$t" "$d" 2>/dev/null; do
            i=$((i + 1)); [ $i -ge 50 ] && { echo "vmctl: cannot mount $fs $t on $d" >&2; break; }
            sleep 0.1
        done
    done
    unset IFS; set +f
fi
# the rest (ptys, loopback, disk/network/vsock modules) at low priority while the agent starts
sh -c 'renice -n 19 $$; mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts
    mount -t tmpfs -o mode=1777 tmpfs /dev/shm; ip link set lo up
    while read -r m; do insmod "/lib/modules/$m.ko"
        # a NIC is there only with --net user (the fixed addresses of QEMU user networking) or
        # --net tap (the address vmctl leased: vmctl.net=ADDR/LEN,GATEWAY[,DNS])
        if [ -z "$up" ] && [ -e /sys/class/net/eth0 ]; then up=1
            a=10.0.2.15/24 g=10.0.2.2 d=10.0.2.3
            if [ -n "$VMCTL_NET" ]; then a=${VMCTL_NET%%,*} r=${VMCTL_NET#*,}
                g=${r%%,*} d=${r#*,}; [ "$d" = "$r" ] && d=
            fi
            ip addr add "$a" dev eth0; ip link set eth0 up; ip route add default via "$g"
            [ -n "$d" ] && echo "nameserver $d" >/etc/resolv.conf
        fi
    done </lib/modules/late' >/dev/null 2>&1 &
# a shell on the serial console (ttyS0, `vmctl console NAME`), its controlling terminal, again
# whenever it exits; a second after the agent's start, so as not to compete with it
(sleep 1; while :; do setsid cttyhack sh -l; sleep 0.5; done) </dev/null >/dev/null 2>&1 &
while :; do
    /sbin/vmctl-agent --init
    echo "vmctl-agent exited (status $?); restarting it" >&2
    sleep 0.2
done
EOF
chmod 0755 "$root/init"

(cd "$root" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
    >"$work/initrd.cpio"
if [ "$COMPRESSION" = gzip ]; then
    gzip -n -9 <"$work/initrd.cpio" >"$tmp/initrd.img"
else
    mv "$work/initrd.cpio" "$tmp/initrd.img"
fi

printf '%s\n' "$manifest" >"$tmp/manifest"

# --- into place: OUTDIR is replaced by a rename (the old one moved aside first) ---
step "installing into $out"
sync -f "$tmp" 2>/dev/null || true
if [ -e "$out" ]; then
    mv -T "$out" "$out.old.$$"
fi
mv -T "$tmp" "$out"
rm -rf "$out.old.$$"
step "done: $kpkg $kver, busybox $bver"
