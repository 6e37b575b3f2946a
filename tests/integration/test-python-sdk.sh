#!/bin/bash
# The Python SDK (python/vmctl, issue 14): its pytest suite, python/tests, run once here so that
# scripts/test.sh counts it as one result. test_unit.py needs no server (error mapping, NDJSON,
# the unix-socket connection against a tiny http.server); test_integration.py starts `vmctl
# serve` on demand through the SDK itself (a temp home whose images/ is $VMCTL_TEST_IMAGES) and
# boots real VMs. pytest's skips become "SKIP: reason" lines (scripts/test.sh counts them; under
# CI=true the tests fail instead of skipping); its "no tests collected" (exit 5) is a failure.
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/../.." && pwd)

# Debian's python3-pytest is for Debian's python3: another python3 first in PATH may lack it
py=""
for p in "${PYTHON:-python3}" /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import pytest' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || skip "pytest is not installed (Debian package python3-pytest)"

out=$(mktemp)
trap 'rm -f "$out"' EXIT
cd "$root/python" || exit 1
PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -q -rs -p no:cacheprovider tests >"$out" 2>&1
rc=$?
cat "$out"
# "SKIPPED [2] tests/test_integration.py:40: reason" -> "SKIP: reason"
sed -n 's/^SKIPPED \[[0-9]*\] [^:]*:[0-9]*: /SKIP: /p' "$out"
case $rc in
  0) ok "pytest python/tests" ;;
  5) fail "pytest collected no tests in python/tests (exit 5)" ;;
  *) fail "pytest python/tests exited $rc" ;;
esac
finish
