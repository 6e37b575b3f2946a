#!/bin/bash
# Runs the whole test suite: the clang-format check, unit tests, integration tests against real
# QEMU (TCG), the unit tests again under ASan+UBSan, and the fuzz targets (built from meson with
# -Dfuzz=true: each once over its corpus, then bounded fuzzing). Ends with "N passed, N failed,
# N skipped".
# A skip is a test that exited 77, and also every "SKIP: reason" line a passing test printed for a
# part of it it could not run (tests/integration/lib.sh's skip_section, tests/unit/skip.h): each is
# listed with its reason. Under CI=true the tests themselves fail a skip the host could avoid.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bash scripts/install-deps.sh || { echo "dependency install failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0 failed=0 skipped=0
failures=() skips=()

# count results from a meson testlog.json: one row per test, then one per SKIP line it printed
count() {
  local log=$1 prefix=$2
  [ -f "$log" ] || return 0
  while IFS=$'\t' read -r name result reason; do
    case "$result" in
      OK|EXPECTEDFAIL) passed=$((passed + 1)) ;;
      SKIP) skipped=$((skipped + 1)); skips+=("$prefix$name: ${reason:-no reason given}") ;;
      SKIP-PART) skipped=$((skipped + 1)); skips+=("$prefix$name (part): $reason") ;;
      *) failed=$((failed + 1)); failures+=("$prefix$name ($result)") ;;
    esac
  done < <(jq -r '((.stdout // "") + "\n" + (.stderr // "")) as $out
    | [$out | splits("\n") | select(startswith("SKIP: ")) | .[6:]] as $s
    | if .result == "SKIP" then [.name, .result, ($s[0] // "")]
      else [.name, .result, ""], (if .result == "OK" then $s[] as $r | [.name, "SKIP-PART", $r]
                                  else empty end) end | @tsv' "$log")
}

step_fail() { failed=$((failed + 1)); failures+=("$1"); }

# 0. the look: clang-format over every C source and header of src/, include/ and tests/
if bash scripts/check-format.sh; then passed=$((passed + 1)); else step_fail "clang-format"; fi

# 1. the normal build, unit + integration
if { [ -d build-test ] || meson setup build-test; } && ninja -C build-test >/dev/null; then
  # The default guest, shared by all integration tests (downloads are cached in ~/.cache/vmctl).
  export VMCTL_TEST_IMAGES="$root/build-test/test-images"
  if build-test/src/cli/vmctl --home "$root/build-test/test-home" image build-default; then
    mkdir -p "$VMCTL_TEST_IMAGES"
    rm -rf "$VMCTL_TEST_IMAGES/default"
    cp -a "$root/build-test/test-home/images/default" "$VMCTL_TEST_IMAGES/default"
  else
    step_fail "image build-default"
  fi
  meson test -C build-test --num-processes 2 --print-errorlogs --no-rebuild "$@"
  count build-test/meson-logs/testlog.json ""
else
  ninja -C build-test 2>&1 | tail -30
  step_fail "build"
fi

# 2. ASan + UBSan build, unit tests only
if [ -z "${SKIP_ASAN:-}" ]; then
  if { [ -d build-asan ] || meson setup build-asan -Db_sanitize=address,undefined \
         -Db_lundef=false; } && ninja -C build-asan >/dev/null; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      meson test -C build-asan --suite unit --print-errorlogs --no-rebuild
    count build-asan/meson-logs/testlog.json "asan:"
  else
    ninja -C build-asan 2>&1 | tail -30
    step_fail "asan build"
  fi
fi

# 3. every parser's fuzz target (build-fuzz, -Dfuzz=true): once over its corpus (one result
# each, suite fuzz), then bounded fuzzing (one result)
if [ -z "${SKIP_FUZZ:-}" ] && [ -x tests/fuzz/run.sh ]; then
  rm -f build-fuzz/meson-logs/testlog.json
  if FUZZ_BUILD=build-fuzz bash tests/fuzz/run.sh 30; then passed=$((passed + 1)); else step_fail "fuzz"; fi
  count build-fuzz/meson-logs/testlog.json "fuzz:"
fi

for s in "${skips[@]}"; do echo "SKIPPED: $s"; done
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
