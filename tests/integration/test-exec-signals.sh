#!/bin/bash
# `vmctl exec` on one booted default guest, the parts that involve the host's signals and a guest
# agent that stops answering: SIGINT/SIGTERM/SIGHUP sent to vmctl reach the command's process
# group (the command sees them, vmctl exits with the command's status), the third SIGINT kills a
# command that ignores it; an agent that is stopped mid-exec (SIGSTOP) makes the exec fail with
# exec::unavailable after VMCTL_AGENT_SILENCE_SECONDS instead of hanging, and the VM is usable
# again once the agent runs; a paused VM is not mistaken for a dead agent.
. "$(dirname "$0")/lib.sh"
need_guest
setup_home
tmp=$VMCTL_HOME/t
mkdir -p "$tmp"

vm run sg >/dev/null 2>&1 || { fail "run sg"; finish; }

# Start `vmctl exec sg -- CMD` in the background with output in $tmp/out; wait (bounded) until
# the guest command printed "ready".
start_exec() {
  : >"$tmp/out"
  "$VMCTL" exec sg -- "$@" >"$tmp/out" 2>&1 &
  EXEC_PID=$!
  for _ in $(seq 300); do
    grep -q ready "$tmp/out" && return 0
    sleep 0.1
  done
  fail "the command did not print ready: $(cat "$tmp/out")"
  return 1
}

# wait_exit PID: its exit status, or 255 after 60 s (then it is killed).
wait_exit() {
  for _ in $(seq 600); do
    kill -0 "$1" 2>/dev/null || { wait "$1"; return $?; }
    sleep 0.1
  done
  kill -9 "$1"; wait "$1"; return 255
}

# --- the guest CPU has ARAT, so an idle guest stops its tick: once the kernel moved from the
# boot-time tsc-early clocksource to tsc (seconds after boot; later on a loaded host; until then it
# ticks periodically whatever the CPU), it takes far fewer than HZ=250 timer interrupts a second
expect_eq "guest CPU has arat" "$(vm exec sg -- sh -c 'grep -c -w arat /proc/cpuinfo')" 1
rate=$(vm exec sg -- sh -c 'cs=/sys/devices/system/clocksource/clocksource0/current_clocksource
  i=0; while [ "$(cat $cs)" != tsc ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  a=$(grep LOC: /proc/interrupts | awk "{print \$2}"); sleep 4
  b=$(grep LOC: /proc/interrupts | awk "{print \$2}"); echo $(( (b - a) / 4 )) $(cat $cs)')
if [ "${rate#* }" = tsc ]; then
  [ "${rate%% *}" -lt 125 ] && ok "idle guest: ${rate%% *} timer interrupts/s (tick stopped)" ||
    fail "idle guest on tsc takes ${rate%% *} timer interrupts/s (periodic tick)"
else
  skip_section "the idle timer rate: the guest did not switch to the tsc clocksource within 30 s ($rate)"
fi

# --- signals sent to vmctl reach the command
for sig in INT TERM HUP; do
  if start_exec sh -c "trap 'echo got-$sig; exit 7' $sig; echo ready; while :; do sleep 0.1; done"; then
    kill -"$sig" $EXEC_PID
    wait_exit $EXEC_PID; rc=$?
    expect_eq "SIG$sig forwarded: exit status" "$rc" 7
    grep -q "got-$sig" "$tmp/out" && ok "SIG$sig seen by the command" ||
      fail "SIG$sig not seen by the command: $(cat "$tmp/out")"
  fi
done
# no trap: the command dies of the signal, vmctl exits 128+2
if start_exec sh -c 'echo ready; exec sleep 1000'; then
  kill -INT $EXEC_PID
  wait_exit $EXEC_PID; expect_eq "SIGINT kills an untrapping command: 130" "$?" 130
fi
# a command that ignores SIGINT: the third one is SIGKILL
if start_exec sh -c "trap '' INT; echo ready; while :; do sleep 0.1; done"; then
  kill -INT $EXEC_PID; sleep 0.5; kill -INT $EXEC_PID; sleep 0.5
  kill -0 $EXEC_PID 2>/dev/null && ok "two SIGINTs ignored by the command" ||
    fail "vmctl ended after two ignored SIGINTs"
  kill -INT $EXEC_PID
  wait_exit $EXEC_PID; expect_eq "third SIGINT kills: 137" "$?" 137
  grep -q "third interrupt" "$tmp/out" && ok "third SIGINT explained" ||
    fail "no note about the third SIGINT: $(cat "$tmp/out")"
fi
n=$(vm exec sg -- sh -c 'ps -o pid,comm | grep -c "sleep"')
expect_eq "nothing left running in the guest" "$n" 0

# --- a paused VM is not a dead agent: the exec waits through the pause
export VMCTL_AGENT_SILENCE_SECONDS=2
if start_exec sh -c 'echo ready; sleep 1; echo done'; then
  vm pause sg >/dev/null || fail "pause"
  sleep 5 # longer than the silence limit
  vm resume sg >/dev/null || fail "resume"
  wait_exit $EXEC_PID; expect_eq "exec through a pause" "$?" 0
  grep -q done "$tmp/out" && ok "output after the pause" || fail "output lost: $(cat "$tmp/out")"
fi

# --- an agent that stops answering mid-exec: exec::unavailable, not a hang
"$VMCTL" --json exec sg -- sh -c 'p=$(pidof vmctl-agent); (sleep 8; kill -CONT $p) & kill -STOP $p; sleep 1000' \
  >"$tmp/silent.json" 2>&1 &
pid=$!
wait_exit $pid; rc=$?
expect_eq "silent agent: vmctl exits 1" "$rc" 1
expect_eq "silent agent: code" "$(jq -r .error.code "$tmp/silent.json" 2>/dev/null)" \
  vm_manager::exec::unavailable
expect_eq "silent agent: vm detail" "$(jq -r .error.details.vm "$tmp/silent.json" 2>/dev/null)" sg
expect_eq "silent agent: reason" "$(jq -r .error.details.reason "$tmp/silent.json" 2>/dev/null)" \
  "agent not answering"
unset VMCTL_AGENT_SILENCE_SECONDS
# the agent runs again after SIGCONT: the VM is usable
out=""
for _ in $(seq 30); do
  out=$(vm exec sg -- echo back 2>/dev/null) && break
  sleep 1
done
expect_eq "usable once the agent runs again" "$out" back

# --- vmctl run --rm -- CMD: a one-shot sandbox; output streams while the command runs
start=$(date +%s%N)
first=$("$VMCTL" run oneshot --rm -- sh -c 'echo early; sleep 3; echo late; exit 3' 2>/dev/null |
  { read -r l; echo "$l $(( ($(date +%s%N) - start) / 1000000 ))"; cat >/dev/null; })
late=$(( ($(date +%s%N) - start) / 1000000 ))
# the first line came before the end (by most of the command's 3 s sleep), so it was streamed
ms=${first#early }
[ "${first%% *}" = early ] && [ $((late - ms)) -ge 2000 ] && ok "run streams its output ($ms ms, end $late ms)" ||
  fail "run did not stream: first line '$first', end at $late ms"
"$VMCTL" run oneshot --rm -- sh -c 'echo out; echo err >&2; exit 3' >"$tmp/o" 2>"$tmp/e"
expect_eq "run exit status" "$?" 3
expect_eq "run stdout" "$(cat "$tmp/o")" out
grep -qx err "$tmp/e" && ok "run stderr" || fail "run stderr: $(cat "$tmp/e")"
expect_eq "run --rm removed the VM" "$("$VMCTL" list --json | jq '[.[] | select(.name == "oneshot")] | length')" 0

# --- a guest that powers itself off is stopped, not crashed (QEMU's supervisor saw it exit 0)
# state_after_running NAME: the VM's state once it is no longer running (bounded: 10 s)
state_after_running() {
  local st
  for _ in $(seq 100); do
    st=$(vm status --json "$1" | jq -r .state)
    [ "$st" != running ] && break
    sleep 0.1
  done
  echo "$st"
}
vm exec sg -- poweroff -f >/dev/null 2>&1
expect_eq "guest poweroff -> stopped" "$(state_after_running sg)" stopped
vm start sg --wait >/dev/null 2>&1 && expect_eq "starts again after its poweroff" \
  "$(vm exec sg -- echo again)" again || fail "start after poweroff"
pid=$(vm status --json sg | jq -r .pid)
kill -9 "$pid"
expect_eq "QEMU killed -> crashed" "$(state_after_running sg)" crashed

finish
