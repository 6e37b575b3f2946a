#!/bin/bash
# SSH against real OpenSSH inside the Debian 12 test image (guest/build-debian-image.sh, cached in
# ~/.cache/vmctl/debian12): the VM's own key reaches the guest through cloud-init; exec over SSH
# (exit codes, stderr, a large output with checksum, stdin), `vmctl ssh` through the system ssh,
# exec falling back to SSH when the agent is stopped, a regenerated guest host key refused, and
# the timeout while sshd is stopped. Slow (boots a disk image under TCG).
source "$(dirname "$0")/lib.sh"
for t in qemu-system-x86_64 debootstrap mkfs.ext4 sfdisk grub-mkimage ssh; do
  command -v $t >/dev/null || skip "$t is not installed"
done
[ "$(id -u)" -eq 0 ] || skip "debootstrap needs root"
agent=${VMCTL_AGENT:-$(dirname "$VMCTL")/../agent/vmctl-agent}
[ -x "$agent" ] || skip "vmctl-agent not found next to vmctl ($agent)"
cache=${VMCTL_DEBIAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmctl/debian12}
out=$cache/out
exec 9>"${cache%/*}/.debian12.lock" 2>/dev/null || { mkdir -p "${cache%/*}"; exec 9>"${cache%/*}/.debian12.lock"; }
flock 9
bash "$(dirname "$0")/../../guest/build-debian-image.sh" "$out" "$agent" "$cache" >/dev/null ||
  { echo "FAIL: building the Debian test image"; exit 1; }
flock -u 9

export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-ssh-guest.XXXXXX)
trap '"$VMCTL" destroy --force sg >/dev/null 2>&1; rm -rf "$VMCTL_HOME"' EXIT

vm image import "$out/debian12.raw" --name debian12 >/dev/null || fail "import"
vm create sg --image debian12 --memory 1024 --env SG_ENV=from-create >/dev/null &&
  ok "create (no --ssh-key: the VM's own key)" || fail "create"
vm start sg --wait --timeout 600 >/dev/null || { fail "boot"; finish; }
sshp=$(vm status --json sg | jq -r '.ports[] | select(.guest == 22) | .host')
[ -n "$sshp" ] && ok "SSH forward on 127.0.0.1:$sshp" || fail "no SSH forward"

# exit codes and streams over SSH
vm exec sg --via ssh -- true; expect_eq "exit 0 over ssh" $? 0
vm exec sg --via ssh -- sh -c 'exit 42'; expect_eq "exit 42 over ssh" $? 42
out=$(vm exec sg --via ssh -- sh -c 'echo out; echo err >&2' 2>"$VMCTL_HOME/err")
expect_eq "stdout over ssh" "$out" out
expect_eq "stderr over ssh" "$(cat "$VMCTL_HOME/err")" err
expect_eq "user is vmctl" "$(vm exec sg --via ssh -- id -un)" vmctl
expect_eq "stdin over ssh" "$(printf 'abc' | vm exec sg --via ssh -i -- tr a-z A-Z)" ABC
vm exec sg --via ssh -- sh -c 'kill -TERM $$'; expect_eq "signal over ssh: 128+15" $? 143
# create --env and the statuses of commands that cannot run, as through the agent (issue 17)
expect_eq "create --env over ssh" "$(vm exec sg --via ssh -- sh -c 'echo $SG_ENV')" from-create
expect_eq "exec --env wins over ssh" \
  "$(vm exec sg --via ssh --env SG_ENV=mine -- sh -c 'echo $SG_ENV')" mine
expect_eq "create --env through the agent" "$(vm exec sg --via agent -- sh -c 'echo $SG_ENV')" \
  from-create
vm exec sg --via ssh -- no-such-command 2>/dev/null; expect_eq "missing command over ssh: 127" $? 127
vm exec sg --via ssh -- /etc/hostname 2>/dev/null; expect_eq "not executable over ssh: 126" $? 126
# SIGINT to vmctl reaches the command as an SSH "signal" request (sshd honours it for non-root
# users only: the guest's user is vmctl)
: >"$VMCTL_HOME/sig.out"
"$VMCTL" exec sg --via ssh -- sh -c "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done" \
  >"$VMCTL_HOME/sig.out" 2>&1 &
spid=$!
for _ in $(seq 300); do grep -q ready "$VMCTL_HOME/sig.out" && break; sleep 0.1; done
kill -INT $spid
for _ in $(seq 300); do kill -0 $spid 2>/dev/null || break; sleep 0.1; done
kill -9 $spid 2>/dev/null
wait $spid; expect_eq "SIGINT forwarded over ssh: exit status" $? 7
grep -q got-int "$VMCTL_HOME/sig.out" && ok "SIGINT seen by the command over ssh" ||
  fail "SIGINT over ssh: $(cat "$VMCTL_HOME/sig.out")"
# 32 MiB from the guest: the checksum of what arrived equals the guest's own
vm exec sg --via ssh -- sh -c 'head -c 33554432 /dev/urandom > /tmp/big' || fail "make big"
got=$(vm exec sg --via ssh -- cat /tmp/big | sha256sum | cut -d' ' -f1)
want=$(vm exec sg --via ssh -- sha256sum /tmp/big | cut -d' ' -f1)
[ -n "$want" ] && expect_eq "32 MiB over ssh, checksum" "$got" "$want" || fail "no checksum"
expect_eq "host key pinned in the VM's known_hosts" \
  "$(grep -c "^\[127.0.0.1\]:$sshp " "$VMCTL_HOME/vms/sg/known_hosts")" 1

# the system ssh with the VM's key and known_hosts
expect_eq "vmctl ssh -- CMD" "$(vm ssh sg -- echo via-openssh-client)" via-openssh-client

# auto: the agent stopped, exec goes over SSH
# (stopped over SSH: an exec through the agent that stops the agent never sees its end)
vm exec sg --via ssh -- sudo systemctl stop vmctl-agent >/dev/null 2>&1
expect_eq "exec falls back to ssh without the agent" "$(vm exec sg -- hostname)" sg
vm exec sg --via ssh -- sudo systemctl start vmctl-agent

# a regenerated host key is refused (by libssh and by the system ssh)
vm exec sg --via ssh -- sudo sh -c 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && systemctl restart ssh'
expect_code "changed host key refused" vm_manager::ssh::failed exec sg --via ssh -- true
expect_eq "step hostkey" "$(jq -r .error.details.step <<<"$LAST_JSON")" hostkey
vm ssh sg -- true 2>/dev/null; [ $? -ne 0 ] && ok "vmctl ssh refuses too" || fail "vmctl ssh accepted a changed key"

# sshd stopped: timeout (operation ssh) within the deadline
rm "$VMCTL_HOME/vms/sg/known_hosts"
vm exec sg --via ssh -- true && ok "re-pinned after removing known_hosts" || fail "re-pin"
vm exec sg --via agent -- sh -c 'systemctl stop ssh.socket ssh.service 2>/dev/null; systemctl stop ssh'
t0=$SECONDS
expect_code "timeout while sshd is stopped" vm_manager::timeout ssh sg --timeout 5 -- true
expect_eq "operation ssh" "$(jq -r .error.details.operation <<<"$LAST_JSON")" ssh
[ $((SECONDS - t0)) -lt 30 ] && ok "bounded wait" || fail "took $((SECONDS - t0)) s"
finish
