#!/bin/bash
# The jail (docs/isolation.md), read from /proc of the real QEMU process under TCG: its uid (not
# 0), Seccomp 2, NoNewPrivs 1, no capabilities, its root (not the host's), its own mnt/pid/ipc/uts
# namespaces, its cgroup (vmctl/NAME-HASH with the VM's limits); the VM directory and sockets
# only for root and the VM's uid; a guest past its memory ceiling is contained (QEMU OOM-killed in
# its cgroup, the VM crashed with a note saying so, the host and the other VM untouched); a CPU
# quota caps a busy guest (host CPU time of two busy guests over one window, with and without a
# quota: a ratio); --no-jail gives uid 0 and no sandbox; a full uid range is jailer::failed
# naming the step; destroy leaves no cgroup directory. One booted VM is shared by the cases.
. "$(dirname "$0")/lib.sh"
need_guest
[ "$(id -u)" = 0 ] || skip "the jail needs root (vmctl runs unconfined as a user)"
command -v setpriv >/dev/null || skip "setpriv (package util-linux) is not installed"
setup_home

CG=/sys/fs/cgroup
if [ "$(stat -f -c %T $CG)" = cgroup2fs ]; then V2=1; else V2=0; fi
# the VM's cgroup directory for controller $2 (v1: cpu, memory, pids; v2: all in one)
cgdir() { local rel; rel=$(vm status --json "$1" | jq -r .jail.cgroup)
  if [ "$V2" = 1 ]; then echo "$CG/$rel"; else echo "$CG/$2/$rel"; fi; }
pid_of() { vm status --json "$1" | jq -r .pid; }
field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cputicks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

{ vm create jv && vm start jv --wait; } >/dev/null 2>&1 || fail "create jv"
P=$(pid_of jv)
[ -n "$P" ] && [ "$P" != null ] || { fail "jv has no pid"; finish; }

# --- the process, from /proc ---
uid=$(field "$P" Uid)
suid=$(vm status --json jv | jq -r .jail.uid)
[ "$uid" != 0 ] && [ "$uid" = "$suid" ] && ok "QEMU runs as the VM's uid $uid (store: $suid)" ||
  fail "QEMU uid $uid, store uid $suid"
expect_eq "Seccomp" "$(field "$P" Seccomp)" 2
expect_eq "NoNewPrivs" "$(field "$P" NoNewPrivs)" 1
expect_eq "CapEff" "$(field "$P" CapEff)" 0000000000000000
expect_eq "CapBnd" "$(field "$P" CapBnd)" 0000000000000000
[ "$(stat -L -c %i /proc/$P/root)" != "$(stat -L -c %i /)" ] && [ ! -e "/proc/$P/root/etc/passwd" ] &&
  ok "its root is not the host's (no /etc/passwd there)" || fail "QEMU's root is the host's"
[ -e "/proc/$P/root/usr/bin/qemu-system-x86_64" ] && ok "QEMU's binary is in its root" ||
  fail "no QEMU binary in its root"
touch "/proc/$P/root/usr/x" 2>/dev/null && fail "its /usr is writable" || ok "its /usr is read-only"
for ns in mnt pid ipc uts; do
  [ "$(readlink /proc/$P/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ] && ok "own $ns namespace" ||
    fail "$ns namespace is the host's"
done
grep -q "/vmctl/jv-" /proc/$P/cgroup && ok "in cgroup $(grep -m1 -o '/vmctl/jv-[0-9a-f]*' /proc/$P/cgroup)" ||
  fail "not in a vmctl cgroup: $(cat /proc/$P/cgroup)"
js=$(vm status --json jv | jq -c .jail)
[ "$(jq -r '.jailed and .sandbox == "on"' <<<"$js")" = true ] && ok "status --json shows the jail: $js" ||
  fail "status --json jail: $js"
if [ "$V2" = 1 ]; then lim=$(cat "$(cgdir jv memory)/memory.max"); pmax=$(cat "$(cgdir jv pids)/pids.max")
else lim=$(cat "$(cgdir jv memory)/memory.limit_in_bytes"); pmax=$(cat "$(cgdir jv pids)/pids.max"); fi
[ "$lim" -gt $((256 << 20)) ] && [ "$lim" = "$(jq -r .memory_limit <<<"$js")" ] &&
  ok "memory ceiling $lim above the guest's 256 MiB" || fail "memory ceiling '$lim'"
expect_eq "pids ceiling" "$pmax" 512
expect_eq "status: cgroup version, every limit enforced" "$(jq -c '[.cgroup_version, .unenforced, .pids_limit]' <<<"$js")" \
  "[$((V2 ? 2 : 1)),[],512]"
# systemd's hybrid layout (v1 controllers, cgroup2 at unified/ with none of them): v1's limits
if [ "$V2" = 0 ] && [ "$(stat -f -c %T $CG/unified 2>/dev/null)" = cgroup2fs ]; then
  grep -q "^0::/.*vmctl" /proc/$P/cgroup && fail "hybrid: QEMU moved in the unified hierarchy" ||
    ok "hybrid: the limits are v1's, the unified hierarchy untouched ($(grep ^0:: /proc/$P/cgroup))"
fi
# stats reads the same group: its memory, tasks and ceilings
st=$(vm stats --json --no-guest jv 2>/dev/null | jq -c '.[0].cgroup')
echo "stats .cgroup: $st"
expect_eq "stats: the cgroup's version and ceilings" "$(jq -c '[.available, .version, .memory_limit_bytes, .tasks_limit]' <<<"$st")" \
  "[true,$((V2 ? 2 : 1)),$lim,512]"
[ "$(jq -r '.memory_bytes > 0 and .tasks > 1 and .cpu_seconds > 0 and .oom_kills == 0' <<<"$st")" = true ] &&
  ok "stats: memory $(jq -r .memory_bytes <<<"$st"), tasks $(jq -r .tasks <<<"$st"), cpu $(jq -r .cpu_seconds <<<"$st") s" ||
  fail "stats cgroup: $st"

# --- who can read what ---
D=$(vm status --json jv | jq -r .dir)
expect_eq "vm directory owner and mode" "$(stat -c '%u %a' "$D")" "$uid 700"
for sock in agent.sock qmp.sock console.sock; do
  expect_eq "$sock owner and mode" "$(stat -c '%u %a' "$D/$sock")" "$uid 600"
done
setpriv --reuid=65534 --regid=65534 --clear-groups python3 -c \
  'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' "$D/qmp.sock" 2>/dev/null &&
  fail "another user connects to the QMP socket" || ok "another user cannot connect to the QMP socket"
# the seccomp groups the issue asks denied are on QEMU's command line (Seccomp: 2 says a filter)
tr '\0' '\n' <"/proc/$P/cmdline" | grep -A1 -x -- -sandbox | tail -1 |
  grep -qx "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny" &&
  ok "QEMU runs with -sandbox on,obsolete/elevateprivileges/spawn/resourcecontrol denied" ||
  fail "QEMU's -sandbox: $(tr '\0' ' ' <"/proc/$P/cmdline" | grep -o -- '-sandbox [^ ]*')"
[ ! -e "$D/id_ed25519" ] || expect_eq "the ssh key stays root's" "$(stat -c '%u %a' "$D/id_ed25519")" "0 600"
setpriv --reuid=65534 --regid=65534 --clear-groups cat "$D/vm.json" >/dev/null 2>&1 &&
  fail "another user reads the vm directory" || ok "another user cannot read the vm directory"
setpriv --reuid="$((uid + 1))" --regid="$((uid + 1))" --clear-groups ls "$D" >/dev/null 2>&1 &&
  fail "the next VM's uid reads this VM's directory" || ok "another VM's uid cannot enter it"

# --- the guest still does everything under the jail ---
expect_eq "exec" "$(timeout 60 "$VMCTL" exec jv -- hostname 2>&1)" jv
echo hello >"$VMCTL_HOME/f"
vm cp "$VMCTL_HOME/f" jv:/tmp/f >/dev/null 2>&1 && expect_eq "cp" "$(timeout 60 "$VMCTL" exec jv -- cat /tmp/f)" hello ||
  fail "cp into the jailed VM"

# --- a full uid range: jailer::failed naming the step ---
vm create jfull >/dev/null 2>&1
VMCTL_JAIL_UID_BASE=$uid VMCTL_JAIL_UID_COUNT=1 expect_code "a full uid range" \
  vm_manager::jailer::failed start jfull
expect_eq "the error names the step" "$(jq -r ".error.details.step // empty" <<<"$LAST_JSON")" \
  "uid allocation"
vm destroy jfull >/dev/null 2>&1

# --- --no-jail ---
vm create jn --no-jail --start >/dev/null 2>&1 || fail "create --no-jail"
N=$(pid_of jn)
expect_eq "--no-jail: uid" "$(field "$N" Uid)" 0
expect_eq "--no-jail: no seccomp" "$(field "$N" Seccomp)" 0
expect_eq "--no-jail: status" "$(vm status --json jn | jq -c '[.jail.enabled, .jail.jailed, .jail.sandbox]')" \
  '[false,false,"off"]'
expect_eq "--no-jail: no cgroup in stats, a reason" \
  "$(vm stats --json --no-guest jn 2>/dev/null | jq -c '.[0] | [.cgroup.available, .cgroup.reason, (.errors | length)]')" \
  '[false,"the vm runs without the jail (--no-jail)",0]'
vm destroy --force jn >/dev/null 2>&1

# --- a CPU quota caps a busy guest: both busy over one window, host CPU time compared ---
{ vm create jc --cpu-quota 0.1 && vm start jc --wait; } >/dev/null 2>&1 || fail "create --cpu-quota"
C=$(pid_of jc)
if [ "$V2" = 1 ]; then q=$(cat "$(cgdir jc cpu)/cpu.max"); expect_eq "cpu.max" "$q" "10000 100000"
else expect_eq "cpu quota" "$(cat "$(cgdir jc cpu)/cpu.cfs_quota_us")" 10000; fi
for n in jv jc; do
  timeout 20 "$VMCTL" exec $n -- sh -c 'i=0; while [ $i -lt 100000000 ]; do i=$((i+1)); done' \
    >/dev/null 2>&1 &
done
sleep 3 # both loops running
a0=$(cputicks "$P") b0=$(cputicks "$C")
sleep 8
a1=$(cputicks "$P") b1=$(cputicks "$C")
free=$((a1 - a0)) capped=$((b1 - b0))
echo "cpu ticks over one window: free $free, quota 0.1: $capped"
# the capped one gets at most about its quota of the window (8 s = 800 ticks at 100 Hz: 80),
# and clearly less than the free one
[ "$capped" -gt 0 ] && [ $((capped * 2)) -lt "$free" ] && ok "the quota caps the busy guest ($capped vs $free ticks)" ||
  fail "quota: $capped ticks with 0.1, $free without"
vm kill jc >/dev/null 2>&1
vm kill jv >/dev/null 2>&1
wait

# --- past the memory ceiling: QEMU OOM-killed in its cgroup, the other VM untouched ---
vm start jv --wait >/dev/null 2>&1 || fail "restart jv"
P=$(pid_of jv)
vm start jc >/dev/null 2>&1
C=$(pid_of jc)
M=$(cgdir jv memory)
if [ "$V2" = 1 ]; then use=$(cat "$M/memory.current"); echo $((use + (24 << 20))) >"$M/memory.max"
else use=$(cat "$M/memory.usage_in_bytes"); echo $((use + (24 << 20))) >"$M/memory.limit_in_bytes"
  [ -e "$M/memory.memsw.limit_in_bytes" ] && echo $((use + (24 << 20))) >"$M/memory.memsw.limit_in_bytes"; fi
timeout 60 "$VMCTL" exec jv -- dd if=/dev/zero of=/big bs=1M count=90 >/dev/null 2>&1
for _ in $(seq 100); do [ "$(state_of jv)" = crashed ] && break; sleep 0.2; done
expect_eq "past its ceiling the VM is OOM-killed" "$(state_of jv)" crashed
vm status --json jv | jq -r .crash_note | grep -q "out of memory" && ok "the crash note says out of memory" ||
  fail "crash note: $(vm status --json jv | jq -r .crash_note | head -3)"
[ "$(state_of jc)" = running ] && kill -0 "$C" && ok "the other VM is untouched" || fail "the other VM died too"
ls -d $CG/*/vmctl/jv-* $CG/vmctl/jv-* 2>/dev/null | grep -q . && fail "jv's cgroup is left after the crash" ||
  ok "the crashed VM's cgroup is removed"

# --- vhost-vsock through a descriptor: this QEMU takes vhostfd=N and uses the descriptor it
# inherits instead of opening /dev/vhost-vsock (which a jailed QEMU cannot). With no vhost-vsock
# on this host, fd 7 on /dev/null: QEMU fails on the vhost ioctl on it, not on opening the device
out=$(timeout 20 qemu-system-x86_64 -machine microvm -accel tcg -display none -nodefaults \
  -device vhost-vsock-device,guest-cid=3,vhostfd=7 7</dev/null 2>&1)
grep -q "vhost_set_owner failed\|Inappropriate ioctl" <<<"$out" && ! grep -q "failed to open vhost device" <<<"$out" &&
  ok "QEMU uses the vhostfd it is given (on /dev/null: $(head -c 120 <<<"$out"))" ||
  fail "QEMU with vhostfd=7: $out"

# --- doctor says what is in force ---
doc=$(vm --json doctor 2>/dev/null)
expect_eq "doctor: jail on" "$(jq -r '.[] | select(.name == "jail") | .status' <<<"$doc")" ok
jq -r '.[] | select(.name == "limits") | .summary' <<<"$doc" | grep -q "cgroup v[12].*cpu quota yes, memory ceiling yes, pids yes" &&
  ok "doctor: limits $(jq -r '.[] | select(.name == "limits") | .summary' <<<"$doc")" ||
  fail "doctor limits: $(jq -c '.[] | select(.name == "limits")' <<<"$doc")"
expect_eq "doctor with VMCTL_NO_JAIL: warns" "$(VMCTL_NO_JAIL=1 "$VMCTL" --json doctor 2>/dev/null | jq -r '.[] | select(.name == "jail") | .status')" warn

# --- nothing left behind ---
for n in jv jc; do vm destroy --force $n >/dev/null 2>&1; done
left=$(ls -d $CG/*/vmctl/j[vc]-* $CG/vmctl/j[vc]-* $CG/vmctl.slice/j[vc]-* 2>/dev/null)
[ -z "$left" ] && ok "destroy leaves no cgroup directory" || fail "left: $left"
finish
