#!/bin/bash
# VMFile.kdl environments: up (twice, after stop), provision, reload, down [--destroy], a failing
# provisioner, two machines in parallel, validation errors with positions, not_found. Two booted
# VMs are shared by all the checks.
. "$(dirname "$0")/lib.sh"

work=$(mktemp -d /tmp/vmctl-vmfile-work.XXXXXX)
trap 'cleanup; rm -rf "$work"' EXIT

# --- without VMs: not_found, parse and validation errors ---
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d "/tmp/vmctl-$TEST_NAME.XXXXXX")
mkdir -p "$work/empty"
cd "$work/empty" || exit 1
expect_code "no VMFile.kdl here" vm_manager::vmfile::not_found up
cd / || exit 1
expect_code "--file missing" vm_manager::vmfile::not_found up --file "$work/nope.kdl"

# check_invalid WHAT FILE-CONTENT LINE COLUMN FIELD [MESSAGE-PART]
check_invalid() {
  local what=$1 content=$2 line=$3 col=$4 field=$5 part=${6:-}
  mkdir -p "$work/bad" && printf '%s\n' "$content" >"$work/bad/VMFile.kdl"
  local out rc
  out=$(cd "$work/bad" && "$VMCTL" --json up 2>/dev/null); rc=$?
  local got
  got=$(jq -r '[.error.code, .error.details.line, .error.details.column, .error.details.field // "-"] | join(" ")' <<<"$out" 2>/dev/null)
  expect_eq "validation: $what" "$rc $got" "1 vm_manager::vmfile::validation $line $col $field"
  jq -r .error.message <<<"$out" | grep -q "^VMFile.kdl:$line:$col: " &&
    ok "$what: message is positioned" || fail "$what: message not positioned: $out"
  jq -r '.error.notes[0]' <<<"$out" | grep -q '\^' && ok "$what: snippet with a caret" ||
    fail "$what: no snippet: $out"
  if [ -n "$part" ]; then
    jq -r .error.message <<<"$out" | grep -qF -- "$part" && ok "$what: says '$part'" ||
      fail "$what: message lacks '$part': $(jq -r .error.message <<<"$out")"
  fi
}
check_invalid "memory too small" $'vm "x" {\n    memory 16\n}' 2 12 memory "at least 32 MiB"
check_invalid "unknown field" $'vm "x" {\n    vcpus 1\n    mem 16\n}' 3 5 mem "allowed are image"
check_invalid "vcpus not a number" $'vm "x" {\n  vcpus "two"\n}' 2 9 vcpus "integer from 1"
check_invalid "network value" $'vm "x" {\n  network "bridge"\n}' 2 11 network '"user", "tap", "none"'
check_invalid "bad port" $'vm "x" {\n  port "80"\n}' 2 8 port "HOST:GUEST"
check_invalid "bad allow" $'vm "x" {\n  network "tap" {\n    allow "10.0.0.0/33"\n  }\n}' 3 11 allow "allow"
check_invalid "allow without tap" $'vm "x" {\n  network "user" {\n    allow "10.0.0.0/8"\n  }\n}' 3 5 allow "only \"tap\""
check_invalid "disk-iops not a number" $'vm "x" {\n  disk-iops "many"\n}' 2 13 disk-iops "integer from 1"
check_invalid "bad env name" $'vm "x" {\n  env A-B="b"\n}' 2 7 env "[A-Za-z_]"
check_invalid "two image sources" $'vm "x" {\n  image "debian"\n  kernel "/etc/hostname"\n}' 3 3 kernel "at most one image source"
check_invalid "initrd without kernel" $'vm "x" {\n  initrd "/etc/hostname"\n}' 2 3 initrd "needs 'kernel'"
check_invalid "duplicate vm" $'vm "x"\nvm "x"' 2 4 name "defined twice"
check_invalid "bad vm name" $'vm "-x"' 1 4 name "invalid"
check_invalid "unknown top-level node" $'vm "x"\nmachine "y"' 2 1 - "only vm"
check_invalid "unknown provisioner" $'vm "x" {\n  provision "ansible"\n}' 2 13 provision '"shell" or "file"'
check_invalid "shell without command" $'vm "x" {\n  provision "shell"\n}' 2 3 inline "exactly one of inline"
check_invalid "inline and script" $'vm "x" {\n  provision "shell" {\n    inline "true"\n    script "/etc/hostname"\n  }\n}' 2 3 inline "exactly one of inline"
check_invalid "missing script" $'vm "x" {\n  provision "shell" {\n    script "./nope.sh"\n  }\n}' 3 12 script "does not exist"
check_invalid "file without destination" $'vm "x" {\n  provision "file" { source "/etc/hostname"; }\n}' 2 3 destination "needs both source"
check_invalid "field given twice" $'vm "x" {\n  vcpus 1\n  vcpus 2\n}' 3 3 vcpus "only once"
check_invalid "no machines" '// nothing' 1 1 - "describes no machine"

mkdir -p "$work/parse" && printf 'vm "x" {\n    vcpus 1\n' >"$work/parse/VMFile.kdl"
out=$(cd "$work/parse" && "$VMCTL" --json up 2>/dev/null)
expect_eq "parse error code" "$(jq -r .error.code <<<"$out")" vm_manager::vmfile::parse_failed
jq -r .error.message <<<"$out" | grep -q '^VMFile.kdl:[0-9]*:[0-9]*: ' && ok "parse error positioned" ||
  fail "parse error not positioned: $out"
# image-url is pulled before create; a failed pull creates nothing and says which VM it was for.
mkdir -p "$work/url" && printf 'vm "u" {\n    image-url "file://%s/missing.qcow2"\n}\n' "$work" >"$work/url/VMFile.kdl"
expect_code "image-url pull fails" vm_manager::image::download_failed up --file "$work/url/VMFile.kdl"
jq -r '.error.context[]' <<<"$LAST_JSON" | grep -q "while pulling the image of VM 'u'" &&
  ok "pull failure names the VM" || fail "pull failure context: $LAST_JSON"
expect_eq "nothing created by invalid files" "$(vm list --json | jq length)" 0
rm -rf "$VMCTL_HOME"

# --- with VMs ---
[ "$fails" -eq 0 ] || finish # a skip below must not hide failures above
need_guest
setup_home
trap 'cleanup; rm -rf "$work"' EXIT
env_dir="$work/env"
mkdir -p "$env_dir/scripts"
printf 'echo script-ran\necho script-err >&2\n' >"$env_dir/scripts/setup.sh"
echo "the payload" >"$env_dir/payload.txt"
cat >"$env_dir/VMFile.kdl" <<'EOF'
// two machines, brought up in parallel
vm "vf-a" {
    memory "256M"
    env GREETING="hello"
    provision "shell" {
        inline "echo run >> /tmp/count; echo $GREETING-from-a"
    }
    provision "shell" {
        script "./scripts/setup.sh"
    }
    provision "file" {
        source "payload.txt"
        destination "/tmp/payload.txt"
    }
}
vm "vf-b" {
    provision "shell" { inline "echo b-up; echo run >> /tmp/count"; }
}
EOF
cd "$env_dir" || exit 1

t0=$(date +%s.%N)
vm --json up >"$work/up1.json" 2>"$work/up1.err"; rc=$?
t1=$(date +%s.%N)
expect_eq "up exit" "$rc" 0
expect_eq "up actions" "$(jq -r '[.[] | .name + "=" + .action] | join(",")' "$work/up1.json")" "vf-a=created,vf-b=created"
expect_eq "up provisioned" "$(jq -r '[.[] | .provisioned, .steps] | join(",")' "$work/up1.json")" "true,3,true,1"
grep -qx '\[vf-a\] hello-from-a' "$work/up1.err" && ok "streamed with [name] prefix" ||
  fail "no '[vf-a] hello-from-a' line: $(cat "$work/up1.err")"
grep -qx '\[vf-a\] script-err' "$work/up1.err" && ok "script stderr streamed" || fail "script stderr missing"
grep -qx '\[vf-b\] b-up' "$work/up1.err" && ok "second machine streamed" || fail "no [vf-b] b-up"
n=$(grep -c 'KVM is not usable' "$work/up1.err")
[ "$n" -le 1 ] && ok "a notice is printed once, not once per machine ($n)" ||
  fail "the KVM notice was printed $n times"
# Parallel: the whole run took less than the two machines' times added up.
sum=$(jq '[.[].seconds] | add' "$work/up1.json")
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
awk -v w="$wall" -v s="$sum" 'BEGIN { exit !(w < s) }' && ok "machines came up in parallel (wall $wall s < sum $sum s)" ||
  fail "not parallel: wall $wall s, sum of machines $sum s"
expect_eq "vf-a running" "$(state_of vf-a)" running
expect_eq "vf-b running" "$(state_of vf-b)" running
expect_eq "file provisioner" "$(vm exec vf-a -- cat /tmp/payload.txt)" "the payload"
vm logs vf-a --provision | grep -qx 'hello-from-a' && ok "provision.log has the output" ||
  fail "logs --provision: $(vm logs vf-a --provision)"
vm logs vf-a --provision | grep -q '^==> step 3/3 done' && ok "provision.log has the steps" ||
  fail "logs --provision lacks step lines"

pid_a=$(vm status --json vf-a | jq -r .pid)
out=$(vm --json up 2>"$work/up2.err")
expect_eq "second up does nothing" "$(jq -r '[.[] | .action + "/" + (.provisioned|tostring)] | join(",")' <<<"$out")" "unchanged/false,unchanged/false"
expect_eq "no provisioner ran again" "$(vm exec vf-a -- cat /tmp/count | wc -l)" 1
expect_eq "same QEMU" "$(vm status --json vf-a | jq -r .pid)" "$pid_a"
[ -s "$work/up2.err" ] && fail "second up printed: $(cat "$work/up2.err")" || ok "second up is silent"

vm stop vf-a --timeout 20 >/dev/null || fail "stop vf-a"
out=$(vm --json up 2>/dev/null)
expect_eq "up after stop" "$(jq -r '[.[] | .name + "=" + .action + "/" + (.steps|tostring)] | join(",")' <<<"$out")" "vf-a=started/3,vf-b=unchanged/0"
expect_eq "restarted and provisioned" "$(vm exec vf-a -- cat /tmp/count | wc -l)" 1

out=$(vm --json provision --name vf-b 2>/dev/null)
expect_eq "provision --name" "$(jq -r '[.[] | .name + "=" + .action + "/" + (.steps|tostring)] | join(",")' <<<"$out")" "vf-b=provisioned/1"
expect_eq "provisioned again" "$(vm exec vf-b -- cat /tmp/count | wc -l)" 2

pid_a=$(vm status --json vf-a | jq -r .pid)
out=$(vm --json reload --name vf-a 2>/dev/null)
expect_eq "reload" "$(jq -r '[.[] | .name + "=" + .action + "/" + (.provisioned|tostring)] | join(",")' <<<"$out")" "vf-a=started/true"
[ "$(vm status --json vf-a | jq -r .pid)" != "$pid_a" ] && ok "reload restarted QEMU" || fail "reload kept pid $pid_a"
expect_eq "vf-b untouched by reload --name vf-a" "$(vm exec vf-b -- cat /tmp/count | wc -l)" 2

expect_code "--name not in the file" vm_manager::vm::not_found up --name nosuch

# Machines belong to the VMFile that made them (its path): the variants below replace the
# content of the same file and pick vf-b with --name.
cp "$env_dir/VMFile.kdl" "$work/orig.kdl"
# A shell step as another guest user (`user`): uid, gid and HOME are the user's.
cat >"$env_dir/VMFile.kdl" <<'EOF'
vm "vf-b" {
    provision "shell" { inline "echo $(id -u):$(id -g):$HOME > /tmp/who-$(id -u)"; user "1000:1001"; }
}
EOF
vm provision --name vf-b >/dev/null 2>&1 || fail "provision with user"
expect_eq "provision step as user 1000:1001" "$(vm exec vf-b -- cat /tmp/who-1000)" "1000:1001:/"

# A failing provisioner: step 2 of 3 exits 7; step 3 must not run.
cat >"$env_dir/VMFile.kdl" <<'EOF'
vm "vf-b" {
    provision "shell" { inline "echo first"; }
    provision "shell" { inline "echo about-to-fail; exit 7"; }
    provision "shell" { inline "touch /tmp/never"; }
}
EOF
expect_code "failing provisioner" vm_manager::provision::failed provision --name vf-b
expect_eq "failure details" "$(jq -r '.error.details | [.vm, .step, .kind, .exit_code] | map(tostring) | join(",")' <<<"$LAST_JSON")" "vf-b,2,shell,7"
jq -r .error.message <<<"$LAST_JSON" | grep -q "provisioner 2 (shell) of VM 'vf-b' exited with status 7" &&
  ok "failure message names step and status" || fail "message: $(jq -r .error.message <<<"$LAST_JSON")"
vm exec vf-b -- test -e /tmp/never; expect_eq "later step did not run" "$?" 1
out=$(vm provision --name vf-b 2>&1 >/dev/null)
grep -q 'provision::failed' <<<"$out" && ok "text error rendered" || fail "no text error: $out"
vm logs vf-b --provision | grep -q '^==> step 2/3 failed: exit status 7' && ok "failure in provision.log" ||
  fail "provision.log lacks the failure"

# A step past its timeout is killed and fails.
cat >"$env_dir/VMFile.kdl" <<'EOF'
vm "vf-b" {
    provision "shell" { inline "sleep 60"; timeout 1; }
}
EOF
t0=$(date +%s)
expect_code "step timeout" vm_manager::provision::failed provision --name vf-b
[ $(($(date +%s) - t0)) -lt 30 ] && ok "timed-out step ended early" || fail "timeout took $(($(date +%s) - t0)) s"
jq -r '.error.notes[]' <<<"$LAST_JSON" | grep -q 'vm_manager::timeout' && ok "timeout is the cause" ||
  fail "no timeout cause: $LAST_JSON"
[ "$(jq -r .error.details.exit_code <<<"$LAST_JSON")" != 0 ] && ok "timed-out step has a non-zero status" ||
  fail "timed-out status 0"

cp "$work/orig.kdl" "$env_dir/VMFile.kdl"
vm pause vf-b >/dev/null
expect_code "provision on a paused vm" vm_manager::vm::invalid_state provision --name vf-b
out=$(vm --json up --name vf-b 2>/dev/null)
expect_eq "up resumes a paused vm" "$(jq -r '.[0].action' <<<"$out")" resumed

out=$(vm --json down 2>/dev/null)
expect_eq "down" "$(jq -r '[.[] | .name + "=" + .action] | join(",")' <<<"$out")" "vf-a=stopped,vf-b=stopped"
expect_eq "stopped a" "$(state_of vf-a)" stopped
out=$(vm --json down 2>/dev/null)
expect_eq "down again" "$(jq -r '[.[] | .action] | join(",")' <<<"$out")" "unchanged,unchanged"
expect_code "provision on a stopped vm" vm_manager::vm::invalid_state provision --name vf-a
out=$(vm --json down --destroy 2>/dev/null)
expect_eq "down --destroy" "$(jq -r '[.[] | .name + "=" + .action] | join(",")' <<<"$out")" "vf-a=destroyed,vf-b=destroyed"
expect_eq "no VMs left" "$(vm list --json | jq length)" 0
out=$(vm --json down --destroy 2>/dev/null)
expect_eq "down --destroy again" "$(jq -r '[.[] | .action] | join(",")' <<<"$out")" "unchanged,unchanged"

finish
