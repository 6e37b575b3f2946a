#!/bin/bash
# The jail under a real systemd (docs/isolation.md, "Under systemd: a transient scope per VM").
# The CI host has no systemd as PID 1, so the test boots one: systemd 252 (the host's
# /lib/systemd/systemd) as PID 1 of a PID, mount, cgroup, UTS and IPC namespace of the test's own
# (`unshare`), with a private /run (its /run/systemd/private is the manager's socket: no
# dbus-daemon), /proc/sys read-only (nothing it sets reaches the host), a fresh mount of each of
# the host's cgroup hierarchies rooted at a group the test makes for it, its console a file, and a
# minimal target of no units. vmctl then runs in that PID namespace (in a scope of that systemd,
# as from a login shell: `systemd-run --scope`), and the test checks:
# - doctor's limits line says a transient scope per VM; vmctl list does not map libsystemd;
# - a started VM's QEMU is in its own unit vmctl-NAME-HASH.scope in vmctl.slice: systemctl
#   --runtime status lists it (active, transient) with the QEMU's pid, /proc/PID/cgroup's lines
#   are the scope's, status --json .jail.cgroup names it;
# - the scope's properties are the VM's limits (Delegate=yes, CPUQuotaPerSecUSec from
#   --cpu-quota, MemoryMax the ceiling status shows, TasksMax 512) and the cgroup files hold them;
#   vmctl stats reads the scope's group;
# - stop and destroy stop the scope (the unit is gone, its cgroups too); a QEMU killed from outside
#   takes its scope with it and the VM is crashed; a start again makes a new scope;
# - a scope of the VM's name left running (a vmctl killed before it stopped it) is replaced by the
#   VM's; a scope systemd refuses (vmctl.slice masked) fails the start with jailer::failed, step
#   "systemd scope", the refusal in the message, no QEMU, no unit and no jail.scope left;
# - where systemd runs (/run/systemd/system) but its manager does not answer, doctor says so and
#   why (the fallback: vmctl's own groups).
# Afterwards the namespace's systemd is killed (SIGKILL: no shutdown, nothing of the host's mounts
# is touched) and the test's cgroups on the host are removed.
. "$(dirname "$0")/lib.sh"
SELF=$(readlink -f "$0")
SD=/lib/systemd/systemd

case "${JAIL_SD_STAGE:-}" in
boot)
  # PID 1 of the new namespaces: mounts of its own, then systemd (exec)
  set -e
  mount --make-rprivate /
  mount -t proc proc /proc
  mount --bind /proc/sys /proc/sys
  mount -o remount,bind,ro /proc/sys
  mount -t tmpfs -o mode=755 tmpfs /run
  mkdir -p /run/systemd/system
  printf '[Unit]\nDescription=vmctl test target\nDefaultDependencies=no\n' \
    >/run/systemd/system/vmctl-test.target
  mount --bind "$JAIL_SD_CONSOLE" /dev/console
  # the host's hierarchies again, each rooted at this cgroup namespace's root (the test's group)
  umount -l /sys/fs/cgroup
  if [ "$JAIL_SD_LAYOUT" = v2 ]; then
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
  else
    mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
    while read -r target fstype opts; do
      mkdir -p "$target"
      opts=${opts#rw,}
      if [ "$fstype" = cgroup2 ]; then mount -t cgroup2 cgroup2 "$target"
      else mount -t cgroup -o "$opts" cgroup "$target"; fi
    done <"$JAIL_SD_MOUNTS"
  fi
  export container=vmctl-test
  exec $SD --system --unit=vmctl-test.target --log-target=console --log-level=info
  ;;
run) ;; # the checks, below
*)
  # --- the host side: make the namespaces and boot systemd in them ---
  need_guest
  [ "$(id -u)" = 0 ] || skip "a systemd as PID 1 of a namespace needs root"
  for p in unshare nsenter findmnt systemctl systemd-run jq; do
    command -v $p >/dev/null || skip "$p is not installed"
  done
  [ -x $SD ] || skip --lacks systemd "systemd is not installed ($SD)"
  grep -qw cgroup /proc/filesystems || skip "the kernel has no cgroups"
  if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then layout=v2; else layout=v1; fi
  work=$(mktemp -d "/tmp/vmctl-$TEST_NAME.XXXXXX")
  G=vmctl-test-systemd.$$
  # the test's group on each hierarchy, under the test's own cgroup there
  hier=() # "mountpoint path-of-our-group"
  if [ $layout = v2 ]; then
    own=$(sed -n 's/^0:://p' /proc/self/cgroup)
    hier+=("/sys/fs/cgroup${own%/}/$G")
  else
    findmnt -rn -t cgroup,cgroup2 -o TARGET,FSTYPE,FS-OPTIONS | grep '^/sys/fs/cgroup/' >"$work/mounts"
    while read -r target fstype opts; do
      if [ "$fstype" = cgroup2 ]; then key=0; own=$(sed -n 's/^0:://p' /proc/self/cgroup)
      else
        key=${opts#rw,}
        own=$(awk -F: -v k="$key" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == k || $2 == k) { print $3; exit } }' /proc/self/cgroup)
      fi
      hier+=("$target${own%/}/$G")
    done <"$work/mounts"
  fi
  sdpid=
  host_cleanup() {
    [ -n "$sdpid" ] && kill -KILL "$sdpid" 2>/dev/null
    [ -n "${unshare_pid:-}" ] && wait "$unshare_pid" 2>/dev/null
    local d deadline=$((SECONDS + 10))
    for d in "${hier[@]}"; do
      while [ -d "$d" ]; do
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        [ -d "$d" ] && { [ $SECONDS -ge $deadline ] && break; sleep 0.1; }
      done
      [ -d "$d" ] && echo "FAIL: left behind: $d"
    done
    rm -rf "$work"
  }
  trap host_cleanup EXIT
  for d in "${hier[@]}"; do
    mkdir -p "$d" || { echo "FAIL: cannot make the test's cgroup $d"; exit 1; }
    case $d in /sys/fs/cgroup/cpuset/*)
      cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
      cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems" ;;
    esac
  done
  : >"$work/console"
  # the booter joins the test's groups (from a subshell: the test itself stays where it is), then
  # the namespaces: systemd sees the group as its root
  (
    for d in "${hier[@]}"; do echo "$BASHPID" >"$d/cgroup.procs" || exit 1; done
    JAIL_SD_STAGE=boot JAIL_SD_LAYOUT=$layout JAIL_SD_MOUNTS=$work/mounts \
      JAIL_SD_CONSOLE=$work/console exec unshare --pid --fork --mount --cgroup --uts --ipc \
      --propagation private bash "$SELF"
  ) </dev/null >"$work/boot.log" 2>&1 &
  unshare_pid=$!
  # systemd: the child of unshare, running, its manager answering
  deadline=$((SECONDS + 60))
  state=
  while [ $SECONDS -lt $deadline ]; do
    sdpid=$(pgrep -P "$unshare_pid" -x systemd | head -1)
    if [ -n "$sdpid" ]; then
      state=$(nsenter -t "$sdpid" -m -p -- systemctl is-system-running 2>/dev/null)
      case $state in running | degraded) break ;; esac
    fi
    kill -0 "$unshare_pid" 2>/dev/null || break
    sleep 0.2
  done
  case $state in
  running | degraded) echo "ok: systemd $($SD --version | head -1 | cut -d' ' -f2) is PID 1 of the test's namespace (host pid $sdpid, $state)" ;;
  *)
    echo "FAIL: no systemd came up in the namespace (state '$state')"
    tail -20 "$work/boot.log" "$work/console"
    exit 1 ;;
  esac

  # --- the fallback: /run/systemd/system but no manager answering (no systemd: a namespace) ---
  fb=$(unshare -m --propagation private bash -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system &&
    exec "$0" --json doctor' "$VMCTL" 2>/dev/null | jq -r '.[] | select(.name == "limits") | .summary')
  echo "fallback doctor: $fb"
  fbfails=0
  if grep -q "no systemd scope: systemd's manager does not answer on /run/systemd/private" <<<"$fb"; then
    echo "ok: doctor, with systemd's directory but no manager: says so and keeps vmctl's groups"
  else
    echo "FAIL: doctor without a manager: $fb"
    fbfails=1
  fi

  # --- the checks, in the PID namespace, in a scope of that systemd ---
  # (first into the namespace's root group on every hierarchy, as a process of that systemd's is:
  # nsenter keeps the host's cgroups, which are outside the namespace's root)
  nsenter -t "$sdpid" -a -- sh -c 'for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/*/cgroup.procs; do
      echo $$ >"$f" 2>/dev/null; done; exec "$@"' sh \
    systemd-run --scope --quiet --unit="vmctl-test-run-$$.scope" \
    env JAIL_SD_STAGE=run VMCTL="$VMCTL" VMCTL_TEST_IMAGES="$VMCTL_TEST_IMAGES" CI="${CI:-}" \
    bash "$SELF"
  rc=$?
  if [ $rc = 0 ] && [ $fbfails != 0 ]; then rc=1; fi
  [ $rc = 0 ] || { echo "--- systemd's log:"; tail -30 "$work/console"; }
  exit $rc
  ;;
esac

# ===== in the namespace: systemd is PID 1 =====
[ "$(cat /proc/1/comm)" = systemd ] || { echo "FAIL: PID 1 is $(cat /proc/1/comm), not systemd"; exit 1; }
setup_home
CG=/sys/fs/cgroup
if [ "$(stat -f -c %T $CG)" = cgroup2fs ]; then v2=true; else v2=false; fi
pid_of() { vm status --json "$1" | jq -r .pid; }
prop() { systemctl show -p "$2" --value "$1"; }

doc=$(vm --json doctor 2>/dev/null | jq -r '.[] | select(.name == "limits") | .summary')
echo "doctor: $doc"
grep -q "a transient scope per vm, vmctl.slice/vmctl-NAME-HASH.scope" <<<"$doc" &&
  ok "doctor: a transient scope per VM" || fail "doctor: $doc"
LD_DEBUG=libs vm list 2>&1 | grep -q 'libsystemd\.so' && fail "vmctl list maps libsystemd" ||
  ok "vmctl list does not map libsystemd"

out=$(vm create sd1 --cpu-quota 0.5 2>&1 && vm start sd1 --wait 2>&1) || { fail "start sd1: $out"; finish; }
P=$(pid_of sd1)
js=$(vm status --json sd1 | jq -c .jail)
echo "status .jail: $js"
rel=$(jq -r .cgroup <<<"$js")
unit=${rel##*/}
[[ "$rel" == vmctl.slice/vmctl-sd1-*.scope ]] && ok "status: its cgroup is its scope ($rel)" ||
  fail "status .jail.cgroup '$rel'"
st=$(systemctl --runtime --no-pager status "$unit" 2>&1)
echo "$st" | head -8 | cut -c1-150
grep -q "Active: active (running)" <<<"$st" && ok "systemctl: $unit is active" || fail "systemctl status: $st"
grep -q "Transient: yes" <<<"$st" && ok "systemctl: transient" || fail "not transient"
grep -qE "[└├]─$P .*qemu-system" <<<"$st" && ok "systemctl status lists QEMU ($P) in the scope" ||
  fail "QEMU $P not in systemctl status"
expect_eq "Slice" "$(prop "$unit" Slice)" vmctl.slice
expect_eq "Delegate" "$(prop "$unit" Delegate)" yes
expect_eq "ControlGroup" "$(prop "$unit" ControlGroup)" "/$rel"
# /proc/PID/cgroup: the scope on the hierarchies that hold its limits
if $v2; then
  expect_eq "QEMU's 0:: line is the scope" "$(sed -n 's/^0:://p' /proc/$P/cgroup)" "/$rel"
  D=$CG/$rel
else
  for c in memory pids cpu; do
    expect_eq "QEMU's $c line is the scope" "$(awk -F: -v c=$c '$2 == c { print $3 }' /proc/$P/cgroup)" "/$rel"
  done
fi
grep -q "/$rel\$" <(sed -n 's/^[0-9]*:name=systemd://p; s/^0:://p' /proc/$P/cgroup) &&
  ok "systemd's own tracking hierarchy has QEMU in the scope" || fail "$(cat /proc/$P/cgroup)"
# the limits: the scope's properties, and the files
mem=$(jq -r .memory_limit <<<"$js")
expect_eq "MemoryMax is the ceiling status shows" "$(prop "$unit" MemoryMax)" "$mem"
expect_eq "TasksMax" "$(prop "$unit" TasksMax)" 512
expect_eq "CPUQuotaPerSecUSec (--cpu-quota 0.5)" "$(prop "$unit" CPUQuotaPerSecUSec)" 500ms
expect_eq "status cpu_quota" "$(jq -r .cpu_quota <<<"$js")" 0.5
if $v2; then
  expect_eq "memory.max" "$(cat $D/memory.max)" "$mem"
  expect_eq "pids.max" "$(cat $D/pids.max)" 512
  expect_eq "cpu.max" "$(cat $D/cpu.max)" "50000 100000"
else
  expect_eq "memory.limit_in_bytes" "$(cat $CG/memory/$rel/memory.limit_in_bytes)" "$mem"
  expect_eq "pids.max" "$(cat $CG/pids/$rel/pids.max)" 512
  expect_eq "cpu quota/period" "$(cat $CG/cpu/$rel/cpu.cfs_quota_us)/$(cat $CG/cpu/$rel/cpu.cfs_period_us)" 50000/100000
  grep -qx "$P" $CG/memory/$rel/cgroup.procs && ok "memory cgroup.procs has QEMU" || fail "memory procs"
fi
expect_eq "unenforced" "$(jq -c .unenforced <<<"$js")" '[]'
sj=$(vm stats --json sd1)
expect_eq "stats: cgroup read, no error" "$(jq -c '.[0] | [.cgroup.available, (.errors | length), .cgroup.tasks_limit]' <<<"$sj")" '[true,0,512]'
awk -v s="$(jq -r '.[0].cgroup.cpu_seconds' <<<"$sj")" 'BEGIN { exit !(s > 0) }' &&
  ok "stats: the scope's CPU time $(jq -r '.[0].cgroup.cpu_seconds' <<<"$sj") s" || fail "stats: $sj"

# stop: the scope goes
vm stop sd1 >/dev/null 2>&1 || fail "stop sd1"
expect_eq "after stop: the unit is gone" "$(prop "$unit" LoadState)/$(prop "$unit" ActiveState)" not-found/inactive
$v2 && [ -e "$CG/$rel" ] && fail "after stop: $CG/$rel is left"
! $v2 && ls -d $CG/*/$rel 2>/dev/null && fail "after stop: its cgroups are left"
# start again: a new scope; a QEMU killed from outside takes it with it
out=$(vm start sd1 --wait 2>&1) || fail "start again: $out"
P2=$(pid_of sd1)
expect_eq "started again: active" "$(prop "$unit" ActiveState)" active
kill -KILL "$P2"
deadline=$((SECONDS + 30))
while [ $SECONDS -lt $deadline ] && [ "$(state_of sd1)" != crashed ]; do sleep 0.2; done
expect_eq "QEMU killed: the VM is crashed" "$(state_of sd1)" crashed
deadline=$((SECONDS + 10))
while [ $SECONDS -lt $deadline ] && [ "$(prop "$unit" LoadState)" != not-found ]; do sleep 0.2; done
expect_eq "QEMU killed: its scope is gone" "$(prop "$unit" LoadState)" not-found
# destroy of a running VM stops its scope
out=$(vm start sd1 --wait 2>&1) || fail "start a third time: $out"
P3=$(pid_of sd1)
expect_eq "third start: active" "$(prop "$unit" ActiveState)" active
vm destroy --force sd1 >/dev/null 2>&1 || fail "destroy sd1"
expect_eq "after destroy: the unit is gone" "$(prop "$unit" LoadState)" not-found
kill -0 "$P3" 2>/dev/null && fail "QEMU $P3 outlived destroy"
$v2 && [ -e "$CG/$rel" ] && fail "after destroy: $CG/$rel is left"
! $v2 && ls -d $CG/*/$rel 2>/dev/null && fail "after destroy: its cgroups are left"
# a scope of the VM's name left running (a vmctl killed before it could stop it) is replaced
hash=${unit#vmctl-sd1-}
systemd-run --scope --quiet --unit="vmctl-sd2-$hash" sleep 300 &
deadline=$((SECONDS + 10))
while [ $SECONDS -lt $deadline ] && [ "$(prop "vmctl-sd2-$hash" ActiveState)" != active ]; do sleep 0.1; done
out=$(vm create sd2 2>&1 && vm start sd2 --wait 2>&1) && ok "start with a stale scope of its name" ||
  fail "start with a stale scope: $out"
expect_eq "the scope is the VM's now" "$(prop "vmctl-sd2-$hash" Description)" "vmctl vm sd2 ($VMCTL_HOME/vms/sd2)"
grep -qx "$(pid_of sd2)" "$CG/$($v2 || echo memory/)vmctl.slice/vmctl-sd2-$hash/cgroup.procs" &&
  ok "QEMU is in it" || fail "QEMU not in vmctl-sd2-$hash"
wait
vm destroy --force sd2 >/dev/null 2>&1 || fail "destroy sd2"
# systemd refuses the scope (its slice masked): jailer::failed, step "systemd scope", nothing left
ln -s /dev/null /run/systemd/system/vmctl.slice
systemctl daemon-reload
vm create sd3 >/dev/null 2>&1 || fail "create sd3"
expect_code "a refused scope" vm_manager::jailer::failed start sd3
echo "refused: $(jq -c '.error | {message, step: .details.step}' <<<"$LAST_JSON")"
expect_eq "the error names the step" "$(jq -r '.error.details.step // empty' <<<"$LAST_JSON")" "systemd scope"
expect_eq "no QEMU of sd3" "$(pgrep -f "$VMCTL_HOME/vms/sd3/" | wc -l)" 0
[ -e "$VMCTL_HOME/vms/sd3/jail.scope" ] && fail "jail.scope left" || ok "no jail.scope left"
expect_eq "no scope of sd3" "$(prop "vmctl-sd3-$hash" LoadState)" not-found
rm -f /run/systemd/system/vmctl.slice
systemctl daemon-reload
out=$(vm start sd3 --wait 2>&1) && ok "unmasked: sd3 starts" || fail "unmasked start: $out"
vm destroy --force sd3 >/dev/null 2>&1 || fail "destroy sd3"
left=$(systemctl list-units --all --no-legend --plain 'vmctl-*.scope' | grep -v "vmctl-test-run" | awk '{print $1}')
expect_eq "no vmctl scope left" "$left" ""
finish
