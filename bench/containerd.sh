#!/bin/bash
# `ctr run --rm` of `true` through containerd-shim-vmctl-v2 (a VM per container) against runc
# (containerd's own io.containerd.runc.v2) and against `vmctl run --rm -- true` (the same VM
# without containerd), in one run, interleaved, under a private containerd (its own root, state and
# sockets in a temp dir). The rootfs is Debian's static busybox. Prints medians and ratios to runc.
# Usage: bench/containerd.sh BUILD_DIR IMAGES_DIR [RUNS]   (IMAGES_DIR holds default/, as
# VMCTL_TEST_IMAGES)
set -euo pipefail
build=$(realpath "${1:?build dir}")
images=$(realpath "${2:?images dir (with default/)}")
runs=${3:-10}
vmctl=$build/src/cli/vmctl
shim_dir=$build/src/shim
[ -x "$shim_dir/containerd-shim-vmctl-v2" ] || { echo "no shim in $shim_dir"; exit 1; }
T=$(mktemp -d /tmp/vmctl-bench-ctd.XXXXXX)
export VMCTL_HOME=$T/home
mkdir -p "$VMCTL_HOME"
ln -s "$images" "$VMCTL_HOME/images"
ctd=
trap '[ -n "$ctd" ] && kill $ctd; wait 2>/dev/null; rm -rf "$T"' EXIT
deb=$(ls "${XDG_CACHE_HOME:-$HOME/.cache}"/vmctl/debs/busybox-static_*.deb | tail -1)
R=$T/rootfs
mkdir -p "$R"/{bin,proc,sys,dev,tmp,etc}
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$T" ./bin/busybox
cp "$T/bin/busybox" "$R/bin/"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
cat >"$T/config.toml" <<EOF
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/c.sock"
[ttrpc]
  address = "$T/c.sock.ttrpc"
EOF
PATH=$shim_dir:$PATH containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
ctd=$!
for _ in $(seq 100); do ctr --address "$T/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
now() { date +%s.%N; }
declare -a t_runc t_shim t_vmctl
for i in $(seq "$runs"); do
  a=$(now)
  ctr --address "$T/c.sock" run --rm --rootfs "$R" "runc$i" /bin/true </dev/null
  b=$(now)
  ctr --address "$T/c.sock" run --rm --runtime io.containerd.vmctl.v2 --rootfs "$R" "vm$i" /bin/true </dev/null
  c=$(now)
  "$vmctl" run "plain$i" --rm -- true </dev/null >/dev/null 2>&1
  d=$(now)
  t_runc+=("$(echo "$b - $a" | bc)")
  t_shim+=("$(echo "$c - $b" | bc)")
  t_vmctl+=("$(echo "$d - $c" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mr=$(median "${t_runc[@]}")
ms=$(median "${t_shim[@]}")
mv=$(median "${t_vmctl[@]}")
echo "runs: $runs, load: $(cut -d' ' -f1 /proc/loadavg), /dev/kvm: $([ -w /dev/kvm ] && echo yes || echo "no (TCG)")"
printf '| runtime | median | ratio to runc |\n|---|---|---|\n'
printf '| runc (io.containerd.runc.v2) | %.3f s | 1.00x |\n' "$mr"
printf '| vmctl shim (io.containerd.vmctl.v2) | %.3f s | %.1fx |\n' "$ms" "$(echo "$ms / $mr" | bc -l)"
printf '| `vmctl run --rm -- true` | %.3f s | %.1fx |\n' "$mv" "$(echo "$mv / $mr" | bc -l)"
printf 'shim / vmctl run --rm: %.2fx\n' "$(echo "$ms / $mv" | bc -l)"
