#!/bin/bash
# `vmctl kdl fmt` against the conformance documents in tests/kdl, the way the public KDL test
# suites judge a parser: every input/NAME.kdl with an expected_kdl/NAME.kdl must print exactly
# that (byte for byte) and exit 0; every input without one must exit 1 with
# vm_manager::vmfile::parse_failed pointing at FILE:LINE:COLUMN and a caret snippet. Then the
# command's contract: --json, standard input, --kdl-version, usage errors, a missing file.
set -uo pipefail

: "${VMCTL:?VMCTL must name the vmctl binary}"
export LC_ALL=C.UTF-8 # the glyphs checked below (×) are those of a UTF-8 locale
command -v jq >/dev/null || { . "$(dirname "$0")/lib.sh"; skip "jq is not installed"; }
suite=$(cd "$(dirname "$0")/../kdl" && pwd)
[ -d "$suite/input" ] || { echo "FAIL: no $suite/input"; exit 1; }

fails=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect_eq() { if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: got '$2', expected '$3'"; fi; }

tmp=$(mktemp -d /tmp/vmctl-kdl-fmt.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out err=$tmp/err
run() { "$VMCTL" "$@" >"$out" 2>"$err"; rc=$?; }

# --- the suite ---
cd "$suite"
valid=0 invalid=0 bad=0
for input in input/*.kdl; do
  name=$(basename "$input")
  run kdl fmt "$input"
  if [ -f "expected_kdl/$name" ]; then
    valid=$((valid + 1))
    if [ "$rc" -ne 0 ]; then
      fail "$name: exit $rc: $(grep '×' "$err")"; bad=$((bad + 1))
    elif ! cmp -s "$out" "expected_kdl/$name"; then
      fail "$name: output differs: $(diff <(cat -A "expected_kdl/$name") <(cat -A "$out") | head -4)"
      bad=$((bad + 1))
    elif [ -s "$err" ]; then
      fail "$name: wrote to stderr: $(cat "$err")"; bad=$((bad + 1))
    fi
  else
    invalid=$((invalid + 1))
    # the message names the file, a line and a column; the snippet repeats them and has a caret
    if [ "$rc" -ne 1 ] || [ -s "$out" ] ||
       ! grep -q '^Error: vm_manager::vmfile::parse_failed$' "$err" ||
       ! grep -qE "^  × input/$name:[0-9]+:[0-9]+: ." "$err"; then
      fail "$name: expected a parse_failed error (exit $rc): $(head -c 400 "$err")"
      bad=$((bad + 1))
      continue
    fi
    pos=$(sed -nE "s/^  × input\/$name:([0-9]+):([0-9]+): .*/\1:\2/p" "$err")
    if ! grep -qF ",-[input/$name:$pos]" "$err" || ! grep -qE "^ +${pos%%:*} \| " "$err" ||
       ! grep -qE '^ +\| +\^' "$err"; then
      fail "$name: snippet does not show $pos: $(cat "$err")"; bad=$((bad + 1))
    fi
  fi
done
echo "suite: $valid valid, $invalid invalid documents, $bad wrong"
[ "$bad" -eq 0 ] && ok "all $((valid + invalid)) suite documents"
[ "$valid" -ge 250 ] && [ "$invalid" -ge 200 ] || fail "the suite is too small: $valid/$invalid"

# --- --json ---
run --json kdl fmt input/realistic_vmfile.kdl
expect_eq "--json: exit" "$rc" 0
expect_eq "--json: one document" "$(jq -s length <"$out")" 1
jq -j .canonical <"$out" >"$tmp/canonical"
cmp -s "$tmp/canonical" expected_kdl/realistic_vmfile.kdl && ok "--json: .canonical is the canonical form" ||
  fail "--json: .canonical differs: $(cat "$out")"

run --json kdl fmt input/ml_prefix_mismatch_fail.kdl
expect_eq "--json error: exit" "$rc" 1
expect_eq "--json error: code" "$(jq -r .error.code <"$out")" vm_manager::vmfile::parse_failed
expect_eq "--json error: details" "$(jq -c '.error.details' <"$out")" \
  '{"path":"input/ml_prefix_mismatch_fail.kdl","line":3,"column":1}'
expect_eq "--json error: message" "$(jq -r .error.message <"$out" | cut -d: -f1-3)" \
  "input/ml_prefix_mismatch_fail.kdl:3:1"
jq -r '.error.notes[0]' <"$out" | grep -qxF ' 3 |   b' && ok "--json error: the snippet shows the line" ||
  fail "--json error: notes: $(jq -c .error.notes <"$out")"
[ -s "$err" ] && fail "--json error: wrote to stderr: $(cat "$err")"

# --- the rendered diagnostic, exactly (no colour off a terminal) ---
printf 'vm "web" {\n    memory 512 cpus=\n}\n' >"$tmp/VMFile.kdl"
run kdl fmt "$tmp/VMFile.kdl"
expect_eq "text error: exit" "$rc" 1
cat >"$tmp/want" <<EOF
Error: vm_manager::vmfile::parse_failed

  × $tmp/VMFile.kdl:2:21: unexpected end of line, expected a property value after '='

  note: 
       ,-[$tmp/VMFile.kdl:2:21]
     2 |     memory 512 cpus=
       |                     ^ expected a property value after '='
       \`----

  help: Check VMFile.kdl syntax; see https://kdl.dev
EOF
if diff "$tmp/want" "$err" >/dev/null; then ok "text error: rendered like miette"; else
  fail "text error: $(diff "$tmp/want" "$err")"; fi

# --- standard input ---
run kdl fmt - <input/num_hex_big.kdl
expect_eq "stdin: exit" "$rc" 0
cmp -s "$out" expected_kdl/num_hex_big.kdl && ok "stdin: canonical form" || fail "stdin: $(cat "$out")"
run kdl fmt - <input/string_escape_unknown_fail.kdl
expect_eq "stdin error: exit" "$rc" 1
grep -q '^  × <stdin>:1:5: ' "$err" && ok "stdin error: named <stdin>" || fail "stdin error: $(cat "$err")"

# --- versions ---
printf 'node true r"raw" key=null\n' >"$tmp/v1.kdl"
run kdl fmt "$tmp/v1.kdl"
expect_eq "v1 without marker: rejected by default" "$rc" 1
run kdl fmt --kdl-version auto "$tmp/v1.kdl"
expect_eq "v1 --kdl-version auto: exit" "$rc" 0
expect_eq "v1 --kdl-version auto: output" "$(cat "$out")" 'node #true raw key=#null'
run kdl fmt --kdl-version 1 "$tmp/v1.kdl"
expect_eq "v1 --kdl-version 1: exit" "$rc" 0
run kdl fmt --kdl-version 2 input/v1_bare_keywords.kdl
expect_eq "v1 marker with --kdl-version 2: rejected" "$rc" 1
run kdl fmt --kdl-version 3 "$tmp/v1.kdl"
expect_eq "--kdl-version 3: exit" "$rc" 1
grep -q 'vm_manager::config::invalid' "$err" && ok "--kdl-version 3: config::invalid" ||
  fail "--kdl-version 3: $(cat "$err")"

# --- usage and files ---
for args in "kdl" "kdl fmt" "kdl frobnicate x" "kdl fmt a b"; do
  # shellcheck disable=SC2086
  run $args
  expect_eq "'$args': usage error" "$rc" 2
  grep -q 'vm_manager::cli::usage' "$err" || fail "'$args': $(cat "$err")"
done
run kdl fmt --help
expect_eq "kdl fmt --help: exit" "$rc" 0
grep -q '^Usage: vmctl kdl fmt' "$out" && grep -q '^Examples:' "$out" && ok "kdl fmt --help" ||
  fail "kdl fmt --help: $(head -3 "$out")"
run kdl --help
grep -q '^Usage: vmctl kdl SUBCOMMAND' "$out" && ok "kdl --help" || fail "kdl --help: $(head -3 "$out")"
run --json kdl fmt "$tmp/missing.kdl"
expect_eq "missing file: exit" "$rc" 1
expect_eq "missing file: code" "$(jq -r .error.code <"$out")" vm_manager::vmfile::not_found
run kdl fmt "$tmp"
expect_eq "a directory: exit" "$rc" 1
grep -q 'vm_manager::io' "$err" && ok "a directory: io error" || fail "a directory: $(cat "$err")"

if [ "$fails" -gt 0 ]; then
  echo "$fails check(s) failed"
  exit 1
fi
echo "all checks passed"
