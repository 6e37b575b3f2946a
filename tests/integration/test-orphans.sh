#!/bin/bash
# Issue 16/17, each case deterministic: a lost store never costs a VM its disk (create refuses
# the directory, doctor --fix adopts it back, running); a VM whose directory vanished can be
# destroyed and created again; a start killed between launching QEMU and recording it leaves no
# QEMU; a destroy killed midway is finished by the next one; the lock outlives destroy.
. "$(dirname "$0")/lib.sh"
need_guest
command -v sqlite3 >/dev/null || skip "sqlite3 (package sqlite3) is not installed"
setup_home
DB=$VMCTL_HOME/vmctl.db

qemu_of() { pgrep -f -- "-pidfile $VMCTL_HOME/vms/$1/qemu.pid" 2>/dev/null; }

# wait_gone PID: bounded, a zombie counts as gone
wait_gone() {
  for _ in $(seq 200); do
    local s
    s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)
    [ -z "$s" ] || [ "$s" == Z ] && return 0
    sleep 0.05
  done
  return 1
}

# --- P0: the store moved aside while a VM runs
vm create web >/dev/null || fail "create web"
vm start web --wait --timeout 120 >/dev/null || fail "start web"
pid=$(vm status --json web | jq -r .pid)
echo data >"$VMCTL_HOME/vms/web/marker-file"
mv "$DB" "$DB.aside"; rm -f "$DB-wal" "$DB-shm"
expect_code "create over a directory without a row" vm_manager::vm::already_exists create web
jq -r .error.help <<<"$LAST_JSON" | grep -q "doctor --fix" && ok "its help names doctor --fix" ||
  fail "help: $(jq -r .error.help <<<"$LAST_JSON")"
[ -f "$VMCTL_HOME/vms/web/marker-file" ] && ok "the directory is untouched" || fail "directory removed"
[ -d "/proc/$pid" ] && ok "the VM still runs" || fail "QEMU gone"
out=$(vm --json doctor)
jq -e '.[] | select(.name == "vm directories") | .status == "warn" and (.summary | contains("'"'web'"'"))' <<<"$out" >/dev/null &&
  ok "doctor reports the directory" || fail "doctor: $(jq -c '.[] | select(.name | startswith("vm "))' <<<"$out")"
jq -e '.[] | select(.name == "vm processes") | .status == "warn"' <<<"$out" >/dev/null &&
  ok "doctor reports its unrecorded QEMU" || fail "doctor processes: $(jq -c '.[] | select(.name == "vm processes")' <<<"$out")"
vm doctor --fix >/dev/null
expect_eq "adopted running" "$(state_of web)" running
expect_eq "adopted with its pid" "$(vm status --json web | jq -r .pid)" "$pid"
expect_eq "exec in the adopted VM" "$(vm exec web -- echo alive)" alive
out=$(vm --json doctor)
expect_eq "doctor is content afterwards" "$(jq '[.[] | select((.name | startswith("vm ")) and .status != "ok")] | length' <<<"$out")" 0
# a stopped one is adopted stopped
vm stop web --force >/dev/null
mv "$DB" "$DB.aside2"; rm -f "$DB-wal" "$DB-shm"
vm doctor --fix >/dev/null
expect_eq "adopted stopped" "$(state_of web)" stopped
vm destroy web >/dev/null && ok "adopted vm destroyed" || fail "destroy adopted"
rm -f "$DB.aside" "$DB.aside2"

# --- issue 17: the directory vanished
vm create gone >/dev/null || fail "create gone"
rm -rf "$VMCTL_HOME/vms/gone"
expect_code "create says already exists" vm_manager::vm::already_exists create gone
jq -r .error.help <<<"$LAST_JSON" | grep -q "vmctl destroy gone" && ok "and says to destroy it" ||
  fail "help: $(jq -r .error.help <<<"$LAST_JSON")"
vm --json doctor | jq -e '.[] | select(.name == "vm rows") | .status == "warn" and (.summary | contains("'"'gone'"'"))' >/dev/null &&
  ok "doctor reports the row" || fail "doctor does not report the row"
vm destroy --force gone >/dev/null && ok "destroy --force removes the row" || fail "destroy gone"
vm create gone >/dev/null && ok "the name can be created again" || fail "create gone again"
vm destroy gone >/dev/null

# --- a start killed between launching QEMU and recording it
vm create ks >/dev/null || fail "create ks"
VMCTL_TEST_START_DELAY_MS=60000 "$VMCTL" start ks >/dev/null 2>&1 &
spid=$!
q=""
for _ in $(seq 200); do q=$(qemu_of ks); [ -n "$q" ] && break; sleep 0.05; done
[ -n "$q" ] && ok "QEMU launched" || fail "no QEMU launched"
kill -9 $spid; wait $spid 2>/dev/null
if [ -n "$q" ] && wait_gone "$q"; then ok "killed start leaves no QEMU"; else fail "orphan QEMU $q after a killed start"; kill -9 $q 2>/dev/null; fi
expect_eq "still created" "$(state_of ks)" created
vm start ks --wait --timeout 120 >/dev/null && ok "starts again" || fail "start ks after kill"
expect_eq "one QEMU" "$(qemu_of ks | wc -l)" 1
vm destroy --force ks >/dev/null
expect_eq "none after destroy" "$(qemu_of ks | wc -l)" 0

# --- a destroy killed midway (directory half removed, row left) is finished by the next one
vm create half >/dev/null
rm -rf "$VMCTL_HOME/vms/half/id_ed25519" "$VMCTL_HOME/vms/half/vm.json"
vm destroy half >/dev/null && ok "destroy finishes a half-removed VM" || fail "destroy half"
expect_eq "row gone" "$(sqlite3 "$DB" "select count(*) from vms where name='half'")" 0
[ -e "$VMCTL_HOME/vms/half" ] && fail "directory left" || ok "directory gone"

# --- a killed create never removes a directory it did not make
mkdir -p "$VMCTL_HOME/vms/keep"; echo precious >"$VMCTL_HOME/vms/keep/disk.qcow2"
VMCTL_TEST_CREATE_DELAY_MS=30000 "$VMCTL" create keep >/dev/null 2>&1 &
cpid=$!
for _ in $(seq 100); do
  [ "$(sqlite3 "$DB" "select count(*) from vms where name='keep'" 2>/dev/null)" == 1 ] && break
  sleep 0.05
done
kill -9 $cpid; wait $cpid 2>/dev/null
vm list >/dev/null 2>&1
expect_eq "row of the killed create removed" "$(sqlite3 "$DB" "select count(*) from vms where name='keep'")" 0
expect_eq "the directory it did not make is kept" "$(cat "$VMCTL_HOME/vms/keep/disk.qcow2" 2>/dev/null)" precious
vm --json doctor | jq -e '.[] | select(.name == "vm directories") | (.summary | contains("'"'keep'"'"))' >/dev/null &&
  ok "and reported" || fail "keep not reported"
vm doctor --fix >/dev/null
[ -f "$VMCTL_HOME/vms/keep/disk.qcow2" ] && ok "--fix leaves a directory it cannot adopt" || fail "--fix removed keep"
rm -rf "$VMCTL_HOME/vms/keep"

# --- the lock is not in the VM directory: start waits for whoever holds it, destroy removes it
vm create lk >/dev/null
if command -v flock >/dev/null; then
  flock "$VMCTL_HOME/locks/lk.lock" sleep 2 &
  fpid=$!
  sleep 0.3
  "$VMCTL" start lk >/dev/null 2>&1 &
  spid=$!
  sleep 1
  expect_eq "start waits for the lock" "$(qemu_of lk | wc -l)" 0
  wait $fpid
  wait $spid && ok "start runs once the lock is free" || fail "start lk"
  expect_eq "then one QEMU" "$(qemu_of lk | wc -l)" 1
  vm stop lk --force >/dev/null
else
  fail "flock (package util-linux) is not installed"
fi
[ -e "$VMCTL_HOME/vms/lk/vm.lock" ] && fail "lock in the VM directory" || ok "no lock in the VM directory"
vm destroy lk >/dev/null
[ -e "$VMCTL_HOME/locks/lk.lock" ] && fail "lock file left by destroy" || ok "destroy removes the lock file"
finish
