#!/bin/bash
# Boot of the Debian test image to ready (vmctl-agent answers), q35 (SeaBIOS -> GRUB -> kernel)
# against microvm with direct kernel boot of the same kernel and initrd, both from a qcow2
# overlay on the same cached image with a cloud-init seed, alternating in the same run. TCG.
#   bench/image-boot.sh [BUILD-DIR] [ROUNDS]
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
vmctl=$PWD/$build/src/cli/vmctl
agent=$PWD/$build/src/agent/vmctl-agent
out=${XDG_CACHE_HOME:-$HOME/.cache}/vmctl/debian12/out
bash "$(dirname "$0")/../guest/build-debian-image.sh" "$out" "$agent" >/dev/null
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/bench-image-boot.XXXXXX)
trap 'for n in $("$vmctl" list --json | jq -r ".[].name"); do "$vmctl" destroy --force "$n" >/dev/null; done; rm -rf "$VMCTL_HOME"' EXIT
"$vmctl" image convert "$out/debian12.raw" "$VMCTL_HOME/deb.qcow2" --format qcow2 >/dev/null
"$vmctl" image import "$VMCTL_HOME/deb.qcow2" --name deb >/dev/null
khz=$(awk -F: '/^cpu MHz/{printf "%d", $2*1000+0.5; exit}' /proc/cpuinfo)
cmdline="root=LABEL=root ro console=ttyS0 net.ifnames=0 quiet tsc_early_khz=$khz"
q=() m=()
boot() { # name create-args...
  local name=$1; shift
  "$vmctl" create "$name" --image deb --memory 1024 --accel tcg "$@" >/dev/null
  local t0 t1
  t0=$(date +%s.%N)
  "$vmctl" start "$name" --wait --timeout 900 >/dev/null
  t1=$(date +%s.%N)
  "$vmctl" destroy --force "$name" >/dev/null
  echo "$t1 - $t0" | bc
}
for i in $(seq "$rounds"); do
  q+=("$(boot q$i)")
  m+=("$(boot m$i --machine microvm --kernel "$out/vmlinuz" --initrd "$out/initrd.img" --cmdline "$cmdline")")
  echo "round $i: q35 ${q[-1]} s, microvm ${m[-1]} s"
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mq=$(med "${q[@]}") mm=$(med "${m[@]}")
echo "q35 (BIOS+GRUB) median $mq s, microvm (direct kernel) median $mm s, ratio $(echo "scale=2; $mq / $mm" | bc)x"
