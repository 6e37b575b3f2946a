#!/bin/bash
# No silent skips: lib.sh's skip/skip_section and tests/unit/skip.h print "SKIP: reason", fail
# under CI=true unless the missing thing is /dev/kvm or /dev/vhost-vsock, and scripts/test.sh
# counts every SKIP line of a passing test as a skip. No VM is booted.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
src=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d /tmp/vmctl-test-skips.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# run_lib CI SNIPPET: runs SNIPPET after sourcing lib.sh, CI set to CI; $out, $rc
run_lib() {
  out=$(CI=$1 VMCTL=$VMCTL bash -c ". '$here/lib.sh'; $2" 2>&1); rc=$?
}

run_lib "" 'skip_section "part one: frob is not installed"; ok "after"; finish'
expect_eq "skip_section outside CI: the test goes on and passes" "$rc" 0
grep -qx "SKIP: part one: frob is not installed" <<<"$out" && ok "skip_section prints its SKIP line" ||
  fail "no SKIP line: $out"
run_lib true 'skip_section "part one: frob is not installed"; finish'
expect_eq "skip_section under CI=true fails the test" "$rc" 1
grep -q "^FAIL: skipped under CI=true: part one" <<<"$out" && ok "it says why" || fail "output: $out"
run_lib true 'skip_section --lacks /dev/vhost-vsock "the vsock device checks"; finish'
expect_eq "skip_section --lacks /dev/vhost-vsock under CI=true" "$rc" 0
run_lib true 'skip --lacks /dev/kvm "the KVM checks"'
expect_eq "skip --lacks /dev/kvm under CI=true: skipped" "$rc" 77
run_lib true 'skip --lacks /usr/bin/frob "frob is not installed"'
expect_eq "skip --lacks of a thing not in the list under CI=true: failed" "$rc" 1
run_lib "" 'skip "frob is not installed"'
expect_eq "skip outside CI" "$rc" 77
run_lib "" 'have frob-no-such-tool frob "the frob part" || ok "have says no"; finish'
grep -qx "SKIP: the frob part: frob-no-such-tool is not installed (Debian package frob)" <<<"$out" &&
  ok "have: a missing tool is a counted skip" || fail "have: $out"

# the C side: test-qemu without the default guest skips its launch tests, saying why (77), and
# fails under CI=true; before, it skipped silently everywhere for want of /tmp/kexp
tq=$(dirname "$VMCTL")/../../tests/unit/test-qemu
if [ -x "$tq" ]; then
  out=$(env -u VMCTL_TEST_IMAGES -u VMCTL_TEST_KERNEL -u CI "$tq" 2>&1); rc=$?
  expect_eq "test-qemu without a guest: skipped" "$rc" 77
  grep -q '^SKIP: the launch tests: no test kernel: $VMCTL_TEST_IMAGES is unset' <<<"$out" &&
    ok "test-qemu says what is missing" || fail "test-qemu: $(tail -3 <<<"$out")"
  out=$(env -u VMCTL_TEST_IMAGES -u VMCTL_TEST_KERNEL CI=true "$tq" 2>&1); rc=$?
  expect_eq "test-qemu without a guest under CI=true: failed" "$rc" 1
else
  fail "test-qemu not built next to vmctl ($tq)"
fi

# scripts/test.sh's counting, on a meson testlog.json
cat >"$tmp/testlog.json" <<'EOF'
{"name": "a", "result": "OK", "stdout": "ok: x\nSKIP: part one\nSKIP: part two\nPASS: a\n", "stderr": ""}
{"name": "b", "result": "SKIP", "stdout": "SKIP: jq is not installed\n", "stderr": ""}
{"name": "c", "result": "FAIL", "stdout": "SKIP: not counted: the test failed\n", "stderr": ""}
{"name": "d", "result": "OK", "stdout": "", "stderr": "SKIP: from stderr\n"}
{"name": "e", "result": "OK", "stdout": "PASS\n", "stderr": ""}
EOF
out=$(bash -c 'set -uo pipefail; passed=0 failed=0 skipped=0; failures=() skips=()
  eval "$(sed -n "/^count() {/,/^}/p" "$1/scripts/test.sh")"
  count "$2" ""; echo "$passed $failed $skipped"; printf "%s\n" "${skips[@]}"' _ "$src" "$tmp/testlog.json")
expect_eq "test.sh counts passed, failed and every SKIP line" "$(head -1 <<<"$out")" "3 1 4"
grep -qx "a (part): part two" <<<"$out" && grep -qx "b: jq is not installed" <<<"$out" &&
  ok "test.sh lists each skip with its reason" || fail "skips listed: $out"

finish
