#!/bin/bash
# SSH versus the agent on the same VM (the Debian 12 test image: cloud-init, sshd and
# vmctl-agent), same run:
#   - time from `vmctl start` to SSH ready (`vmctl ssh NAME -- true` succeeds: sshd up, the VM's
#     key accepted, host key pinned) and to agent ready (`vmctl exec --via agent NAME -- true`);
#   - warm `vmctl exec NAME -- true` over SSH and over the agent, N runs each, p50 and ratio.
# Usage: bench/ssh-vs-agent.sh [BUILD_DIR] [N]   (default build-ssh, 20)
set -euo pipefail
build=${1:-build-ssh}
n=${2:-20}
VMCTL=$(realpath "$build/src/cli/vmctl")
img=${VMCTL_DEBIAN_IMAGE:-$HOME/.cache/vmctl/debian12/out/debian12.raw}
[ -f "$img" ] || { echo "no Debian test image at $img (run tests/integration/test-image-debian.sh)"; exit 1; }
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-bench-ssh.XXXXXX)
trap '"$VMCTL" destroy --force b >/dev/null 2>&1; rm -rf "$VMCTL_HOME"' EXIT
"$VMCTL" image import "$img" --name debian12 >/dev/null
"$VMCTL" create b --image debian12 --memory 1024 >/dev/null 2>&1

now() { date +%s.%N; }
t0=$(now)
"$VMCTL" start b >/dev/null 2>&1
( until "$VMCTL" exec --via agent b -- true >/dev/null 2>&1; do sleep 0.2; done; now >"$VMCTL_HOME/agent.t" ) &
( "$VMCTL" ssh b --timeout 900 -- true >/dev/null 2>&1; now >"$VMCTL_HOME/ssh.t" ) &
wait
ta=$(echo "$(cat "$VMCTL_HOME/agent.t") - $t0" | bc)
ts=$(echo "$(cat "$VMCTL_HOME/ssh.t") - $t0" | bc)

p50() { # VIA: median wall time of n runs of `vmctl exec --via VIA b -- true`, in ms
  for _ in $(seq 1 "$n"); do
    local a b
    a=$(date +%s%N)
    "$VMCTL" exec --via "$1" b -- true
    b=$(date +%s%N)
    echo $(((b - a) / 1000))
  done | sort -n | awk '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; printf "%.1f", m/1000}'
}
"$VMCTL" exec --via ssh b -- true; "$VMCTL" exec --via agent b -- true # warm both
ssh_ms=$(p50 ssh)
agent_ms=$(p50 agent)
echo "start -> agent ready: ${ta} s"
echo "start -> SSH ready:   ${ts} s"
echo "warm exec true, p50 of $n: ssh ${ssh_ms} ms, agent ${agent_ms} ms, ratio ssh/agent $(echo "scale=1; $ssh_ms / $agent_ms" | bc)"
