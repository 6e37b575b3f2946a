#!/bin/bash
# The full lifecycle on the default guest with one booted VM, plus the state machine's refusals.
. "$(dirname "$0")/lib.sh"
need_guest
setup_home

vm create life --vcpus 1 --memory 256 >/dev/null || { fail "create"; finish; }
expect_eq "created state" "$(state_of life)" created
expect_code "duplicate create" vm_manager::vm::already_exists create life
expect_code "pause a created vm" vm_manager::vm::invalid_state pause life
expect_eq "invalid_state from" "$(jq -r .error.details.from <<<"$LAST_JSON")" created
expect_eq "invalid_state to" "$(jq -r .error.details.to <<<"$LAST_JSON")" paused
# "not running" is one error wherever a running VM is needed (agent, SSH): same message, same help
nr='{"message":"vm '"'life'"' is created, not running","help":"Start it with `vmctl start life`.","remediation":"vmctl start life"}'
for cmd in exec ssh; do
  expect_code "$cmd on a created vm" vm_manager::exec::unavailable $cmd life -- true
  expect_eq "$cmd on a created vm: message and help" \
    "$(jq -c '.error | {message, help, remediation: .details.remediation}' <<<"$LAST_JSON")" "$nr"
done
expect_code "unknown vm" vm_manager::vm::not_found status nosuchvm
expect_eq "not_found names the vm" "$(jq -r .error.details.vm <<<"$LAST_JSON")" nosuchvm

vm start life --wait --timeout 120 || fail "start --wait"
st=$(vm status --json life)
expect_eq "running" "$(jq -r .state <<<"$st")" running
pid=$(jq -r .pid <<<"$st")
[ "$pid" != null ] && [ -d "/proc/$pid" ] && ok "pid $pid is live" || fail "pid '$pid' not live"
for f in name state backend machine accel vcpus memory_mib image pid ports dir; do
  jq -e "has(\"$f\")" <<<"$st" >/dev/null && ok "status has $f" || fail "status lacks $f"
done
expect_code "start a running vm" vm_manager::vm::invalid_state start life
expect_eq "from running" "$(jq -r .error.details.from <<<"$LAST_JSON")" running

out=$(vm exec life -- uname -s); rc=$?
expect_eq "exec uname" "$out/$rc" "Linux/0"
vm exec life -- sh -c 'echo to-err >&2; exit 7' 2>/tmp/$$.err >/dev/null; rc=$?
expect_eq "exec exit status" "$rc" 7
expect_eq "exec stderr" "$(cat /tmp/$$.err)" "to-err"; rm -f /tmp/$$.err
out=$(vm exec life --env FOO=bar --cwd /proc -- sh -c 'echo $FOO $(pwd)')
expect_eq "exec env+cwd" "$out" "bar /proc"

vm pause life || fail "pause"
expect_eq "paused" "$(state_of life)" paused
expect_code "exec while paused" vm_manager::exec::unavailable exec life -- true
expect_eq "exec unavailable details" "$(jq -r '.error.details | has("reason") and has("remediation") and has("vm")' <<<"$LAST_JSON")" true
expect_eq "exec while paused: help" "$(jq -r .error.help <<<"$LAST_JSON")" 'Resume it with `vmctl resume life`.'
vm resume life || fail "resume"
expect_eq "resumed" "$(state_of life)" running
expect_eq "exec after resume" "$(vm exec life -- echo hi)" hi

expect_code "destroy running without force" vm_manager::vm::invalid_state destroy life
vm stop life --timeout 20 || fail "stop"
expect_eq "stopped" "$(state_of life)" stopped
[ -d "/proc/$pid" ] && [ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" != Z ] &&
  fail "QEMU $pid still alive after stop" || ok "QEMU gone after stop"
expect_code "stop a stopped vm" vm_manager::vm::invalid_state stop life
expect_code "exec while stopped" vm_manager::exec::unavailable exec life -- true

vm start life --wait --timeout 120 || fail "start again"
expect_eq "exec after restart" "$(vm exec life -- echo again)" again
pid=$(vm status --json life | jq -r .pid)
# kill asks QEMU to quit first (backend_ops.quit) and needs no SIGKILL when it does
vm -v kill life 2>/tmp/$$.kill || fail "kill"
grep -q "QEMU quit when asked" /tmp/$$.kill && ok "kill: QEMU quit when asked" ||
  fail "kill did not ask QEMU to quit: $(cat /tmp/$$.kill)"
grep -q SIGKILL /tmp/$$.kill && fail "kill sent SIGKILL to a QEMU that quit" || ok "kill: no SIGKILL needed"
expect_eq "killed -> stopped" "$(state_of life)" stopped
[ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" == "" ] || [ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" == Z ] &&
  ok "QEMU gone after kill" || fail "QEMU $pid alive after kill"

# a QEMU that cannot answer (stopped) gets SIGKILL after the short quit deadline
vm start life || fail "start for a stopped QEMU"
pid=$(vm status --json life | jq -r .pid)
kill -STOP "$pid"
vm kill life 2>/tmp/$$.kill || fail "kill a stopped QEMU"
grep -q "did not quit within .*SIGKILL" /tmp/$$.kill && ok "kill: SIGKILL after the quit deadline" ||
  fail "kill of a stopped QEMU: $(cat /tmp/$$.kill)"
expect_eq "stopped QEMU killed -> stopped" "$(state_of life)" stopped
[ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" == "" ] || [ "$(awk '{print $3}' /proc/$pid/stat 2>/dev/null)" == Z ] &&
  ok "stopped QEMU gone after kill" || { kill -9 "$pid"; fail "stopped QEMU $pid alive after kill"; }
rm -f /tmp/$$.kill

dir=$(vm status --json life | jq -r .dir)
vm destroy life || fail "destroy"
[ -e "$dir" ] && fail "vm dir left behind" || ok "vm dir removed"
expect_eq "list empty" "$(vm list --json | jq length)" 0
expect_code "status after destroy" vm_manager::vm::not_found status life

# create --wait: created, started and ready in one command (the agent answers at once after it)
expect_code "create --timeout that is not a duration" vm_manager::config::invalid \
  create life2 --wait --timeout soon
expect_eq "... creates nothing" "$(vm list --json | jq length)" 0
vm create life2 --wait --timeout 120 >/dev/null || fail "create --wait"
expect_eq "create --wait: running" "$(state_of life2)" running
expect_eq "create --wait: the agent answers at once" "$(vm exec life2 --timeout 10 -- echo up)" up
vm destroy --force life2 >/dev/null
finish
