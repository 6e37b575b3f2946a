#!/bin/bash
# Warm pools (docs/snapshots.md "Warm pool") on real QEMU: `vmctl pool VM/SNAP --size N` keeps N
# hypervisors waiting for the snapshot's state, hidden from `vmctl list` (counted there); a clone
# and `run --from` take one (the clone's hypervisor is the pooled process) and come up with their
# own hostname, MAC and random bytes and the snapshot's files; a background fill replaces what was
# taken; the pool's references keep `snapshot rm` refused; kill -9 of vmctl in the middle of a take
# and of a fill leave nothing the next command does not repair; `pool rm` removes the processes;
# the errors.
source "$(dirname "$0")/lib.sh"
need_guest
setup_home
snap_cleanup() {
  "$VMCTL" pool rm psrc/base >/dev/null 2>&1
  for n in $("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null); do
    "$VMCTL" destroy --force "$n" >/dev/null 2>&1; done
  for s in "psrc base" "plain f"; do "$VMCTL" snapshot rm $s >/dev/null 2>&1; done
  cleanup
}
trap snap_cleanup EXIT
members() { vm pool list --json | jq -r '.[] | select(.vm == "psrc" and .snapshot == "base") | .members[]'; }
ready() { vm pool list --json | jq -r '.[] | select(.vm == "psrc" and .snapshot == "base") | "\(.ready)/\(.size)"'; }
pid_of() { vm status --json "$1" | jq -r .pid; }
wait_ready() { # N: the pool of psrc/base has N of N ready within 60 s
  for _ in $(seq 600); do [ "$(ready)" = "$1/$1" ] && return 0; sleep 0.1; done; return 1
}

# --- a template snapshot (and a full one, which cannot have a pool) ---
vm create psrc --snapshottable --net user >/dev/null && vm start psrc --wait >/dev/null ||
  { fail "create and start psrc"; finish; }
for _ in $(seq 100); do vm exec psrc -- test -e /sys/class/net/eth0 && break; sleep 0.1; done
vm exec psrc -- sh -c 'echo from-snapshot > /root/mark' || fail "write the mark"
vm snapshot create psrc base >/dev/null || { fail "snapshot create"; finish; }
vm create plain >/dev/null && vm start plain --wait >/dev/null && vm snapshot create plain f >/dev/null ||
  fail "a full snapshot of plain"
vm destroy --force plain >/dev/null

expect_code "a pool of a full snapshot" vm_manager::config::invalid pool plain/f --size 1
expect_code "a pool of a missing snapshot" vm_manager::snapshot::not_found pool psrc/nope --size 1
expect_code "a pool past 64" vm_manager::config::invalid pool psrc/base --size 65
out=$(vm --json pool psrc/base 2>/dev/null); rc=$?
expect_eq "pool without --size" "$rc $(jq -r .error.code <<<"$out")" "2 vm_manager::cli::usage"
out=$(vm --json pool srcbase --size 1 2>/dev/null); rc=$?
expect_eq "pool of a malformed snapshot" "$rc $(jq -r .error.code <<<"$out")" "2 vm_manager::cli::usage"

# --- the pool ---
out=$(vm --json pool psrc/base --size 2) || fail "pool psrc/base --size 2: $out"
expect_eq "two ready when pool returns" "$(jq -r '"\(.ready)/\(.size)"' <<<"$out")" "2/2"
expect_eq "list hides the pool's VMs" "$(vm list --json | jq -r '[.[].name] | join(",")')" "psrc"
vm list | grep -q "(and 2 pooled in 1 warm pool" && ok "list counts them" || fail "list does not count the pool: $(vm list)"
pooled_pids=""
for m in $(members); do
  p=$(pid_of "$m"); pooled_pids+=" $p"
  kill -0 "$p" 2>/dev/null && ok "pool process $m runs (pid $p)" || fail "pool process $m is not running"
done
expect_code "snapshot rm while a pool holds it" vm_manager::snapshot::in_use snapshot rm psrc base

# --- clones take from it ---
vm clone psrc base c1 >/dev/null || fail "clone c1"
c1pid=$(pid_of c1)
grep -qw "$c1pid" <<<"$pooled_pids" && ok "c1 runs in a pooled hypervisor (pid $c1pid)" ||
  fail "c1's pid $c1pid is none of the pool's ($pooled_pids)"
expect_eq "c1 is running" "$(state_of c1)" running
expect_eq "c1's hostname" "$(vm exec c1 -- hostname)" c1
expect_eq "c1 has the snapshot's files" "$(vm exec c1 -- cat /root/mark)" from-snapshot
test -d "$VMCTL_HOME/vms/c1" && ok "c1's directory is vms/c1" || fail "no vms/c1"
# its hypervisor's command line names the pool process it was: doctor must not take it for a stray
vm doctor --fix >/dev/null 2>&1
kill -0 "$c1pid" 2>/dev/null && [ "$(state_of c1)" = running ] && ok "doctor --fix leaves c1 running" ||
  fail "doctor --fix killed c1's hypervisor"
wait_ready 2 && ok "the background fill brought the pool back to 2" || fail "pool not refilled: $(ready)"
vm clone psrc base c2 >/dev/null || fail "clone c2"
expect_eq "c2's hostname" "$(vm exec c2 -- hostname)" c2
m1=$(vm exec c1 -- cat /sys/class/net/eth0/address); m2=$(vm exec c2 -- cat /sys/class/net/eth0/address)
[ -n "$m1" ] && [ "$m1" != "$m2" ] && ok "the clones have their own MACs ($m1, $m2)" || fail "MACs '$m1' '$m2'"
r1=$(vm exec c1 -- sh -c 'head -c 16 /dev/urandom | od -An -tx1'); r2=$(vm exec c2 -- sh -c 'head -c 16 /dev/urandom | od -An -tx1')
[ -n "$r1" ] && [ "$r1" != "$r2" ] && ok "the clones read different random bytes" || fail "random bytes '$r1' '$r2'"
out=$(vm run r1 --from psrc/base --rm -- hostname 2>/dev/null)
expect_eq "run --from takes from the pool too" "$out" r1
wait_ready 2 || fail "pool not refilled after run: $(ready)"

# --- a take while a fill launches: the take's own fill waits for that one, then completes ---
# (the hook, inherited by d1's detached fill, holds that fill 3 s inside its launch; d2 takes the
# other ready process meanwhile, and its fill must not give up on the busy lock)
VMCTL_TEST_POOL_FILL_DELAY_MS=3000 "$VMCTL" clone psrc base d1 >/dev/null || fail "clone d1"
sleep 1.5
vm clone psrc base d2 >/dev/null || fail "clone d2"
wait_ready 2 && ok "a take during a fill: the pool comes back to 2" ||
  fail "a take during a fill left the pool at $(ready)"
vm destroy --force d1 >/dev/null; vm destroy --force d2 >/dev/null

# --- kill -9 of vmctl while it takes a process ---
wait_ready 2
before=$(members | sort)
VMCTL_TEST_POOL_TAKE_DELAY_MS=5000 "$VMCTL" clone psrc base k1 >/dev/null 2>&1 &
pid=$!
sleep 1.5
kpid=$(sqlite3 "$VMCTL_HOME/vmctl.db" "SELECT pid FROM vms WHERE name = 'k1'")
kill -9 $pid; wait $pid 2>/dev/null
expect_eq "a killed take leaves no vm" "$(vm list --json | jq '[.[] | select(.name == "k1")] | length')" 0
sleep 0.3
[ -n "$kpid" ] && ! kill -0 "$kpid" 2>/dev/null && ok "its hypervisor (pid $kpid) is gone" ||
  fail "the taken hypervisor '$kpid' still runs"
test ! -e "$VMCTL_HOME/vms/k1" && ok "no directory vms/k1 is left" || fail "vms/k1 left behind"
vm pool fill psrc/base >/dev/null || fail "pool fill"
expect_eq "pool fill brings it back" "$(ready)" 2/2
n=0; for d in "$VMCTL_HOME"/vms/pool-*; do
  name=$(basename "$d"); members | grep -qx "$name" || n=$((n + 1)); done
expect_eq "no pool directory without a member row" "$n" 0
vm clone psrc base k1 >/dev/null && ok "the same name clones after the repair" || fail "clone k1 after the kill"

# --- kill -9 of vmctl while it fills (the new process recorded, its row incomplete) ---
vm pool psrc/base --size 2 >/dev/null
VMCTL_TEST_POOL_FILL_DELAY_MS=5000 "$VMCTL" pool psrc/base --size 3 >/dev/null 2>&1 &
pid=$!
fpid=""
for _ in $(seq 100); do
  fpid=$(sqlite3 "$VMCTL_HOME/vmctl.db" "SELECT pid FROM vms WHERE complete = 0 AND name LIKE 'pool-%' AND pid > 0")
  [ -n "$fpid" ] && break; sleep 0.1
done
kill -9 $pid; wait $pid 2>/dev/null
[ -n "$fpid" ] && kill -0 "$fpid" 2>/dev/null && ok "the killed fill's hypervisor outlived it (pid $fpid)" ||
  fail "no recorded hypervisor of the killed fill ('$fpid')"
vm pool list >/dev/null
sleep 0.3
[ -n "$fpid" ] && ! kill -0 "$fpid" 2>/dev/null && ok "the next pool command killed it" ||
  fail "the killed fill's hypervisor '$fpid' still runs"
expect_eq "no incomplete row left" "$(sqlite3 "$VMCTL_HOME/vmctl.db" "SELECT count(*) FROM vms WHERE complete = 0")" 0
expect_eq "a directory per member, no more" "$(ls -d "$VMCTL_HOME"/vms/pool-* | wc -l)" "$(members | wc -l)"
vm pool fill psrc/base >/dev/null || fail "pool fill after the killed fill"
expect_eq "the pool comes to its size (3) after the repair" "$(ready)" 3/3

# --- pool rm ---
old=$(for m in $(members); do pid_of "$m"; done)
out=$(vm --json pool rm psrc/base) || fail "pool rm: $out"
expect_eq "no pool left" "$(vm pool list --json | jq length)" 0
sleep 0.3
alive=0; for p in $old; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
expect_eq "the pool's hypervisors are gone" "$alive" 0
expect_eq "no pool directory left" "$(ls -d "$VMCTL_HOME"/vms/pool-* 2>/dev/null | wc -l)" 0
expect_eq "the users' VMs remain" "$(vm list --json | jq -r '[.[].name] | sort | join(",")')" "c1,c2,k1,psrc"
for n in c1 c2 k1; do vm destroy --force "$n" >/dev/null; done
vm snapshot rm psrc base >/dev/null && ok "snapshot rm once the pool and clones are gone" || fail "snapshot rm"
expect_eq "no RAM file of a pool process left" "$(ls /dev/shm/vmctl-"$(id -u)"/ 2>/dev/null | grep -c '^pool-')" 0
finish
