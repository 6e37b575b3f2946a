#!/bin/bash
# VMFile machines belong to the VMFile that made them (issue 17): a second project naming the same
# VM, and a VM made by hand, are refused by up/provision/reload/down and left untouched; up
# --adopt takes over a hand-made one. A failed provisioning is recorded (status/list show it) and
# the next `up` provisions again, exiting 1 while it still fails; a file of 300 machines does not
# run out of descriptors. Two VMs boot.
. "$(dirname "$0")/lib.sh"

work=$(mktemp -d /tmp/vmctl-vmfile-scope.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- without a guest: many machines at once stay within the descriptor limit ---
# 300 directly booted machines whose QEMU cannot be spawned, under `ulimit -n 128`, each create
# held open 200 ms (VMCTL_TEST_CREATE_DELAY_MS): every machine reports its own spawn failure,
# none EMFILE (it was a thread and a store connection per machine, all at once).
for i in $(seq 300); do echo "vm \"mm$i\" { kernel \"/etc/hostname\"; }"; done >"$work/many.kdl"
out=$(ulimit -n 128; VMCTL_TEST_CREATE_DELAY_MS=200 VMCTL_QEMU=/nonexistent/qemu \
  "$VMCTL" --home "$work/many-home" --json up --file "$work/many.kdl" 2>/dev/null)
expect_eq "300 machines: the first error is spawn_failed" "$(jq -r .error.code <<<"$out")" vm_manager::qemu::spawn_failed
expect_eq "300 machines: the 299 others too, none EMFILE" \
  "$(jq -r '[.error.notes[] | select(test("spawn_failed"))] | length' <<<"$out") $(jq -r '[.error.notes[] | select(test("Too many open files"))] | length' <<<"$out")" "299 0"
rm -rf "$work/many-home" # no QEMU was started
[ "$fails" -eq 0 ] || finish # a skip below must not hide a failure above

need_guest
setup_home
trap 'cleanup; rm -rf "$work"' EXIT
mkdir -p "$work/a" "$work/b" "$work/c"
ln -s "$work/a" "$work/a-link"

# Project A: step 2 fails until /tmp/pass exists in the guest.
cat >"$work/a/VMFile.kdl" <<'EOF'
vm "sc-1" {
    provision "shell" { inline "echo a >> /tmp/a-runs"; }
    provision "shell" { inline "test -e /tmp/pass || { echo not-yet >&2; exit 3; }"; }
}
EOF
# Project B names the same VM, with steps of its own.
cat >"$work/b/VMFile.kdl" <<'EOF'
vm "sc-1" {
    provision "shell" { inline "touch /tmp/b-was-here"; }
}
EOF

# --- a failing provisioning is remembered ---
expect_code "first up fails on step 2" vm_manager::provision::failed up --file "$work/a/VMFile.kdl"
expect_eq "sc-1 running after the failed step" "$(state_of sc-1)" running
st=$(vm status --json sc-1)
expect_eq "status: provision failed at step 2" "$(jq -r '[.provision.state, .provision.step] | join(",")' <<<"$st")" "failed,2"
jq -r .provision.error <<<"$st" | grep -q "exited with status 3" && ok "status: provision error kept" ||
  fail "status provision.error: $st"
expect_eq "status: project is A's canonical path" "$(jq -r .project <<<"$st")" "$(realpath "$work/a/VMFile.kdl")"
expect_eq "list --json has the provision field" "$(vm list --json | jq -r '.[0].provision.state')" failed
vm list | grep -q 'failed (step 2)' && ok "list table shows the failed provisioning" ||
  fail "list table: $(vm list)"
vm status sc-1 | grep -q '^provision: *failed (step 2)' && ok "status text shows it" ||
  fail "status text: $(vm status sc-1)"

# Running twice must not pass: up provisions again and still fails.
expect_code "second up provisions again and fails" vm_manager::provision::failed up --file "$work/a/VMFile.kdl"
expect_eq "step 1 ran again" "$(vm exec sc-1 -- cat /tmp/a-runs | wc -l)" 2
vm exec sc-1 -- touch /tmp/pass || fail "exec touch"
out=$(vm --json up --file "$work/a/VMFile.kdl" 2>/dev/null); rc=$?
expect_eq "third up passes" "$rc $(jq -r '.[0] | .action + "/" + (.provisioned|tostring)' <<<"$out")" "0 provisioned/true"
st=$(vm status --json sc-1)
expect_eq "provision ok" "$(jq -r '[.provision.state, .provision.error, (.provision.at > 0)] | map(tostring) | join(",")' <<<"$st")" "ok,null,true"
out=$(vm --json up --file "$work/a/VMFile.kdl" 2>/dev/null); rc=$?
expect_eq "fourth up is unchanged" "$rc $(jq -r '.[0].action' <<<"$out")" "0 unchanged"
expect_eq "no step ran the fourth time" "$(vm exec sc-1 -- cat /tmp/a-runs | wc -l)" 3
# The same file through a symlinked directory is the same project.
out=$(vm --json up --file "$work/a-link/VMFile.kdl" 2>/dev/null); rc=$?
expect_eq "same project through a symlink" "$rc $(jq -r '.[0].action' <<<"$out")" "0 unchanged"

# Changed steps: the machine stays as it is, with a notice to run `vmctl provision`.
sed -i 's/echo a >> /echo a2 >> /' "$work/a/VMFile.kdl"
out=$(vm --json up --file "$work/a/VMFile.kdl" 2>"$work/changed.err"); rc=$?
expect_eq "changed steps: unchanged" "$rc $(jq -r '.[0].action' <<<"$out")" "0 unchanged"
grep -q "steps of vm 'sc-1' changed since it was provisioned" "$work/changed.err" &&
  ok "changed steps: notice" || fail "no notice: $(cat "$work/changed.err")"
vm down --adopt --file "$work/a/VMFile.kdl" >/dev/null 2>&1
expect_eq "--adopt is for up only (usage error)" "$? $(state_of sc-1)" "2 running"

# --- another project naming the same VM is refused ---
pid=$(vm status --json sc-1 | jq -r .pid)
for cmd in "up" "provision" "reload" "down" "down --destroy"; do
  # shellcheck disable=SC2086
  expect_code "B: $cmd refused" vm_manager::vm::already_exists $cmd --file "$work/b/VMFile.kdl"
  expect_eq "B: $cmd names the owner" "$(jq -r '.error.details | [.vm, .owner, .project] | join(",")' <<<"$LAST_JSON")" \
    "sc-1,vmfile,$(realpath "$work/a/VMFile.kdl")"
done
jq -r .error.help <<<"$LAST_JSON" | grep -q "vmctl up --file" && ok "help says what to do" ||
  fail "help: $(jq -r .error.help <<<"$LAST_JSON")"
expect_eq "sc-1 still running, same QEMU" "$(state_of sc-1) $(vm status --json sc-1 | jq -r .pid)" "running $pid"
vm exec sc-1 -- test -e /tmp/b-was-here; expect_eq "B's step never ran" "$?" 1
expect_eq "still A's" "$(vm status --json sc-1 | jq -r .project)" "$(realpath "$work/a/VMFile.kdl")"

# --- a VM made by hand is left alone, unless adopted ---
vm create sc-hand >/dev/null || fail "create sc-hand"
expect_eq "hand-made: no project" "$(vm status --json sc-hand | jq -r '[.project, .provision.state] | map(tostring) | join(",")')" "null,none"
cat >"$work/c/VMFile.kdl" <<'EOF'
vm "sc-hand" {
    provision "shell" { inline "touch /tmp/c-was-here"; }
}
EOF
expect_code "C: up refuses a hand-made VM" vm_manager::vm::already_exists up --file "$work/c/VMFile.kdl"
expect_eq "C: owner none" "$(jq -r .error.details.owner <<<"$LAST_JSON")" none
jq -r .error.help <<<"$LAST_JSON" | grep -q -- "--adopt" && ok "help mentions --adopt" || fail "help: $LAST_JSON"
expect_code "C: down --destroy refuses it" vm_manager::vm::already_exists down --destroy --file "$work/c/VMFile.kdl"
expect_eq "hand-made VM untouched" "$(state_of sc-hand)" created
out=$(vm --json up --adopt --file "$work/c/VMFile.kdl" 2>/dev/null); rc=$?
expect_eq "up --adopt" "$rc $(jq -r '.[0] | .action + "/" + (.provisioned|tostring)' <<<"$out")" "0 started/true"
expect_eq "adopted: C's project" "$(vm status --json sc-hand | jq -r .project)" "$(realpath "$work/c/VMFile.kdl")"
vm exec sc-hand -- test -e /tmp/c-was-here && ok "adopted VM provisioned" || fail "no C marker"
expect_code "adopt does not take another project's VM" vm_manager::vm::already_exists up --adopt --file "$work/b/VMFile.kdl"

out=$(vm --json down --destroy --file "$work/c/VMFile.kdl" 2>/dev/null)
expect_eq "C: down --destroy its own" "$(jq -r '.[0].action' <<<"$out")" destroyed
out=$(vm --json down --destroy --file "$work/a/VMFile.kdl" 2>/dev/null)
expect_eq "A: down --destroy its own" "$(jq -r '.[0].action' <<<"$out")" destroyed
expect_eq "no VMs left" "$(vm list --json | jq length)" 0
finish
