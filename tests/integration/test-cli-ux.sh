#!/bin/bash
# What users expect at the shell (issues 16 and 17): exec/run options after the command's first
# word are the command's; an error's cause (errno) is shown; a mistyped --home creates nothing; a
# failed write to stdout exits 1; no byte above 0x7f under LC_ALL=C; terminal escapes from
# elsewhere are escaped; completion scripts load; several names per command; strict durations;
# --net tap with a bad --allow refused at create; exec --json bounded; doctor reports a missing default guest and a
# damaged store. Part 1 needs nothing; part 2 the default guest (create only); part 3 boots a VM.
source "$(dirname "$0")/lib.sh"
command -v jq >/dev/null || skip "jq is not installed"

setup_home
tmp=$(mktemp -d /tmp/vmctl-cli-ux-tmp.XXXXXX)
trap 'cleanup; rm -rf "$tmp"' EXIT
out=$tmp/out err=$tmp/err

# run ARGS...: stdout in $out, stderr in $err, exit status in $rc
run() { "$VMCTL" "$@" >"$out" 2>"$err"; rc=$?; }

# --- part 1: no VM ---

# the cause (errno) of a failure: text and JSON
run --home /sys create x
grep -q '^  caused by: Operation not permitted (EPERM)$\|^  caused by: Permission denied (EACCES)$\|^  caused by: Read-only file system (EROFS)$' "$err" &&
  ok "create with --home /sys: caused by line" || fail "create with --home /sys: $(cat "$err")"
run --json --home /sys create x
expect_eq "create with --home /sys --json: errno is a number" "$(jq -r '.error.errno|type' <"$out")" number
jq -e '.error.cause | test("\\(E[A-Z]+\\)$")' <"$out" >/dev/null &&
  ok "create with --home /sys --json: cause" || fail "no .error.cause: $(cat "$out")"
run --json errors nope
expect_eq "every error document has errno and cause" \
  "$(jq -r '.error | has("errno") and has("cause")' <"$out")" true

# read-only commands create nothing; --home /sys lists nothing instead of failing
nohome=$tmp/typo/home
for args in "list" "list --json" "list -q" "status x" "logs x" "doctor" "image list" \
  "image inspect default" "stop x" "destroy x" "exec x ls" "kill x"; do
  run --home "$nohome" $args
  [ -e "$tmp/typo" ] && { fail "'$args' with a mistyped --home created $(find "$tmp/typo")"; rm -rf "$tmp/typo"; continue; }
  ok "'$args' with a mistyped --home creates nothing (exit $rc)"
done
run --home "$nohome" list
grep -q "no vmctl home at '$nohome'" "$err" && ok "list: says the home does not exist" ||
  fail "list in a missing home: $(cat "$err")"
run --home "$nohome" --json status x
expect_eq "status in a missing home: vm::not_found" "$(jq -r .error.code <"$out")" vm_manager::vm::not_found
run --home /sys list
expect_eq "list --home /sys: exit" "$rc" 0
[ -e /sys/vms ] || [ -e /sys/vmctl.db ] && fail "list --home /sys created something in /sys"

# a full stdout exits 1 with vm_manager::io
"$VMCTL" list >/dev/full 2>"$err"; rc=$?
expect_eq "list > /dev/full: exit" "$rc" 1
grep -q '^Error: vm_manager::io$' "$err" && grep -q 'cannot write to standard output' "$err" &&
  ok "list > /dev/full: io error on stderr" || fail "list > /dev/full: $(cat "$err")"
"$VMCTL" --json list >/dev/full 2>"$err"; rc=$?
expect_eq "list --json > /dev/full: exit" "$rc" 1
"$VMCTL" --help >/dev/full 2>/dev/null; rc=$?
expect_eq "--help > /dev/full: exit" "$rc" 1
"$VMCTL" errors >/dev/full 2>/dev/null; rc=$?
expect_eq "errors > /dev/full: exit" "$rc" 1

# LC_ALL=C: ASCII only, in help, errors, doctor and tables
nonascii() { LC_ALL=C grep -c -P '[\x80-\xff]' "$@" 2>/dev/null | awk -F: '{s += $NF} END {print s + 0}'; }
: >"$tmp/c-all"
for c in "" doctor image create run start stop kill pause resume destroy list status console logs exec cp ssh \
  errors help up down reload provision kdl completion "image build-default" "kdl fmt"; do
  LC_ALL=C "$VMCTL" $c --help >>"$tmp/c-all" 2>&1
done
LC_ALL=C "$VMCTL" doctor >>"$tmp/c-all" 2>&1
LC_ALL=C "$VMCTL" create $'caf\xc3\xa9' >>"$tmp/c-all" 2>&1
LC_ALL=C "$VMCTL" create 'x y' >>"$tmp/c-all" 2>&1
LC_ALL=C "$VMCTL" errors >>"$tmp/c-all" 2>&1
LC_ALL=C "$VMCTL" frobnicate >>"$tmp/c-all" 2>&1
expect_eq "LC_ALL=C: no byte >= 0x80 in vmctl's output" "$(nonascii "$tmp/c-all")" 0
grep -q '^  x invalid name ' "$tmp/c-all" && ok "LC_ALL=C: the cross is ASCII" ||
  fail "LC_ALL=C: no ASCII cross: $(grep -m2 invalid "$tmp/c-all")"
LC_ALL=C.UTF-8 "$VMCTL" create 'x y' 2>"$err"
grep -q '^  × invalid name' "$err" && ok "C.UTF-8: the cross is ×" || fail "C.UTF-8: $(cat "$err")"

# terminal escapes in a message are escaped (renderer; part 3 has one from the guest)
"$VMCTL" create $'a\e]0;pwned\a\e[31mb' 2>"$err"
grep -q $'\e' "$err" && fail "an ESC reached stderr: $(cat -v "$err")"
grep -qF 'a\e]0;pwned\x07\e[31mb' "$err" && ok "ESC and BEL in a message are escaped" ||
  fail "escaping: $(cat -v "$err")"
"$VMCTL" create $'a\xe2\x80\xaeb' 2>"$err"
grep -qF 'a\u{202e}b' "$err" && ok "a bidirectional override is escaped" || fail "bidi: $(cat -v "$err")"

# durations
for t in 1e308 inf nan 0 -1 0x10 1.5.5 8d 604801; do
  expect_code "--timeout $t" vm_manager::config::invalid exec --timeout "$t" x ls
done
expect_code "stop --timeout 1e308" vm_manager::config::invalid stop x --timeout 1e308
run --json exec --timeout 2m x ls
expect_eq "--timeout 2m is accepted (then the VM is missing)" "$(jq -r .error.code <"$out")" vm_manager::vm::not_found

# options after the command's first word are not vmctl's (no VM needed to see that)
run exec x grep -i root /etc/passwd --json --help
expect_eq "exec x grep -i ... --json --help: not vmctl's help or JSON" "$(head -c1 "$out")" ""
grep -q '^Error: vm_manager::vm::not_found$' "$err" && ok "exec x CMD --help: the VM is looked up" ||
  fail "exec x CMD --help: $(cat "$err" "$out" | head -5)"
run exec --json x -- ls
expect_eq "exec --json before the command is vmctl's" "$(jq -r .error.code <"$out")" vm_manager::vm::not_found

# completion scripts
bash -c "source <(\"$VMCTL\" completion bash) && complete -p vmctl" >"$out" 2>"$err"
grep -q 'complete .*-F _vmctl vmctl' "$out" && ok "bash completion loads" || fail "bash completion: $(cat "$err")"
words=$(bash -c "source <(\"$VMCTL\" completion bash); COMP_WORDS=(vmctl de); COMP_CWORD=1; _vmctl; echo \${COMPREPLY[*]}")
expect_eq "bash: 'vmctl de' completes" "$words" destroy
words=$(bash -c "source <(\"$VMCTL\" completion bash); COMP_WORDS=(vmctl exec web --ma); COMP_CWORD=3; _vmctl; echo \${COMPREPLY[*]}")
expect_eq "bash: exec options come from its help" "$words" --max-output
if command -v zsh >/dev/null; then
  "$VMCTL" completion zsh >"$tmp/_vmctl" && zsh -n "$tmp/_vmctl" && ok "zsh completion parses" ||
    fail "zsh completion does not parse"
else
  echo "note: zsh is not installed: its completion is not parsed here"
fi
if command -v fish >/dev/null; then
  "$VMCTL" completion fish | fish -n && ok "fish completion parses" || fail "fish completion does not parse"
else
  echo "note: fish is not installed: its completion is not parsed here"
fi
expect_code "completion tcsh" vm_manager::config::invalid completion tcsh

# every command's --help has an example
for c in doctor image create run start stop kill pause resume destroy list status console logs exec cp \
  ssh errors help up down reload provision kdl completion "image build-default" "image list" \
  "image pull" "image import" "image inspect" "image rm" "image prune" "image convert" "kdl fmt"; do
  # the help captured first: grep -q stops reading at its match, and vmctl's write to the closed
  # pipe is an error that pipefail would report as a missing example
  h=$("$VMCTL" $c --help) && grep -q '^Examples:' <<<"$h" || fail "'vmctl $c --help' has no example"
done
ok "every --help has examples"

# man pages (built from docs/cli.md next to the vmctl being tested)
mandir=$(dirname "$VMCTL")/../../docs
if [ -f "$mandir/vmctl.1" ]; then
  [ "$(ls "$mandir"/vmctl-*.1 | wc -l)" -ge 20 ] && ok "one man page per command" ||
    fail "man pages: $(ls "$mandir")"
  if command -v groff >/dev/null; then
    bad=0
    for m in "$mandir"/vmctl*.1; do
      grep -q '^\.so ' "$m" && continue
      w=$(groff -man -Tutf8 -ww -z "$m" 2>&1)
      [ -z "$w" ] || { fail "groff warns about $(basename "$m"): $w"; bad=1; }
    done
    [ "$bad" -eq 0 ] && ok "groff renders the man pages without warnings"
  else
    echo "note: groff is not installed: the man pages are not rendered here"
  fi
else
  echo "note: no man pages next to $VMCTL (python3 missing at build time?)"
fi

# doctor: a damaged store is a finding, and the other checks still run
bad=$tmp/bad-home
mkdir -p "$bad" && echo "not a database" >"$bad/vmctl.db"
run --home "$bad" --json doctor
expect_eq "doctor on a damaged store: exit" "$rc" 1
expect_eq "doctor: store fails" "$(jq -r '.[] | select(.name == "store") | .status' <"$out")" fail
jq -e '.[] | select(.name == "store") | .summary | test("store::corrupt")' <"$out" >/dev/null &&
  ok "doctor: the store finding names store::corrupt" || fail "doctor store: $(cat "$out")"
[ "$(jq '[.[] | select(.name == "qemu" or .name == "tcg")] | length' <"$out")" -eq 2 ] &&
  ok "doctor goes on after the store" || fail "doctor stopped: $(cat "$out")"
run --home "$tmp/empty-home" --json doctor
expect_eq "doctor without the default guest: a finding" \
  "$(jq -r '.[] | select(.name == "default-guest") | .status' <"$out")" warn
run --home "$tmp/empty-home" doctor
grep -q "no default guest to boot yet" "$out" && ok "doctor's summary says so" || fail "doctor: $(tail -2 "$out")"
[ -e "$tmp/empty-home" ] && fail "doctor created the home"

# --- part 2: the default guest (create, no boot) ---
if [ -z "${VMCTL_TEST_IMAGES:-}" ] || [ ! -f "$VMCTL_TEST_IMAGES/default/vmlinux" ]; then
  [ "$fails" -eq 0 ] || finish
  [ "${CI:-}" == true ] && { echo "FAIL: the default guest was not built (VMCTL_TEST_IMAGES)"; exit 1; }
  skip "parts 2 and 3: the default guest was not built (run scripts/test.sh, which builds it first)"
fi
need_guest
run --json doctor
expect_eq "doctor with the default guest" "$(jq -r '.[] | select(.name == "default-guest") | .status' <"$out")" ok

expect_code "create --net tap --allow BAD" vm_manager::network::config_invalid create tapvm \
  --net tap --allow 10.0.0.0/33
expect_eq "create --net tap --allow BAD left nothing" "$(vm list -q)" ""
[ -e "$VMCTL_HOME/vms/tapvm" ] && fail "create --net tap --allow BAD left a VM directory"
printf 'vm "tapvm" {\n  network "tap" {\n    allow "10.0.0.0/33"\n  }\n}\n' >"$tmp/VMFile.kdl"
expect_code "VMFile network tap, bad allow" vm_manager::vmfile::validation up --file "$tmp/VMFile.kdl"

for n in a b c; do vm create "$n" >/dev/null 2>&1 || fail "create $n"; done
expect_eq "list -q" "$(vm list -q | tr '\n' ' ')" "a b c "
expect_eq "list -q --json" "$(vm list -q --json | jq -c .)" '["a","b","c"]'
run destroy a nope b
expect_eq "destroy a nope b: exit" "$rc" 1
grep -q "^Destroyed VM 'a'$" "$out" && grep -q "^Destroyed VM 'b'$" "$out" &&
  ok "destroy a nope b: a and b reported" || fail "destroy a nope b: $(cat "$out")"
grep -q "no VM named 'nope'" "$err" && ok "destroy a nope b: nope's error" || fail "destroy: $(cat "$err")"
expect_eq "destroy a nope b: only c is left" "$(vm list -q)" c
vm create a >/dev/null 2>&1
run --json destroy a c
expect_eq "destroy a c --json: exit" "$rc" 0
expect_eq "destroy a c --json: an array" "$(jq -c '[.[] | [.name, .destroyed]]' <"$out")" '[["a",true],["c",true]]'
vm create a >/dev/null 2>&1
run --json destroy a zz
expect_eq "destroy a zz --json: the failed one" "$(jq -r '.[1] | "\(.name) \(.error.code)"' <"$out")" \
  "zz vm_manager::vm::not_found"
run --json destroy zz
expect_eq "destroy zz --json: one name keeps the error document" "$(jq -r .error.code <"$out")" vm_manager::vm::not_found

# --- part 3: a running VM ---
run run ux --timeout 120
[ "$rc" -eq 0 ] || { fail "run ux: $(cat "$err")"; finish; }
# the options after the command's first word reach the guest, unchanged
run exec ux sh -c 'echo "$@"' x -i -v --json --help --env A=B -- end
expect_eq "exec: options after the command are the command's" "$(cat "$out")" "-i -v --json --help --env A=B -- end"
run exec ux grep -i ROOT /etc/passwd
expect_eq "exec ux grep -i ROOT /etc/passwd: exit" "$rc" 0
grep -q '^root:' "$out" && ok "grep -i reached the guest" || fail "grep -i: $(cat "$out" "$err")"
run exec ux --json -- echo hi
expect_eq "exec --json before the command" "$(jq -r .stdout <"$out")" "hi"
# a guest-controlled message with terminal escapes is escaped (a missing --cwd is the agent's
# error; a missing command is the command's own stderr, 127, passed through as it is)
run exec ux --cwd $'/\e]0;pwned\a\e[31mx' -- true
expect_eq "exec in a directory named with ESC: exit" "$rc" 1
grep -q $'\e' "$err" && fail "the guest's ESC reached the terminal: $(cat -v "$err")"
grep -qF "cannot change directory to '/\\e]0;pwned\\x07\\e[31mx'" "$err" && ok "the guest's message is escaped" ||
  fail "guest message: $(cat -v "$err")"
run --json exec ux --cwd $'/\e]0;x\a' -- true
jq -e '.error.message | contains("\u001b]0;x\u0007")' <"$out" >/dev/null &&
  ok "--json keeps the message as it is (JSON escapes it)" || fail "json: $(cat "$out")"
# exec --json holds at most --max-output per stream
run --json exec ux --max-output 1 -- sh -c 'head -c 3000000 /dev/zero'
expect_eq "exec --json past --max-output: exit" "$rc" 1
expect_eq "exec --json past --max-output: io" "$(jq -r .error.code <"$out")" vm_manager::io
expect_eq "exec --json past --max-output: stream" "$(jq -r .error.details.stream <"$out")" stdout
# ... and the command is stopped then, not waited for
vm exec ux --json --max-output 1 -- sh -c 'head -c 2000000 /dev/zero; sleep 3; touch /tmp/ux-marker' >/dev/null
sleep 5
vm exec ux test -e /tmp/ux-marker
expect_eq "exec --json past --max-output: the command was stopped" "$?" 1
run --json exec ux --max-output 1 -- sh -c 'head -c 1000000 /dev/zero | tr "\0" a'
expect_eq "exec --json under --max-output" "$(jq -r '.stdout | length' <"$out")" 1000000
run --json exec -i ux -- wc -c <<<"hello"
expect_eq "exec --json -i streams stdin" "$(jq -r .stdout <"$out" | tr -d ' \n')" 6
# several names
run pause ux ux
expect_eq "pause ux ux: exit (the second is already paused)" "$rc" 1
grep -q "^Paused VM 'ux'$" "$out" && ok "pause ux ux: the first one paused" || fail "pause: $(cat "$out")"
vm resume ux >/dev/null
# run: options after the command's first word are the command's too
run run ux2 --rm --timeout 120 echo --json -v --rm
expect_eq "run NAME --rm CMD --json -v --rm: the command's" "$(cat "$out")" "--json -v --rm"
expect_eq "run --rm removed ux2" "$(vm list -q | grep -c ux2)" 0
vm destroy --force ux >/dev/null

finish
