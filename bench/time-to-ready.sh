#!/bin/bash
# Time to ready: `vmctl run NAME` (create + start + wait until the agent answers) against a
# hand-written qemu-system-x86_64 command line with the same kernel, initrd and devices, timed
# until the same answer (bench/agent-ping). N runs each, interleaved; medians and their ratio.
# Usage: bench/time-to-ready.sh BUILD_DIR [N]
# VMCTL_BENCH_NET=user: both with user networking and one port forward (the default guest's /init
# then configures eth0 in its background part); default none.
set -euo pipefail
build=${1:?build dir}; n=${2:-10}
net=${VMCTL_BENCH_NET:-none}
raw_net=() run_net=()
if [ "$net" = user ]; then
  raw_net=(-netdev user,id=n0,hostfwd=tcp:127.0.0.1:0-:80 -device virtio-net-device,netdev=n0)
  run_net=(--net user --port 0:80)
fi
vmctl=$build/src/cli/vmctl; ping=$build/bench/agent-ping
home=$(mktemp -d /tmp/vmctl-bench.XXXXXX)
trap 'for v in $("$vmctl" --home "$home" list --json | jq -r ".[].name"); do "$vmctl" --home "$home" destroy --force "$v" >/dev/null; done; pkill -9 -f "$home/" || true; rm -rf "$home"' EXIT
"$vmctl" --home "$home" image build-default >/dev/null
img=$home/images/default
# the kernel command line vmctl uses, taken from a created VM
"$vmctl" --home "$home" create probe >/dev/null
cmdline=$("$vmctl" --home "$home" status --json probe | jq -r .cmdline)
"$vmctl" --home "$home" destroy probe >/dev/null

ms() { date +%s%N; }
raw=() mgr=()
for i in $(seq "$n"); do
  d=$home/raw$i; mkdir -p "$d"
  t0=$(ms)
  qemu-system-x86_64 -M microvm -accel tcg -cpu qemu64,+arat -m 256 -smp 1 -nodefaults -no-user-config -display none \
    -kernel "$img/vmlinux" -initrd "$img/initrd.img" -append "$cmdline" \
    -chardev socket,id=con,path="$d/console.sock",server=on,wait=off,logfile="$d/console.log" \
    -serial chardev:con \
    -device virtio-serial-device \
    -chardev socket,id=agent,path="$d/agent.sock",server=on,wait=off \
    -device virtserialport,chardev=agent,name=org.vmctl.agent \
    -qmp unix:"$d/qmp.sock",server=on,wait=off "${raw_net[@]}" -daemonize -pidfile "$d/pid"
  "$ping" "$d/agent.sock" 60
  t1=$(ms)
  kill -9 "$(cat "$d/pid")"
  raw+=($(( (t1 - t0) / 1000000 )))

  t0=$(ms)
  "$vmctl" --home "$home" run "m$i" --timeout 60 "${run_net[@]}" >/dev/null
  t1=$(ms)
  "$vmctl" --home "$home" destroy --force "m$i" >/dev/null
  mgr+=($(( (t1 - t0) / 1000000 )))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mr=$(median "${raw[@]}"); mm=$(median "${mgr[@]}")
echo "raw qemu + agent ping (ms): ${raw[*]}"
echo "vmctl run (ms):             ${mgr[*]}"
echo "median raw ${mr} ms, median vmctl ${mm} ms, ratio $(awk "BEGIN {printf \"%.3f\", $mm/$mr}")"
