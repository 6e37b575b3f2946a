#!/bin/bash
# Failure paths: QEMU missing, QEMU killed (crashed), vmctl killed mid-create, bad input.
. "$(dirname "$0")/lib.sh"
need_guest
setup_home

# QEMU binary missing -> spawn_failed with its help; nothing left running, state unchanged
vm create nq >/dev/null || fail "create nq"
out=$(VMCTL_QEMU=/nonexistent/qemu-system-x86_64 "$VMCTL" --json start nq); rc=$?
expect_eq "missing qemu: exit" "$rc" 1
expect_eq "missing qemu: code" "$(jq -r .error.code <<<"$out")" vm_manager::qemu::spawn_failed
jq -r .error.help <<<"$out" | grep -q qemu-system-x86_64 && ok "spawn_failed help names qemu" ||
  fail "spawn_failed help: $(jq -r .error.help <<<"$out")"
expect_eq "missing qemu: still created" "$(state_of nq)" created
# human rendering
VMCTL_QEMU=/nonexistent/qemu-system-x86_64 "$VMCTL" start nq 2>/tmp/$$.err
grep -q 'vm_manager::qemu::spawn_failed' /tmp/$$.err && grep -q 'help:' /tmp/$$.err &&
  ok "rendered with code and help" || fail "rendering: $(cat /tmp/$$.err)"
rm -f /tmp/$$.err

# QEMU killed with SIGKILL -> crashed, with the log tail as a note
vm start nq --wait --timeout 120 || fail "start nq"
pid=$(vm status --json nq | jq -r .pid)
kill -9 "$pid"
# SIGKILL is delivered asynchronously: wait (bounded) until the kernel has made it a zombie or reaped it
for _ in $(seq 200); do
  s=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)
  [ -z "$s" ] || [ "$s" == Z ] && break
  sleep 0.05
done
st=$(vm status --json nq)
expect_eq "killed qemu -> crashed" "$(jq -r .state <<<"$st")" crashed
expect_eq "crashed pid null" "$(jq -r .pid <<<"$st")" null
jq -e '.crash_note | length > 0' <<<"$st" >/dev/null && ok "crash note" || fail "no crash note"
vm start nq --wait --timeout 120 && ok "crashed vm starts again" || fail "restart after crash"
expect_eq "exec after crash+restart" "$(vm exec nq -- echo back)" back
vm destroy --force nq || fail "destroy --force running"

# vmctl killed in the middle of create -> the next command repairs it
VMCTL_TEST_CREATE_DELAY_MS=30000 "$VMCTL" create half >/dev/null 2>&1 &
cpid=$!
for _ in $(seq 100); do
  [ "$(sqlite3 "$VMCTL_HOME/vmctl.db" "select count(*) from vms where name='half'" 2>/dev/null)" == 1 ] && break
  sleep 0.05
done
expect_eq "row present during create" "$(sqlite3 "$VMCTL_HOME/vmctl.db" "select complete from vms where name='half'")" 0
expect_eq "in-progress create hidden from list" "$(vm list --json | jq '[.[] | select(.name=="half")] | length')" 0
kill -9 $cpid; wait $cpid 2>/dev/null
out=$(vm list --json 2>/tmp/$$.err)
expect_eq "abandoned create not listed" "$(jq '[.[] | select(.name=="half")] | length' <<<"$out")" 0
grep -q "interrupted" /tmp/$$.err && ok "repair notice printed" || fail "no repair notice: $(cat /tmp/$$.err)"
rm -f /tmp/$$.err
expect_eq "row removed" "$(sqlite3 "$VMCTL_HOME/vmctl.db" "select count(*) from vms where name='half'")" 0
[ -e "$VMCTL_HOME/vms/half" ] && fail "half-made dir left" || ok "half-made dir removed"
vm create half >/dev/null && ok "name reusable after repair" || fail "create after repair"

# bad input -> config::invalid, nothing created
expect_code "bad name" vm_manager::config::invalid create "-bad"
expect_code "bad name chars" vm_manager::config::invalid create "a/b"
expect_code "too few MiB" vm_manager::config::invalid create m1 --memory 16
expect_code "bad env" vm_manager::config::invalid create m2 --env 1X=2
expect_code "missing kernel file" vm_manager::config::invalid create m3 --kernel /nonexistent
expect_code "propolis" vm_manager::backend::not_available create m4 --backend propolis
n=$(vm list --json | jq '[.[] | select(.name|test("^m[0-9]"))] | length')
expect_eq "nothing created by bad input" "$n" 0
finish
