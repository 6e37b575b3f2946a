#!/bin/bash
# Shared helpers for integration tests. Each test gets its own $VMCTL_HOME whose images/ points at
# the default guest built once by scripts/test.sh ($VMCTL_TEST_IMAGES). Exit 77 = skipped.
set -uo pipefail

: "${VMCTL:?VMCTL must name the vmctl binary}"
TEST_NAME=$(basename "$0" .sh)
fails=0

# Skips say what is missing. `skip [--lacks THING] REASON...` skips the whole test (exit 77);
# `skip_section [--lacks THING] REASON...` a part of it, and the test goes on: both print one
# "SKIP: REASON" line, which scripts/test.sh counts as a skip. Under CI=true a skip is a failure
# (CI installs everything scripts/install-deps.sh names and runs as root, and builds the default
# guest first) unless it names, with --lacks, a thing the host may truly lack: one of
# CI_MAY_LACK, a device no package provides.
CI_MAY_LACK=(/dev/kvm /dev/vhost-vsock)
skip_allowed() { # [--lacks THING] REASON...: prints the SKIP line or, when not allowed, the FAIL
  local thing="" t
  if [ "${1:-}" = --lacks ]; then thing=$2; shift 2; fi
  if [ "${CI:-}" = true ]; then
    for t in "${CI_MAY_LACK[@]}"; do
      [ -n "$thing" ] && [ "$thing" = "$t" ] && { echo "SKIP: $* (the host lacks $thing)"; return 0; }
    done
    echo "FAIL: skipped under CI=true: $* (only a missing $(printf '%s\n' "${CI_MAY_LACK[@]}" | paste -sd'|' | sed 's/|/ or /g') may skip in CI)"
    return 1
  fi
  echo "SKIP: $*${thing:+ (the host lacks $thing)}"
}
skip() { skip_allowed "$@" && exit 77; exit 1; }
skip_section() { skip_allowed "$@" || fails=$((fails + 1)); }

# have TOOL PACKAGE WHAT: is TOOL installed? If not, WHAT is skipped (a section of the test).
have() {
  command -v "$1" >/dev/null && return 0
  skip_section "$3: $1 is not installed (Debian package $2)"
  return 1
}

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
  # snapshots (and the pools on them) too: a template's RAM file lives outside the home
  # (/dev/shm/vmctl-UID), so rm -rf of the home alone would leave it behind
  "$VMCTL" pool list --json 2>/dev/null | jq -r '.[] | "\(.vm)/\(.snapshot)"' 2>/dev/null |
    while read -r p; do "$VMCTL" pool rm "$p" >/dev/null 2>&1; done
  "$VMCTL" snapshot list --json 2>/dev/null | jq -r '.[] | "\(.vm) \(.name)"' 2>/dev/null |
    while read -r a b; do "$VMCTL" snapshot rm "$a" "$b" >/dev/null 2>&1; done
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
