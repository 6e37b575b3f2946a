#!/bin/bash
# A hostile host: SIGKILL vmctl at random points of create, start, stop, destroy, run and run --rm,
# then 8 concurrent workers (no kills) doing create/start/stop/destroy on a few names. After every
# trial and round, "the next command" (`vmctl list`) runs and the invariants are checked:
#   - no QEMU (or vmctl-supervise) process of this home without a running or paused row whose pid
#     it is (an orphan), and never two QEMUs for one VM;
#   - every row can be destroyed with `destroy --force` (checked for each killed destroy, after
#     every round and at the end);
#   - no VM directory without a row that `vmctl doctor` does not report;
#   - the store stays readable (`list` works, SQLite's integrity check says ok).
# The summary lines give the counts, e.g.
#   kill-random: 40 trials (31 killed mid-command), 0 orphans, 0 undestroyable rows, 0 failures
# Cost: VMCTL_HOSTILE_TRIALS (default 40) kill trials and VMCTL_HOSTILE_ROUNDS (default 4)
# concurrent rounds take 2-4 minutes on 2 cores; docs/reliability.md records a longer run.
# VMCTL_HOSTILE_SEED makes the random choices repeatable.
. "$(dirname "$0")/lib.sh"
need_guest
command -v sqlite3 >/dev/null || skip "sqlite3 (package sqlite3) is not installed"
command -v pgrep >/dev/null || skip "pgrep (package procps) is not installed"
setup_home

TRIALS=${VMCTL_HOSTILE_TRIALS:-40}
ROUNDS=${VMCTL_HOSTILE_ROUNDS:-4}
WORKERS=8
OPS_PER_WORKER=${VMCTL_HOSTILE_OPS:-5}
RANDOM=${VMCTL_HOSTILE_SEED:-$$}
DB=$VMCTL_HOME/vmctl.db
VMS=$VMCTL_HOME/vms

orphans=0 dups=0 undestroyable=0 failures=0 killed=0

note() { echo "  $*"; }

# "name state pid" per row, incomplete rows too (straight from the store)
rows() { sqlite3 -separator ' ' "$DB" 'select name, state, pid from vms' 2>/dev/null; }

# "pid name" for every QEMU of this home (its -pidfile names the VM directory); zombies have no
# command line and are not listed
qemus() {
  pgrep -af -- "-pidfile $VMS/" 2>/dev/null | grep -v pgrep |
    sed -n "s|^\([0-9]*\) .*-pidfile $VMS/\([^/ ]*\)/qemu.pid.*|\1 \2|p"
}

# supervisors of this home (their environment has our VMCTL_HOME) that have no live child
lone_supervisors() {
  local s
  for s in $(pgrep -x vmctl-supervise 2>/dev/null); do
    [ "$(awk '{print $3}' "/proc/$s/stat" 2>/dev/null)" == Z ] && continue # dead, init reaps it
    tr '\0' '\n' 2>/dev/null <"/proc/$s/environ" | grep -qx "VMCTL_HOME=$VMCTL_HOME" || continue
    [ -n "$(pgrep -P "$s" 2>/dev/null)" ] || echo "$s"
  done
}

# kill_orphan PID: so that one orphan is counted once, not by every later check
kill_orphan() {
  kill -9 "$1" 2>/dev/null
  for _ in $(seq 100); do
    local s
    s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)
    [ -z "$s" ] || [ "$s" == Z ] && return
    sleep 0.02
  done
}

# check WHERE: the invariants, after the next command
check() {
  local where=$1 out
  if ! out=$("$VMCTL" --json list 2>/dev/null) || ! jq -e 'type == "array"' <<<"$out" >/dev/null; then
    note "$where: store unreadable: $out"; failures=$((failures + 1)); return
  fi
  local ic
  ic=$(sqlite3 "$DB" 'pragma integrity_check' 2>&1)
  [ "$ic" == ok ] || { note "$where: integrity_check: $ic"; failures=$((failures + 1)); }
  local r
  r=$(rows)
  local seen="" pid name
  while read -r pid name; do
    [ -n "$pid" ] || continue
    if grep -qx "$name" <<<"$seen"; then
      note "$where: a second QEMU (pid $pid) for vm '$name'"; dups=$((dups + 1))
    fi
    seen+="$name"$'\n'
    if ! grep -Eq "^$name (running|paused) $pid\$" <<<"$r"; then
      # a start may still record it: look again once (no vmctl of ours runs now, so not for long)
      sleep 0.3
      r=$(rows)
      if [ -d "/proc/$pid" ] && ! grep -Eq "^$name (running|paused) $pid\$" <<<"$r"; then
        note "$where: orphan QEMU pid $pid of vm '$name' (row: $(grep "^$name " <<<"$r" || echo none))"
        orphans=$((orphans + 1)); kill_orphan "$pid"
      fi
    fi
  done < <(qemus)
  local s
  for s in $(lone_supervisors); do
    sleep 0.3
    if [ -d "/proc/$s" ] && [ -z "$(pgrep -P "$s")" ]; then
      note "$where: vmctl-supervise pid $s without its QEMU"; orphans=$((orphans + 1)); kill_orphan "$s"
    fi
  done
  local d doc=""
  for d in "$VMS"/*; do
    [ -d "$d" ] || continue
    name=${d##*/}
    grep -q "^$name " <<<"$(rows)" && continue
    [ -n "$doc" ] || doc=$("$VMCTL" --json doctor 2>/dev/null)
    if jq -e --arg n "'$name'" 'any(.[]; .status != "ok" and (.summary | contains($n)))' <<<"$doc" >/dev/null 2>&1; then
      note "$where: directory of '$name' without a row, reported by doctor"
      "$VMCTL" doctor --fix >/dev/null 2>&1 # adopt it (or remove a half-made one) to go on
    else
      note "$where: directory of '$name' without a row, not reported"; failures=$((failures + 1))
      rm -rf "$d"
    fi
  done
}

# destroyable NAME WHERE: destroy --force works (or the row is really gone)
destroyable() {
  local out
  out=$("$VMCTL" --json destroy --force "$1" 2>/dev/null) && return
  out=$(jq -c .error <<<"$out" 2>/dev/null || echo "$out")
  if [ -n "$(sqlite3 "$DB" "select name from vms where name='$1'")" ]; then
    note "$2: row of '$1' cannot be destroyed: $out"; undestroyable=$((undestroyable + 1))
    sqlite3 "$DB" "delete from vms where name='$1'" # so that later trials can use the name
  fi
}

state() { sqlite3 "$DB" "select state from vms where name='$1'" 2>/dev/null; }

pick() { local a=("$@"); echo "${a[RANDOM % ${#a[@]}]}"; }

# one command, killed after a random delay up to its typical duration (ms)
trial() {
  local i=$1 name st op max
  name=$(pick k1 k2 k3)
  st=$(state "$name")
  case $st in
    "") op=$(pick create create run run-rm) ;;
    running | paused) op=$(pick stop stop-force destroy-force) ;;
    *) op=$(pick start start destroy run-rm-existing) ;;
  esac
  local args
  case $op in
    create) args=(create "$name"); max=250 ;;
    start) args=(start "$name"); max=1500 ;;
    stop) args=(stop "$name" --timeout 2); max=2000 ;;
    stop-force) args=(stop "$name" --force); max=600 ;;
    destroy) args=(destroy "$name"); max=300 ;;
    destroy-force) args=(destroy --force "$name"); max=600 ;;
    run) args=(run "$name" --timeout 60 -- true); max=4000 ;;
    run-rm) args=(run "$name" --rm --timeout 60 -- true); max=5000 ;;
    run-rm-existing) destroyable "$name" "trial $i"; args=(run "$name" --rm --timeout 60 -- true); max=5000 ;;
  esac
  local ms=$((RANDOM % max))
  "$VMCTL" "${args[@]}" >/dev/null 2>&1 &
  local pid=$!
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  if kill -9 "$pid" 2>/dev/null; then killed=$((killed + 1)); fi
  wait "$pid" 2>/dev/null
  check "trial $i ($op $name, killed after $ms ms)"
  case $op in destroy*) destroyable "$name" "trial $i ($op $name)" ;; esac
}

for i in $(seq "$TRIALS"); do trial "$i"; done
for n in $(rows | awk '{print $1}'); do destroyable "$n" "after the trials"; done
check "after the trials"
kill_fail=$((failures + dups))
echo "kill-random: $TRIALS trials ($killed killed mid-command), $orphans orphans, $undestroyable undestroyable rows, $kill_fail failures"
k_orphans=$orphans k_undestroyable=$undestroyable k_failures=$kill_fail
orphans=0 dups=0 undestroyable=0 failures=0

worker() {
  local w=$1 j name op
  RANDOM=$2
  for j in $(seq "$OPS_PER_WORKER"); do
    name=$(pick c1 c2 c3)
    op=$(pick create create start start stop destroy destroy-force)
    case $op in
      create) "$VMCTL" create "$name" ;;
      start) "$VMCTL" start "$name" ;;
      stop) "$VMCTL" stop "$name" --timeout 1 ;;
      destroy) "$VMCTL" destroy "$name" ;;
      destroy-force) "$VMCTL" destroy --force "$name" ;;
    esac >/dev/null 2>&1
  done
}

for r in $(seq "$ROUNDS"); do
  pids=()
  for w in $(seq "$WORKERS"); do worker "$w" "$RANDOM" & pids+=($!); done
  wait "${pids[@]}"
  check "round $r"
  for n in $(rows | awk '{print $1}'); do destroyable "$n" "round $r"; done
  check "round $r, after destroying"
done
conc_fail=$((failures + dups))
echo "concurrent: $ROUNDS rounds of $WORKERS workers x $OPS_PER_WORKER ops, $orphans orphans, $dups duplicate QEMUs, $undestroyable undestroyable rows, $conc_fail failures"

[ $((k_orphans + k_undestroyable + k_failures)) -eq 0 ] && ok "kill-random invariants" ||
  fail "kill-random: $k_orphans orphans, $k_undestroyable undestroyable rows, $k_failures failures"
[ $((orphans + undestroyable + conc_fail)) -eq 0 ] && ok "concurrent invariants" ||
  fail "concurrent: $orphans orphans, $undestroyable undestroyable rows, $conc_fail failures"
[ -z "$(qemus)" ] && ok "no QEMU left" || fail "QEMU left: $(qemus)"
finish
