#!/bin/bash
# The CLI contract without booting VMs: --help everywhere, usage errors (exit 2), planned commands,
# the error catalogue, --json shapes (exactly one document, errors included), global options
# before or after the command, miette-style rendering without colour off a terminal.
set -uo pipefail

: "${VMCTL:?VMCTL must name the vmctl binary}"
export LC_ALL=C.UTF-8 # the glyphs checked below (×) are those of a UTF-8 locale
command -v jq >/dev/null || { . "$(dirname "$0")/lib.sh"; skip "jq is not installed"; }

fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: got '$2', expected '$3'"; fi; }

export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-cli-basics.XXXXXX)
trap 'rm -rf "$VMCTL_HOME"' EXIT
out=$VMCTL_HOME/out err=$VMCTL_HOME/err

# run ARGS...: stdout in $out, stderr in $err, exit status in $rc
run() { "$VMCTL" "$@" >"$out" 2>"$err"; rc=$?; }

# one_json WHAT: stdout holds exactly one JSON document
one_json() {
  local n
  n=$(jq -s length <"$out" 2>/dev/null)
  expect_eq "$1: exactly one JSON document on stdout" "${n:-invalid}" 1
}

# usage_error WHAT ARGS...: exit 2, code cli::usage, all the error fields, in JSON and as text
usage_error() {
  local what=$1; shift
  run --json "$@"
  expect_eq "$what: exit" "$rc" 2
  one_json "$what"
  expect_eq "$what: code" "$(jq -r .error.code <"$out")" vm_manager::cli::usage
  expect_eq "$what: fields" "$(jq -c '.error | [has("message"), has("help"), (.details|type),
    (.notes|type), (.context|type)]' <"$out")" '[true,true,"object","array","array"]'
  [ -s "$err" ] && fail "$what: --json wrote to stderr: $(cat "$err")"
  run "$@"
  expect_eq "$what (text): exit" "$rc" 2
  [ -s "$out" ] && fail "$what (text): wrote to stdout: $(cat "$out")"
  grep -q '^Error: vm_manager::cli::usage$' "$err" && grep -q '^  × ' "$err" &&
    grep -q '^  help: ' "$err" && ok "$what: rendered" || fail "$what: rendering: $(cat "$err")"
  grep -q $'\033' "$err" && fail "$what: colour codes although stderr is not a terminal"
}

# --- help and version ---
run --help
expect_eq "--help exit" "$rc" 0
main_help=$(cat "$out")
commands="doctor image create run start stop kill pause resume destroy list status console logs exec errors"
for c in $commands; do
  grep -qE "^  $c +[a-z]" <<<"$main_help" || fail "vmctl --help does not list '$c' with a summary"
  run "$c" --help
  if [ "$rc" -eq 0 ] && grep -q "^Usage: vmctl $c" "$out" && grep -q '^Examples:' "$out"; then
    ok "$c --help"
  else
    fail "$c --help: exit $rc: $(head -3 "$out")"
  fi
  help_out=$(cat "$out")
  run help "$c"
  expect_eq "help $c is $c --help" "$(cat "$out")" "$help_out"
done
for s in build-default list; do
  run image "$s" --help
  [ "$rc" -eq 0 ] && grep -q "^Usage: vmctl image $s" "$out" && ok "image $s --help" ||
    fail "image $s --help: exit $rc"
done
run --version
[ "$rc" -eq 0 ] && grep -qE '^vmctl [0-9]+\.[0-9]+\.[0-9]+$' "$out" && ok "--version" ||
  fail "--version: $(cat "$out")"
run
expect_eq "no command: exit" "$rc" 2

# --- usage errors ---
usage_error "unknown command" frobnicate
usage_error "unknown option" list --frobnicate
usage_error "unknown option before the command" --frobnicate list
usage_error "missing NAME" status
usage_error "missing option value" create x --memory
usage_error "extra argument" status a b
usage_error "exec without command" exec somevm
run --json logs somevm --follow
expect_eq "logs --follow --json: exit" "$rc" 2
expect_eq "logs --follow --json: code" "$(jq -r .error.code <"$out")" vm_manager::cli::usage
usage_error "image without subcommand" image
# the commands `vmctl --help` lists as planned must each refuse with a usage error
planned=$("$VMCTL" --help | sed -n 's/^Planned, not implemented yet://p')
for c in $planned; do
  # shellcheck disable=SC2086
  usage_error "planned '$c'" $c x
  # shellcheck disable=SC2086
  run --json $c x
  jq -r .error.message <"$out" | grep -q 'not implemented yet' && ok "'$c' says not implemented" ||
    fail "'$c' message: $(jq -r .error.message <"$out")"
done

# --- global options anywhere before "--" ---
run list --json
expect_eq "list --json on an empty home" "$(cat "$out")" "[]"
run --json list
expect_eq "--json list on an empty home" "$(cat "$out")" "[]"
run list
[ "$rc" -eq 0 ] && [ -s "$out" ] && ok "empty list prints a line" || fail "empty list: exit $rc"
other=$(mktemp -d /tmp/vmctl-cli-basics-home.XXXXXX)
# list creates nothing; its note names the home it read
run list --home "$other"
grep -qF "no vmctl home at '$other'" "$err" && ok "--home after the command is used" ||
  fail "--home ignored: $(cat "$err")"
rm -rf "$other"

# --- library errors: exit 1, same JSON shape ---
run status nosuchvm --json
expect_eq "not_found: exit" "$rc" 1
one_json "not_found"
expect_eq "not_found: code" "$(jq -r .error.code <"$out")" vm_manager::vm::not_found
run status nosuchvm
grep -q '^Error: vm_manager::vm::not_found$' "$err" && ok "not_found rendered" ||
  fail "not_found rendering: $(cat "$err")"
run --json create bad --vcpus many
expect_eq "--vcpus many: exit" "$rc" 1
expect_eq "--vcpus many: code" "$(jq -r .error.code <"$out")" vm_manager::config::invalid
run --json create bad --env NOEQUALS
expect_eq "--env without '=': code" "$(jq -r .error.code <"$out")" vm_manager::config::invalid
run --json create bad --port nonsense
expect_eq "--port nonsense: code" "$(jq -r .error.code <"$out")" vm_manager::config::invalid
run --json list
expect_eq "nothing created by bad input" "$(cat "$out")" "[]"

# --- the error catalogue ---
run errors
[ "$rc" -eq 0 ] && grep -q 'vm_manager::vm::not_found' "$out" && grep -q 'vm_manager::timeout' "$out" &&
  ok "errors lists the catalogue" || fail "errors: exit $rc"
run errors --json
one_json "errors --json"
expect_eq "errors --json entries have code, trigger, help" \
  "$(jq '[.[] | select(has("code") and has("trigger") and has("help"))] | length == length' <"$out")" true
expect_eq "errors --json has the seed codes" \
  "$(jq '[.[].code] | contains(["vm_manager::qemu::spawn_failed", "vm_manager::io", "vm_manager::exec::unavailable"])' <"$out")" true
run errors vm_manager::qemu::spawn_failed
[ "$rc" -eq 0 ] && grep -q 'qemu-system-x86_64' "$out" && ok "errors CODE explains" ||
  fail "errors CODE: $(cat "$out")"
run errors vm::not_found --json
expect_eq "errors short code" "$(jq -r .code <"$out")" vm_manager::vm::not_found
run errors vm_manager::no_such_code --json
expect_eq "unknown code: exit" "$rc" 1
one_json "unknown code"
[ "$(jq -r .error.code <"$out")" != null ] && ok "unknown code is an error object" ||
  fail "unknown code: $(cat "$out")"

# --- other JSON shapes ---
run image list --json
[ "$rc" -eq 0 ] && [ "$(jq -r type <"$out")" == array ] && ok "image list --json is an array" ||
  fail "image list --json: exit $rc: $(cat "$out")"
run doctor --json
one_json "doctor --json"
expect_eq "doctor --json entries" \
  "$(jq '[.[] | select(has("name") and has("status") and has("summary") and has("help"))] | length == length' <"$out")" true
n_fail=$(jq '[.[] | select(.status == "fail")] | length' <"$out")
if [ "$n_fail" -gt 0 ]; then expect_eq "doctor exit with a failed check" "$rc" 1
else expect_eq "doctor exit without failed checks" "$rc" 0; fi

if [ "$fails" -eq 0 ]; then echo "PASS: cli-basics"; exit 0; fi
echo "FAILED: cli-basics ($fails checks)"; exit 1
