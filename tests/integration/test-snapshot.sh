#!/bin/bash
# Snapshots, restore and clones on real QEMU (docs/snapshots.md): a process keeps counting across
# snapshot and restore; what was written before the snapshot is there after a restore, what was
# written after it is not; clones get their own hostname, MAC, CID and random bytes; rm of a
# referenced snapshot fails; kill -9 of vmctl mid-snapshot and mid-clone leaves a store the next
# command repairs; every snapshot error is produced.
# SNAPSHOT_CLONES (default 10): how many clones the identity section makes.
source "$(dirname "$0")/lib.sh"
need_guest
setup_home

CLONES=${SNAPSHOT_CLONES:-10}
# template RAM files live on /dev/shm, outside $VMCTL_HOME: remove every snapshot before the home
snap_cleanup() {
  local rows
  rows=$("$VMCTL" snapshot list --json 2>/dev/null | jq -r '.[] | "\(.vm) \(.name)"' 2>/dev/null)
  names=$("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null)
  for n in $names; do "$VMCTL" destroy --force "$n" >/dev/null 2>&1; done
  while read -r v s; do [ -n "$v" ] && "$VMCTL" snapshot rm "$v" "$s" >/dev/null 2>&1; done <<<"$rows"
  cleanup
}
trap snap_cleanup EXIT

ram_files() { ls /dev/shm/vmctl-"$(id -u)"/ 2>/dev/null | grep -c "^$1\." ; }

# --- a template snapshot of a counting guest ---
vm create src --snapshottable --net user >/dev/null && vm start src --wait >/dev/null ||
  { fail "create and start src"; finish; }
expect_eq "the RAM file of a snapshottable VM is 0600" \
  "$(stat -c %a /dev/shm/vmctl-"$(id -u)"/src.*.ram 2>/dev/null)" "600"
# a snapshottable VM and its clones are jailed as any VM (docs/isolation.md, "Snapshots")
proc_field() { awk -v k="$2:" '$1 == k { $1 = ""; print substr($0, 2) }' "/proc/$1/status"; }
qemu_uid() { proc_field "$(vm status --json "$1" | jq -r .pid)" Uid | awk '{ print $1 }'; }
if [ "$(id -u)" = 0 ] && [ "$(vm status --json src | jq -r .jail.jailed)" = true ]; then
  JAILED=1
  src_uid=$(qemu_uid src)
  [ -n "$src_uid" ] && [ "$src_uid" != 0 ] && [ "$src_uid" = "$(vm status --json src | jq -r .jail.uid)" ] &&
    ok "a snapshottable VM's QEMU runs as its jail uid ($src_uid)" ||
    fail "snapshottable src: QEMU uid '$src_uid', jail $(vm status --json src | jq -c .jail)"
  expect_eq "its RAM file is its jail uid's" \
    "$(stat -c %u /dev/shm/vmctl-0/src.*.ram 2>/dev/null)" "$src_uid"
else
  JAILED=0
  skip_section --lacks "root with a working jail" "jailed snapshottable VMs"
fi
vm exec src -- sh -c 'echo before > /root/before
  (i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) >/dev/null 2>&1 &' ||
  fail "start the counter"
# the NIC appears when its module loads: wait for it, so that the clones have one to rename
for _ in $(seq 100); do vm exec src -- test -e /sys/class/net/eth0 && break; sleep 0.1; done
sleep 0.5
before=$(vm exec src -- cat /tmp/count)
src_mac=$(vm exec src -- cat /sys/class/net/eth0/address)
out=$(vm --json snapshot create src base) || fail "snapshot create: $out"
expect_eq "a template snapshot by default" "$(jq -r .kind <<<"$out")" "template"
expect_eq "the source is stopped after a template snapshot (immutability rule)" "$(state_of src)" "stopped"
expect_eq "the RAM file is the snapshot's now" "$(ram_files src.base)" "1"
if [ "$JAILED" = 1 ]; then
  tpl=$(ls /dev/shm/vmctl-0/src.base.*.ram)
  tpl_gid=$(stat -c %g "$tpl")
  [ "$(stat -c %a:%u "$tpl")" = 660:0 ] && [ "$tpl_gid" != 0 ] && [ "$tpl_gid" != "$src_uid" ] &&
    ok "the template is root's, 0660, in a group of its own ($tpl_gid)" ||
    fail "template $(stat -c '%a %u:%g' "$tpl") (source uid $src_uid)"
fi
expect_eq "snapshot list" "$(vm --json snapshot list src | jq -r '.[0].name + " " + .[0].kind')" \
  "base template"

# --- restore: the counter goes on, from where it was ---
vm snapshot restore src base >/dev/null || fail "snapshot restore"
expect_eq "restored vm runs" "$(state_of src)" "running"
c1=$(vm exec src -- cat /tmp/count)
sleep 1
c2=$(vm exec src -- cat /tmp/count)
if [ "$c1" -ge "$before" ] && [ "$c1" -lt $((before + 20)) ] && [ "$c2" -gt "$c1" ]; then
  ok "the process keeps counting across snapshot and restore ($before -> $c1 -> $c2)"
else
  fail "counter: before snapshot $before, after restore $c1, a second later $c2"
fi
expect_eq "a file written before the snapshot is there" "$(vm exec src -- cat /root/before)" "before"
# restored as the VM it was taken from: the hostname and environment are not pushed again
expect_eq "restored as itself: its own hostname" "$(vm exec src -- hostname)" "src"
# ... nor its MAC (setting it takes the link down and up), but the clock and entropy are
expect_eq "restored as itself: its own MAC" "$(vm exec src -- cat /sys/class/net/eth0/address)" "$src_mac"
skew=$(( $(vm exec src -- date +%s) - $(date +%s) ))
[ "${skew#-}" -le 3 ] && ok "restored as itself: its clock is the host's (skew $skew s)" ||
  fail "restored as itself: its clock is $skew s off the host's"
# the launch kept QEMU's version from its QMP greeting: what the restore checked the snapshot by
qv=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\.[0-9]*\.[0-9]*\).*/\1/p;q')
expect_eq "qemu.version is the running QEMU's" "$(cat "$VMCTL_HOME/vms/src/qemu.version" 2>&1)" "$qv"
vm exec src -- sh -c 'echo after > /root/after' || fail "write after"
vm kill src >/dev/null
vm snapshot restore src base >/dev/null || fail "second restore"
expect_eq "a file written after the snapshot is not (the template stayed as it was)" \
  "$(vm exec src -- sh -c 'test -e /root/after && echo there || echo absent')" "absent"
expect_eq "the first file still is" "$(vm exec src -- cat /root/before)" "before"

# --- errors ---
expect_code "restore of a running vm" vm_manager::vm::invalid_state snapshot restore src base
expect_eq "invalid_state names from" "$(jq -r '.error.details.from' <<<"$LAST_JSON")" "running"
expect_eq "... and says what a restore needs" "$(jq -r '.error.message' <<<"$LAST_JSON")" \
  "vm 'src' is running: a restore needs it stopped"
vm create idle >/dev/null
expect_code "snapshot of a vm that is not running" vm_manager::vm::invalid_state snapshot create idle s
expect_eq "invalid_state names to" "$(jq -r '.error.details.to' <<<"$LAST_JSON")" "snapshotted"
expect_code "snapshot name taken" vm_manager::snapshot::already_exists snapshot create src base --kind full
expect_code "restore of a missing snapshot" vm_manager::snapshot::not_found snapshot restore idle nope
expect_code "clone of a missing snapshot" vm_manager::snapshot::not_found clone src nope x
expect_code "rm of a missing snapshot" vm_manager::snapshot::not_found snapshot rm src nope
expect_code "rm of a snapshot the restored source maps" vm_manager::snapshot::in_use snapshot rm src base
expect_code "template of a restored vm (its RAM is the snapshot's)" vm_manager::config::invalid \
  snapshot create src t2 --kind template

# --- a full snapshot: RAM in the stream, the source goes on ---
vm start idle --wait >/dev/null || fail "start idle"
out=$(vm --json snapshot create idle full1) || fail "full snapshot: $out"
expect_eq "full snapshot of a vm without --snapshottable" "$(jq -r .kind <<<"$out")" "full"
expect_eq "the source of a full snapshot keeps running" "$(state_of idle)" "running"
# a damaged stream: QEMU's own words come back as a note
dir=$(jq -r .dir <<<"$out")
cp "$dir/state" "$VMCTL_HOME/state.good"
head -c 20000 "$VMCTL_HOME/state.good" >"$dir/state"
expect_code "a damaged snapshot" vm_manager::snapshot::failed clone idle full1 broken
if jq -e '.error.notes | map(test("QEMU")) | any' <<<"$LAST_JSON" >/dev/null; then
  ok "the failure carries QEMU's words"
else
  fail "no QEMU note in: $LAST_JSON"
fi
expect_eq "the failed clone left no vm" "$(vm --json list | jq '[.[] | select(.name == "broken")] | length')" "0"
cp "$VMCTL_HOME/state.good" "$dir/state"
sqlite3 "$VMCTL_HOME/vmctl.db" "UPDATE snapshots SET qemu_version = '6.0.0' WHERE name = 'full1'"
expect_code "a snapshot of another QEMU" vm_manager::snapshot::incompatible clone idle full1 other
sqlite3 "$VMCTL_HOME/vmctl.db" "UPDATE snapshots SET qemu_version = (SELECT qemu_version FROM snapshots WHERE name = 'base') WHERE name = 'full1'"
out=$(vm --json clone idle full1 fullc) || fail "clone of a full snapshot: $out"
expect_eq "a clone of a full snapshot runs" "$(state_of fullc)" "running"
vm destroy --force fullc >/dev/null
vm snapshot rm idle full1 >/dev/null || fail "rm of an unreferenced snapshot"

# --- clones: each its own identity ---
vm kill src >/dev/null
if out=$(vm --json clone src base w --count "$CLONES"); then
  ok "clone --count $CLONES"
else
  fail "clone --count $CLONES: $out"
fi
hosts="" macs="" rnd="" cids=""
for i in $(seq "$CLONES"); do
  n=w-$i
  hosts+="$(vm exec "$n" -- hostname)"$'\n'
  macs+="$(vm exec "$n" -- cat /sys/class/net/eth0/address)"$'\n'
  rnd+="$(vm exec "$n" -- sh -c 'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \n"')"$'\n'
  cids+="$(vm --json status "$n" | jq -r '.cid // empty')"$'\n'
done
# the snapshot is long past: without the clock set the guest would live at its instant
snap_at=$(vm --json snapshot list src | jq '.[0].created_at')
skew=$(( $(vm exec w-1 -- date +%s) - $(date +%s) ))
if [ "${skew#-}" -le 3 ]; then
  ok "a clone's clock is the host's (skew ${skew} s; snapshot $(( $(date +%s) - snap_at )) s ago)"
else
  fail "a clone's clock is ${skew} s off the host's (snapshot $(( $(date +%s) - snap_at )) s ago)"
fi
expect_eq "every clone is named after itself" "$(sort <<<"$hosts" | grep -c '^w-')" "$CLONES"
if [ "$JAILED" = 1 ]; then
  u1=$(qemu_uid w-1) u2=$(qemu_uid w-2) p1=$(vm status --json w-1 | jq -r .pid)
  [ -n "$u1" ] && [ "$u1" != 0 ] && [ "$u1" != "$u2" ] && [ "$u1" != "$src_uid" ] &&
    ok "clones run jailed, each as its own uid ($u1, $u2)" || fail "clone uids '$u1' '$u2' (source $src_uid)"
  grep -qw "$tpl_gid" <<<"$(proc_field "$p1" Groups)" &&
    ok "a clone's QEMU is in the template's group" ||
    fail "clone groups '$(proc_field "$p1" Groups)', template group $tpl_gid"
  [ -e "/proc/$p1/root$tpl" ] && [ ! -e "/proc/$p1/root/etc/passwd" ] &&
    ok "its root has the template bound in and nothing of the host's /etc" ||
    fail "clone root: template $(ls "/proc/$p1/root$tpl" 2>&1), /etc/passwd $(ls /proc/$p1/root/etc/passwd 2>&1)"
  expect_eq "a clone's Seccomp filter" "$(proc_field "$p1" Seccomp)" 2
fi
expect_eq "$CLONES distinct hostnames" "$(grep . <<<"$hosts" | sort -u | wc -l)" "$CLONES"
expect_eq "$CLONES distinct MACs" "$(grep -E '^52:54:00' <<<"$macs" | sort -u | wc -l)" "$CLONES"
expect_eq "$CLONES distinct random bytes" "$(grep -E '^[0-9a-f]{32}$' <<<"$rnd" | sort -u | wc -l)" "$CLONES"
if [ -e /dev/vhost-vsock ]; then
  expect_eq "$CLONES distinct CIDs" "$(grep . <<<"$cids" | sort -u | wc -l)" "$CLONES"
else
  skip_section --lacks /dev/vhost-vsock "distinct vsock CIDs of clones"
fi
expect_code "rm of a snapshot clones map" vm_manager::snapshot::in_use snapshot rm src base
expect_eq "refs counts the clones and the source" "$(vm --json snapshot list src | jq '.[0].refs')" \
  "$((CLONES + 1))"
for i in $(seq "$CLONES"); do vm destroy --force "w-$i" >/dev/null; done

# --- run --from ---
out=$(vm run job --from src/base --rm -- hostname)
expect_eq "run --from restores a fresh clone and runs the command" "$out" "job"
out=$("$VMCTL" run job2 --from src/base --memory 512 -- true 2>&1); rc=$?
expect_eq "run --from with VM options is a usage error" "$rc" "2"
expect_eq "run --from --rm removes it" "$(vm --json list | jq '[.[] | select(.name == "job")] | length')" "0"

# --- --keep-running: the source continues on its own RAM file, the snapshot has a copy ---
vm create kr --snapshottable >/dev/null && vm start kr --wait >/dev/null || fail "start kr"
vm exec kr -- sh -c 'echo one > /root/mark' || fail "write kr's mark"
vm snapshot create kr s --keep-running >/dev/null || fail "snapshot --keep-running"
expect_eq "the source of --keep-running keeps running" "$(state_of kr)" "running"
vm exec kr -- sh -c 'echo two > /root/mark' || fail "write kr's mark again"
expect_eq "the source has two RAM files now: its own and the snapshot's" \
  "$(ram_files kr)" "2"
vm clone kr s kr2 >/dev/null || fail "clone of a --keep-running snapshot"
expect_eq "the clone sees the instant of the snapshot, not what the source wrote since" \
  "$(vm exec kr2 -- cat /root/mark)" "one"
expect_eq "the source still sees its own" "$(vm exec kr -- cat /root/mark)" "two"
vm destroy --force kr2 >/dev/null
vm kill kr >/dev/null
expect_eq "a killed snapshottable vm releases its RAM file (the snapshot's stays)" "$(ram_files kr)" "1"
vm destroy --force kr >/dev/null
vm snapshot rm kr s >/dev/null || fail "rm kr/s"
expect_eq "destroy and rm leave no RAM file of kr" "$(ram_files kr)" "0"

# --- kill -9 of vmctl in the middle ---
vm destroy --force src >/dev/null
vm create k --snapshottable >/dev/null && vm start k --wait >/dev/null || fail "start k"
VMCTL_TEST_SNAPSHOT_DELAY_MS=5000 "$VMCTL" snapshot create k mid >/dev/null 2>&1 &
pid=$!
sleep 1
kill -9 $pid; wait $pid 2>/dev/null
expect_eq "a killed snapshot leaves no snapshot" "$(vm --json snapshot list k | jq length)" "0"
expect_eq "its row is gone" "$(sqlite3 "$VMCTL_HOME/vmctl.db" "SELECT count(*) FROM snapshots WHERE vm = 'k'")" "0"
expect_eq "the vm still runs" "$(state_of k)" "running"
# killed once k's RAM file is the template's (renamed: k.moved.*), before the snapshot is
# complete: the next command gives the file back to k, which still maps it, and lets k run
VMCTL_TEST_RAM_MOVED_DELAY_MS=8000 "$VMCTL" snapshot create k moved >/dev/null 2>&1 &
pid=$!
for _ in $(seq 100); do [ "$(ram_files k.moved)" = 1 ] && break; sleep 0.05; done
expect_eq "the RAM file moved to the template's name" "$(ram_files k.moved)" "1"
kill -9 $pid; wait $pid 2>/dev/null
vm snapshot list k >/dev/null
expect_eq "... the next command gives it back to k" "$(ram_files k.moved)/$(ram_files k)" "0/1"
timeout 20 "$VMCTL" exec k -- true && ok "... and k's guest runs again" || fail "k's guest after the killed move"
vm snapshot create k mid >/dev/null || fail "the same snapshot again after the kill"
vm snapshot rm k mid >/dev/null
vm start k --wait >/dev/null || fail "start k again (the template snapshot stopped it)"
# killed while QEMU saves (the guest stopped for it): the next command lets the guest run again
vm snapshot create k mid --kind full >/dev/null || fail "a full snapshot of k"
VMCTL_TEST_SAVE_DELAY_MS=5000 "$VMCTL" snapshot create k mid2 --kind full >/dev/null 2>&1 &
pid=$!
sleep 1
kill -9 $pid; wait $pid 2>/dev/null
vm snapshot list k >/dev/null
if timeout 20 "$VMCTL" exec k -- true; then
  ok "a guest stopped by a killed snapshot runs again after the next command"
else
  fail "the guest of k stayed stopped after a killed snapshot"
fi
expect_eq "only the complete snapshot is listed" "$(vm --json snapshot list k | jq -r '[.[].name] | join(",")')" "mid"
VMCTL_TEST_RESTORE_DELAY_MS=5000 "$VMCTL" clone k mid kc >/dev/null 2>&1 &
pid=$!
sleep 1.5
kill -9 $pid; wait $pid 2>/dev/null
sleep 0.5
expect_eq "a killed clone leaves no vm" "$(vm --json list | jq '[.[] | select(.name == "kc")] | length')" "0"
expect_eq "nor its directory" "$(test -e "$VMCTL_HOME/vms/kc" && echo there || echo gone)" "gone"
expect_eq "nor its QEMU" "$(pgrep -f "$VMCTL_HOME/vms/kc/" | wc -l)" "0"
vm clone k mid kc >/dev/null || fail "the same clone again after the kill"
vm destroy --force kc >/dev/null
vm destroy --force k >/dev/null
vm snapshot rm k mid >/dev/null || fail "rm after the killed clone (its reference went with it)"
expect_eq "no template RAM file is left" "$(ram_files k)" "0"
expect_eq "no RAM file of a killed clone is left" "$(ram_files kc)" "0"

finish
