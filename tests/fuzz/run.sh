#!/bin/bash
# Builds every libFuzzer target of tests/fuzz from meson (-Dfuzz=true: clang, ASan+UBSan; the
# targets and the sources each links in are listed in tests/fuzz/meson.build), runs each once over
# its corpus (the 'fuzz' test suite), then fuzzes each for a bounded time starting from a copy of
# its corpus (tests/fuzz/corpus/<target>/, real samples).
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
out=${FUZZ_BUILD:-build-fuzz}
command -v clang >/dev/null || { echo "fuzz: clang missing (apt-get install clang libclang-rt-14-dev)"; exit 1; }
if [ -d "$out" ]; then
  meson configure "$out" -Dfuzz=true >/dev/null
else
  meson setup "$out" -Dfuzz=true >/dev/null
fi
if ! ninja -C "$out" fuzz >"$out/fuzz-build.log" 2>&1; then
  echo "fuzz: the targets do not build"
  tail -40 "$out/fuzz-build.log"
  exit 1
fi
status=0
meson test -C "$out" --no-rebuild --suite fuzz --print-errorlogs >"$out/fuzz-smoke.log" 2>&1 ||
  { echo "fuzz: a corpus input fails"; tail -60 "$out/fuzz-smoke.log"; status=1; }
for src in tests/fuzz/fuzz-*.c; do
  name=$(basename "$src" .c)
  bin="$out/tests/fuzz/$name"
  [ -x "$bin" ] || { echo "fuzz: $name is not in tests/fuzz/meson.build"; status=1; continue; }
  corpus="tests/fuzz/corpus/$name"
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  if "$bin" -artifact_prefix="$out/$name-" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=0 "$work" >"$out/$name.log" 2>&1; then
    echo "fuzz: $name ok ($secs s, $(grep -c . <(ls "$work")) inputs)"
  else
    echo "fuzz: $name FAILED"; tail -40 "$out/$name.log"; status=1
  fi
  rm -rf "$work"
done
exit $status
