#!/bin/bash
# The jail's cgroup v2 path (docs/isolation.md, "Limits"), for real on a v1 host: the test runs
# itself again in a mount namespace of its own (`unshare -m`, every mount private: the host's
# /sys/fs/cgroup is untouched) with a fresh cgroup2 mount over /sys/fs/cgroup. The hierarchy is
# the host's one cgroup2 hierarchy, which gets only the controllers v1 does not hold (on the
# project's CI: hugetlb only), so the test checks what vmctl does with each controller present or
# absent, whichever this host has:
# - a VM's QEMU is in its own v2 cgroup: /proc/PID/cgroup's 0:: line is /vmctl/NAME-HASH, the
#   one status --json names (.jail.cgroup, .jail.cgroup_version 2), and its cgroup.procs has it;
# - each limit whose controller is there is written (memory.max = .jail.memory_limit, pids.max
#   512, cpu.max for --cpu-quota); each one whose controller is not is reported: null in status,
#   named in .jail.unenforced, a notice at start, "no" in doctor's limits line; --cpu-quota
#   without a cpu controller is jailer::failed (step "cgroup limit"), never a VM without it;
# - vmctl stats reads the v2 files: .cgroup.version 2, its CPU time from cpu.stat (there without
#   the cpu controller) close to the process's own, memory from memory.current where the memory
#   controller is (else null), the Prometheus vmctl_vm_cgroup_cpu_seconds_total;
# - under systemd (faked in the namespace: /run/systemd/system) the VMs' cgroups go under the
#   cgroup vmctl runs in, not the root: a delegated "unit" (trusted.delegate xattr, as systemd
#   251+ marks Delegate=yes) gets NAME's group at UNIT/vmctl/NAME-HASH, doctor says delegated;
#   a vmctl running elsewhere (another cgroup) destroys it there (the recorded directory); a
#   cgroup that is not delegated is said so in doctor; a delegated unit with a controller to hand
#   down (hugetlb here, through a test hook) gets vmctl moved into its leaf vmctl/supervise
#   (v2's "no internal processes" rule) and the controller enabled down to the VM's group;
# - destroy removes the VM's cgroup directory (and vmctl/ once empty).
. "$(dirname "$0")/lib.sh"
need_guest
[ "$(id -u)" = 0 ] || skip "the jail needs root (vmctl runs unconfined as a user)"
command -v unshare >/dev/null || skip "unshare (package util-linux) is not installed"
grep -qw cgroup2 /proc/filesystems || skip --lacks cgroup2 "the kernel has no cgroup2"

if [ "${JAIL_V2_INNER:-}" != 1 ]; then
  # a private mount namespace: the cgroup2 mount (and the fake /run/systemd below) are its own
  JAIL_V2_INNER=1 exec unshare -m --propagation private bash "$0" "$@"
fi

CG=/sys/fs/cgroup
mount -t cgroup2 none $CG || { echo "FAIL: cannot mount cgroup2 on $CG in the namespace"; exit 1; }
[ "$(stat -f -c %T $CG)" = cgroup2fs ] || { echo "FAIL: $CG is not cgroup2 after the mount"; exit 1; }
setup_home
ctl=$(cat $CG/cgroup.controllers)
echo "cgroup2 controllers here: '${ctl}'"
has() { grep -qw "$1" <<<"$ctl"; }
pid_of() { vm status --json "$1" | jq -r .pid; }
cg0() { sed -n 's/^0:://p' "/proc/$1/cgroup"; }
limits_line() { vm --json doctor 2>/dev/null | jq -r '.[] | select(.name == "limits") | .summary'; }

# --- a VM at the root of the hierarchy (no systemd) ---
out=$(vm create v2a 2>&1 && vm start v2a --wait 2>&1) || { fail "start v2a: $out"; finish; }
P=$(pid_of v2a)
js=$(vm status --json v2a | jq -c .jail)
echo "status .jail: $js"
rel=$(jq -r .cgroup <<<"$js")
[[ "$rel" == vmctl/v2a-* ]] && expect_eq "QEMU's 0:: line is its own v2 cgroup" "$(cg0 "$P")" "/$rel" ||
  fail "status .jail.cgroup '$rel' (0:: line $(cg0 "$P"))"
expect_eq "status: cgroup version" "$(jq -r .cgroup_version <<<"$js")" 2
D=$CG/$rel
grep -qx "$P" "$D/cgroup.procs" && ok "its cgroup.procs has QEMU ($P)" || fail "$D/cgroup.procs: $(cat "$D/cgroup.procs")"
expect_eq "jailed" "$(jq -r '.jailed and .sandbox == "on"' <<<"$js")" true
doc=$(limits_line)
echo "doctor: $doc"
if has memory; then
  expect_eq "memory.max is the ceiling status shows" "$(cat "$D/memory.max")" "$(jq -r .memory_limit <<<"$js")"
  grep -q "memory ceiling yes" <<<"$doc" && ok "doctor: memory ceiling yes" || fail "doctor: $doc"
else
  [ ! -e "$D/memory.max" ] && expect_eq "no memory controller: memory_limit null, named unenforced" \
    "$(jq -c '[.memory_limit, (.unenforced | index("memory") != null)]' <<<"$js")" '[null,true]'
  grep -q "memory ceiling no" <<<"$doc" && ok "doctor: memory ceiling no" || fail "doctor: $doc"
  grep -q "runs without its memory" <<<"$out" && ok "start says it runs without its memory ceiling" ||
    fail "no notice at start: $out"
  vm status v2a | grep -q "^jail: .*; not enforced here: .*memory ceiling" &&
    ok "status: $(vm status v2a | grep '^jail:')" || fail "status text: $(vm status v2a | grep '^jail')"
fi
if has pids; then
  expect_eq "pids.max" "$(cat "$D/pids.max")" 512
  expect_eq "status pids_limit" "$(jq -r .pids_limit <<<"$js")" 512
else
  expect_eq "no pids controller: pids_limit null, named unenforced" \
    "$(jq -c '[.pids_limit, (.unenforced | index("pids") != null)]' <<<"$js")" '[null,true]'
  grep -q "pids no" <<<"$doc" && ok "doctor: pids no" || fail "doctor: $doc"
fi
expect_eq "nothing of it in the host's v1 memory hierarchy" "$(grep -c "vmctl/v2a-" /proc/$P/cgroup)" 1

# --- --cpu-quota: written where the cpu controller is, else jailer::failed ---
vm create v2q --cpu-quota 0.5 >/dev/null 2>&1 || fail "create v2q"
if has cpu; then
  vm start v2q >/dev/null 2>&1 || fail "start v2q"
  expect_eq "cpu.max" "$(cat "$CG/$(vm status --json v2q | jq -r .jail.cgroup)/cpu.max")" "50000 100000"
else
  expect_code "--cpu-quota without a cpu controller" vm_manager::jailer::failed start v2q
  expect_eq "the error names the step" "$(jq -r '.error.details.step // empty' <<<"$LAST_JSON")" "cgroup limit"
  ls -d $CG/vmctl/v2q-* 2>/dev/null | grep -q . && fail "the failed start left its cgroup" ||
    ok "the failed start left no cgroup"
fi
vm destroy --force v2q >/dev/null 2>&1

# --- stats reads the v2 files ---
st=$(vm stats --json --no-guest v2a 2>/dev/null | jq -c '.[0]')
echo "stats .cgroup: $(jq -c .cgroup <<<"$st")"
expect_eq "stats: the cgroup source, v2" "$(jq -c '[.cgroup.available, .cgroup.version]' <<<"$st")" '[true,2]'
file_us=$(awk '$1 == "usage_usec" { print $2 }' "$D/cpu.stat")
awk -v c="$(jq -r .cgroup.cpu_seconds <<<"$st")" -v p="$(jq -r .cpu.seconds <<<"$st")" -v f="$file_us" \
  'BEGIN { exit !(c > 0 && c <= f / 1e6 && c >= p * 0.8 - 0.2 && c <= p * 1.25 + 0.5) }' &&
  ok "stats: cgroup CPU time $(jq -r .cgroup.cpu_seconds <<<"$st") s from cpu.stat ($file_us us after), the process's $(jq -r .cpu.seconds <<<"$st") s" ||
  fail "cgroup cpu $(jq -r .cgroup.cpu_seconds <<<"$st"), process $(jq -r .cpu.seconds <<<"$st"), file $file_us"
if has memory; then
  m=$(jq -r .cgroup.memory_bytes <<<"$st")
  [ "$m" -gt 0 ] && ok "stats: memory.current $m" || fail "stats memory_bytes $m"
else
  expect_eq "stats: no memory controller, no memory numbers" \
    "$(jq -c '[.cgroup.memory_bytes, .cgroup.memory_limit_bytes, .cgroup.oom_kills]' <<<"$st")" '[null,null,null]'
fi
vm stats --prometheus v2a 2>/dev/null | grep -q '^vmctl_vm_cgroup_cpu_seconds_total{vm="v2a"} [0-9.]*$' &&
  ok "prometheus: vmctl_vm_cgroup_cpu_seconds_total" || fail "no cgroup cpu in the prometheus output"

# --- destroy removes the cgroup ---
vm destroy --force v2a >/dev/null 2>&1
[ ! -e "$D" ] && ok "destroy removed $rel" || fail "$D is left"

# --- under systemd: under the cgroup vmctl runs in, delegated or not ---
mkdir -p /run/systemd && mount -t tmpfs -o size=1m,mode=0755 tmpfs /run/systemd && mkdir /run/systemd/system ||
  fail "cannot fake /run/systemd/system in the namespace"
U=vmctl-test-$$.scope
mkdir "$CG/$U" && python3 -c "import os, sys; os.setxattr(sys.argv[1], 'trusted.delegate', b'1')" "$CG/$U" ||
  fail "cannot make the delegated test unit $U"
# in the unit: a subshell moves itself there first (what systemd-run --scope -p Delegate=yes does)
in_unit() { bash -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' _ "$CG/$1" "${@:2}"; }
out=$(in_unit "$U" "$VMCTL" create v2s --start 2>&1) || fail "start v2s in $U: $out"
S=$(pid_of v2s)
srel=$(vm status --json v2s | jq -r .jail.cgroup)
[[ "$srel" == "$U/vmctl/v2s-"* ]] && expect_eq "under systemd: QEMU under the unit vmctl runs in" "$(cg0 "$S")" "/$srel" ||
  fail "status .jail.cgroup '$srel', 0:: $(cg0 "$S")"
ls -d $CG/vmctl/v2s-* 2>/dev/null | grep -q . && fail "a group at the root under systemd" ||
  ok "nothing at the root of the hierarchy"
d=$(in_unit "$U" "$VMCTL" --json doctor 2>/dev/null | jq -r '.[] | select(.name == "limits") | .summary')
grep -q "under $U/vmctl (delegated)" <<<"$d" && ok "doctor in the unit: $d" || fail "doctor in the unit: $d"
N=vmctl-test-$$-plain.scope
mkdir "$CG/$N"
d=$(in_unit "$N" "$VMCTL" --json doctor 2>/dev/null | jq -c '.[] | select(.name == "limits")')
grep -q "under $N/vmctl (not delegated to vmctl)" <<<"$d" && ok "doctor in a cgroup not delegated: $(jq -r .summary <<<"$d")" ||
  fail "doctor not delegated: $d"
# from the root cgroup (another place than the one that made it): the recorded group goes
vm destroy --force v2s >/dev/null 2>&1
[ ! -e "$CG/$srel" ] && ok "destroy from another cgroup removed $srel" || fail "$CG/$srel is left"
# vmctl's own leaf (where a controller made it move) goes with the last VM, or with the unit
for _ in $(seq 50); do
  rmdir "$CG/$U/vmctl/supervise" "$CG/$U/vmctl" "$CG/$U" "$CG/$N" 2>/dev/null
  [ -e "$CG/$U" ] || [ -e "$CG/$N" ] || break; sleep 0.1
done
[ ! -e "$CG/$U" ] && [ ! -e "$CG/$N" ] && ok "the test units are empty and gone" ||
  fail "the test units are left: $(cat "$CG/$U/cgroup.procs" "$CG/$N/cgroup.procs" 2>&1)"

# --- a delegated unit with a controller to hand down: v2's "no internal processes" rule keeps a
# group with processes from enabling controllers for its children, so vmctl moves itself (and
# the supervisor it spawns) into the leaf UNIT/vmctl/supervise and enables them. With none of
# cpu/memory/pids/io here, the test hook VMCTL_TEST_CGROUP_CONTROLLER names hugetlb (the root's
# subtree_control gets +hugetlb for the test, and loses it after when it did not have it).
X=""; hook=()
for c in memory pids cpu io; do has $c && { X=$c; break; }; done
if [ -z "$X" ] && has hugetlb; then X=hugetlb; hook=(env VMCTL_TEST_CGROUP_CONTROLLER=hugetlb); fi
if [ -z "$X" ]; then
  skip_section "no v2 controller at all here to hand down (the internal-processes path)"
else
  had=0; grep -qw "$X" $CG/cgroup.subtree_control && had=1
  [ "$had" = 1 ] || echo "+$X" >$CG/cgroup.subtree_control || fail "cannot enable $X at the root"
  U2=vmctl-test-$$-ctl.scope
  mkdir "$CG/$U2" && python3 -c "import os, sys; os.setxattr(sys.argv[1], 'trusted.delegate', b'1')" "$CG/$U2"
  out=$(in_unit "$U2" "${hook[@]}" "$VMCTL" create v2h --start 2>&1) || fail "start v2h in $U2: $out"
  Q=$(pid_of v2h)
  hrel=$(vm status --json v2h | jq -r .jail.cgroup)
  expect_eq "QEMU in the unit's vmctl/ group" "$(cg0 "$Q")" "/$U2/vmctl/${hrel##*/}"
  sup=$(awk '$1 == "PPid:" { print $2 }' /proc/$Q/status)
  expect_eq "its supervisor in the leaf vmctl/supervise" "$(cg0 "$sup")" "/$U2/vmctl/supervise"
  expect_eq "the unit has no process of its own" "$(cat "$CG/$U2/cgroup.procs")" ""
  grep -qw "$X" "$CG/$U2/cgroup.subtree_control" && grep -qw "$X" "$CG/$U2/vmctl/cgroup.subtree_control" &&
    ok "the unit and vmctl/ hand $X down" ||
    fail "subtree_control: unit '$(cat "$CG/$U2/cgroup.subtree_control")', vmctl/ '$(cat "$CG/$U2/vmctl/cgroup.subtree_control")'"
  grep -qw "$X" "$CG/$hrel/cgroup.controllers" && ok "the VM's group has $X" ||
    fail "the VM's group controllers: '$(cat "$CG/$hrel/cgroup.controllers")'"
  vm destroy --force v2h >/dev/null 2>&1
  [ ! -e "$CG/$hrel" ] && ok "destroy removed $hrel" || fail "$CG/$hrel is left"
  for _ in $(seq 50); do
    rmdir "$CG/$U2/vmctl/supervise" "$CG/$U2/vmctl" "$CG/$U2" 2>/dev/null; [ -e "$CG/$U2" ] || break; sleep 0.1
  done
  [ ! -e "$CG/$U2" ] && ok "the unit is empty and gone" || fail "$U2 is left: $(find "$CG/$U2" -name cgroup.procs -exec cat {} +)"
  [ "$had" = 1 ] || echo "-$X" >$CG/cgroup.subtree_control || fail "cannot disable $X at the root again"
fi
umount /run/systemd

left=$(ls -d $CG/vmctl/v2* 2>/dev/null)
[ -z "$left" ] && ok "no VM cgroup left" || fail "left: $left"
finish
