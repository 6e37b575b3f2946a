#!/bin/bash
# A VMFile machine with `from "VM/SNAP"` (docs/vmfile.md, docs/snapshots.md): `vmctl up` clones it
# from the snapshot (no boot) with its own name as hostname, runs its provision steps, leaves it
# alone the second time, stops and cold-boots it (down, up), and `down --destroy` removes it;
# `from` with the fields the snapshot holds, a malformed `from` and a missing snapshot are errors.
# `from "VM/SNAP" pool=N`: up sets the snapshot's warm pool (recorded as the VMFile's), a re-up
# changes it or (the key gone) removes it, down removes it; a pool set by hand is left alone
# (up --adopt takes it over); a bad pool is a positioned validation error.
source "$(dirname "$0")/lib.sh"
need_guest
setup_home
work=$(mktemp -d /tmp/vmctl-snapvf.XXXXXX)
snap_cleanup() {
  "$VMCTL" pool rm vsrc/base >/dev/null 2>&1
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
check_invalid "a pool past 64" $'vm "x" {\n  from "vsrc/base" pool=65\n}' pool 'from 0 to 64'
check_invalid "a pool that is not a number" $'vm "x" {\n  from "vsrc/base" pool="two"\n}' pool 'from 0 to 64'
check_invalid "an unknown property of from" $'vm "x" {\n  from "vsrc/base" size=2\n}' size "no property 'size'"
check_invalid "two sizes for one pool" $'vm "x" {\n  from "vsrc/base" pool=1\n}\nvm "y" {\n  from "vsrc/base" pool=2\n}' \
  pool "'pool' of 'vsrc/base' is 1 in vm \"x\""
out=$(cd "$work/bad" && "$VMCTL" --json up 2>/dev/null)
expect_eq "... positioned at the second pool" "$(jq -r '"\(.error.details.line):\(.error.details.column)"' <<<"$out")" "5:25"
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

# --- a warm pool from the VMFile (pool=N) ---
mkdir -p "$work/pool"
pool_file() { # N, or "" for no pool key
  local p=${1:+ pool=$1}
  printf 'vm "pa-w1" {\n    from "vsrc/base"%s\n}\nvm "pa-w2" {\n    from "vsrc/base"%s\n}\n' "$p" "$p" \
    >"$work/pool/VMFile.kdl"
}
pool_of() { vm pool list --json | jq -r '.[] | select(.vm == "vsrc" and .snapshot == "base") |
  "\(.ready)/\(.size) \(.project // "hand")"'; }
pool_pids() { for m in $(vm pool list --json | jq -r '.[].members[]'); do vm status --json "$m" | jq -r .pid; done; }
proj=$(cd "$work/pool" && pwd -P)/VMFile.kdl
pool_file 1
(cd "$work/pool" && vm --json up >"$work/pool.out" 2>"$work/pool.err") || fail "up with pool=1: $(cat "$work/pool.err")"
expect_eq "up with pool=1: the machines" "$(jq -r '[.[] | .name + "=" + .action] | join(",")' "$work/pool.out")" \
  "pa-w1=created,pa-w2=created"
expect_eq "... the pool is set, ready, the VMFile's" "$(pool_of)" "1/1 $proj"
pool_file 2
(cd "$work/pool" && vm up >/dev/null 2>&1) || fail "re-up with pool=2"
expect_eq "a re-up with pool=2 changes it" "$(pool_of)" "2/2 $proj"
pids=$(pool_pids)
(cd "$work/pool" && vm down >/dev/null 2>&1) || fail "down"
expect_eq "down removes the VMFile's pool" "$(pool_of)" ""
for p in $pids; do kill -0 "$p" 2>/dev/null && fail "pool hypervisor $p outlived down"; done
ok "... and its hypervisors"
# by hand: the user's; up and down leave it alone, up --adopt takes it over
vm pool vsrc/base --size 1 >/dev/null || fail "pool by hand"
(cd "$work/pool" && vm up >/dev/null 2>"$work/pool.err") || fail "up beside a pool set by hand"
grep -q "set by hand: left at size 1" "$work/pool.err" && ok "up says it leaves a pool set by hand" ||
  fail "no notice: $(cat "$work/pool.err")"
expect_eq "... at its size, the user's" "$(pool_of)" "1/1 hand"
(cd "$work/pool" && vm down >/dev/null 2>&1) || fail "down beside a pool set by hand"
expect_eq "down leaves a pool set by hand" "$(pool_of)" "1/1 hand"
(cd "$work/pool" && vm up --adopt >/dev/null 2>"$work/adopt.err") || fail "up --adopt: $(cat "$work/adopt.err")"
expect_eq "up --adopt takes it over at the file's size" "$(pool_of)" "2/2 $proj"
vm pool vsrc/base --size 2 >/dev/null || fail "pool by hand again"
expect_eq "setting it by hand makes it the user's" "$(pool_of)" "2/2 hand"
(cd "$work/pool" && vm up --adopt >/dev/null 2>&1) || fail "up --adopt again"
# the key gone: a re-up of the whole file removes the pool it set
pool_file ""
(cd "$work/pool" && vm up >/dev/null 2>&1) || fail "up without the pool key"
expect_eq "a re-up without pool= removes the VMFile's pool" "$(pool_of)" ""
(cd "$work/pool" && vm down --destroy >/dev/null 2>&1) || fail "down --destroy of the pool machines"
# a pool of a full snapshot: the machine is made, its up fails with config::invalid
vm create pa-plain >/dev/null && vm start pa-plain --wait >/dev/null && vm snapshot create pa-plain f >/dev/null ||
  fail "a full snapshot of pa-plain"
vm destroy --force pa-plain >/dev/null
printf 'vm "pa-f" {\n    from "pa-plain/f" pool=1\n}\n' >"$work/pool/VMFile.kdl"
out=$(cd "$work/pool" && vm --json up 2>/dev/null); rc=$?
expect_eq "pool= of a full snapshot: up fails" "$rc $(jq -r .error.code <<<"$out")" "1 vm_manager::config::invalid"
jq -r '.error.context[]' <<<"$out" | grep -q "warm pool of 'pa-plain/f'" && ok "... its context names the pool" || fail "message: $out"
expect_eq "... the machine was made" "$(state_of pa-f)" running
(cd "$work/pool" && vm down --destroy >/dev/null 2>&1) || fail "down --destroy of pa-f"
vm snapshot rm pa-plain f >/dev/null || fail "snapshot rm pa-plain f"
expect_eq "no pool hypervisor left" "$(pgrep -f "$VMCTL_HOME/vms/pool-" | wc -l)" 0

vm down --destroy >/dev/null || fail "down --destroy"
expect_eq "down --destroy removes the clones" "$(vm list --json | jq -r '[.[].name] | join(",")')" vsrc
vm snapshot rm vsrc base >/dev/null && ok "the snapshot is free again" || fail "snapshot rm after down --destroy"
finish
