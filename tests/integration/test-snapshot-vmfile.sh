#!/bin/bash
# A VMFile machine with `from "VM/SNAP"` (docs/vmfile.md, docs/snapshots.md): `vmctl up` clones it
# from the snapshot (no boot) with its own name as hostname, runs its provision steps, leaves it
# alone the second time, stops and cold-boots it (down, up), and `down --destroy` removes it;
# `from` with the fields the snapshot holds, a malformed `from` and a missing snapshot are errors.
source "$(dirname "$0")/lib.sh"
need_guest
setup_home
work=$(mktemp -d /tmp/vmctl-snapvf.XXXXXX)
snap_cleanup() {
  for n in $("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null); do
    "$VMCTL" destroy --force "$n" >/dev/null 2>&1; done
  "$VMCTL" snapshot rm vsrc base >/dev/null 2>&1
  cleanup; rm -rf "$work"
}
trap snap_cleanup EXIT

# --- validation, before any VM ---
mkdir -p "$work/bad"
check_invalid() { # WHAT CONTENT FIELD PART
  printf '%s\n' "$2" >"$work/bad/VMFile.kdl"
  local out; out=$(cd "$work/bad" && "$VMCTL" --json up 2>/dev/null)
  expect_eq "validation: $1" "$(jq -r '[.error.code, .error.details.field] | join(" ")' <<<"$out")" \
    "vm_manager::vmfile::validation $3"
  jq -r .error.message <<<"$out" | grep -qF -- "$4" && ok "$1: says '$4'" ||
    fail "$1: message lacks '$4': $out"
}
check_invalid "from without a slash" $'vm "x" {\n  from "vsrc"\n}' from 'VM/SNAP'
check_invalid "from with a bad name" $'vm "x" {\n  from "vsrc/-b"\n}' from 'VM/SNAP'
check_invalid "from with memory" $'vm "x" {\n  from "vsrc/base"\n  memory 256\n}' memory "cannot go with 'from'"
check_invalid "from twice" $'vm "x" {\n  from "vsrc/base"\n  from "vsrc/other"\n}' from "only once"
printf 'vm "x" {\n  from "vsrc/base"\n}\n' >"$work/bad/VMFile.kdl"
(cd "$work/bad" && expect_code "from a snapshot that does not exist" vm_manager::snapshot::not_found up)
expect_eq "nothing made by a missing snapshot" "$(vm list --json | jq length)" 0

# --- a template snapshot to clone from ---
vm create vsrc --snapshottable >/dev/null && vm start vsrc --wait >/dev/null ||
  { fail "create and start vsrc"; finish; }
vm exec vsrc -- sh -c 'echo from-snapshot > /root/mark' || fail "write the mark"
vm snapshot create vsrc base >/dev/null || { fail "snapshot create"; finish; }

mkdir -p "$work/env"
cat >"$work/env/VMFile.kdl" <<'EOF'
vm "fc-a" {
    from "vsrc/base"
    provision "shell" { inline "echo provisioned >> /root/count; echo provisioned-$(hostname)"; }
}
vm "fc-b" {
    from "vsrc/base"
}
EOF
cd "$work/env" || exit 1
out=$(vm --json up 2>"$work/up1.err"); rc=$?
expect_eq "up exit" "$rc" 0
expect_eq "up actions" "$(jq -r '[.[] | .name + "=" + .action] | join(",")' <<<"$out")" "fc-a=created,fc-b=created"
expect_eq "up provisioned" "$(jq -r '[.[] | .provisioned, .steps] | join(",")' <<<"$out")" "true,1,true,0"
grep -qx '\[fc-a\] provisioned-fc-a' "$work/up1.err" && ok "provisioned under its own hostname" ||
  fail "no '[fc-a] provisioned-fc-a': $(cat "$work/up1.err")"
expect_eq "the clone has the snapshot's files" "$(vm exec fc-a -- cat /root/mark)" from-snapshot
expect_eq "fc-a runs" "$(state_of fc-a)" running
expect_eq "fc-a's hostname is its name" "$(vm exec fc-a -- hostname)" fc-a
expect_eq "fc-b's hostname is its name" "$(vm exec fc-b -- hostname)" fc-b
test -e "$VMCTL_HOME/vms/fc-a/restored" && ok "fc-a was restored, not booted" ||
  fail "fc-a has no restored mark (booted cold?)"
expect_eq "the clones reference the snapshot" "$(vm snapshot list --json | jq '.[] | select(.name == "base") | .refs')" 2
expect_eq "clones belong to the project" "$(vm status --json fc-a | jq -r '.project | test("VMFile.kdl$")')" true

out=$(vm --json up 2>/dev/null)
expect_eq "second up leaves them alone" "$(jq -r '[.[] | .action] | join(",")' <<<"$out")" "unchanged,unchanged"
expect_eq "provisioned once" "$(vm exec fc-a -- cat /root/count)" provisioned

# down stops; up boots the clone cold from its own configuration (the default guest's root is
# in RAM: what the snapshot had is gone then) and provisions it again
vm down >/dev/null || fail "down"
expect_eq "down stops fc-a" "$(state_of fc-a)" stopped
out=$(vm --json up 2>/dev/null) || fail "up after down: $out"
expect_eq "up after down starts" "$(jq -r '[.[] | .action] | join(",")' <<<"$out")" "started,started"
expect_eq "cold-booted clone keeps its hostname" "$(vm exec fc-b -- hostname)" fc-b

vm down --destroy >/dev/null || fail "down --destroy"
expect_eq "down --destroy removes the clones" "$(vm list --json | jq -r '[.[].name] | join(",")')" vsrc
vm snapshot rm vsrc base >/dev/null && ok "the snapshot is free again" || fail "snapshot rm after down --destroy"
finish
