#!/bin/bash
# Shared helpers for integration tests. Each test gets its own $VMCTL_HOME whose images/ points at
# the default guest built once by scripts/test.sh ($VMCTL_TEST_IMAGES). Exit 77 = skipped.
set -uo pipefail

: "${VMCTL:?VMCTL must name the vmctl binary}"
TEST_NAME=$(basename "$0" .sh)
fails=0

skip() { echo "SKIP: $*"; exit 77; }

need_guest() {
  command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 is not installed"
  [ -n "${VMCTL_TEST_IMAGES:-}" ] && [ -f "$VMCTL_TEST_IMAGES/default/vmlinux" ] ||
    skip "the default guest was not built (run scripts/test.sh, which builds it first)"
}

setup_home() {
  export VMCTL_HOME
  VMCTL_HOME=$(mktemp -d "/tmp/vmctl-$TEST_NAME.XXXXXX")
  if [ -n "${VMCTL_TEST_IMAGES:-}" ] && [ -d "$VMCTL_TEST_IMAGES" ]; then
    ln -s "$VMCTL_TEST_IMAGES" "$VMCTL_HOME/images"
  fi
  trap cleanup EXIT
}

cleanup() {
  local names
  names=$("$VMCTL" list --json 2>/dev/null | jq -r '.[].name' 2>/dev/null)
  for n in $names; do "$VMCTL" destroy --force "$n" >/dev/null 2>&1; done
  # belt and braces: no QEMU of ours may outlive the test
  pkill -9 -f "$VMCTL_HOME/vms/" 2>/dev/null
  rm -rf "$VMCTL_HOME"
}

vm() { "$VMCTL" "$@"; }

ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# expect_eq WHAT ACTUAL EXPECTED
expect_eq() {
  if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: got '$2', expected '$3'"; fi
}

# expect_code WHAT EXPECTED-CODE CMD...   (runs CMD with --json, checks error.code and exit 1)
expect_code() {
  local what=$1 code=$2; shift 2
  local out rc
  out=$("$VMCTL" --json "$@" 2>/dev/null); rc=$?
  local got
  got=$(jq -r '.error.code // empty' <<<"$out" 2>/dev/null)
  if [ "$rc" -eq 1 ] && [ "$got" == "$code" ]; then
    ok "$what"
  else
    fail "$what: exit $rc, code '$got', expected exit 1 and '$code'; output: $out"
  fi
  LAST_JSON=$out
}

state_of() { "$VMCTL" status --json "$1" 2>/dev/null | jq -r .state; }

finish() {
  if [ "$fails" -eq 0 ]; then echo "PASS: $TEST_NAME"; exit 0; fi
  echo "FAILED: $TEST_NAME ($fails checks)"; exit 1
}
