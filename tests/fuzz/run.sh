#!/bin/bash
# Builds every libFuzzer target tests/fuzz/fuzz-*.c with clang (ASan+UBSan) and runs each for a
# bounded time on its corpus (tests/fuzz/corpus/<target>/, real samples). A target names the
# sources it links in a comment line:  /* fuzz-sources: src/proto/agent-proto.c */
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
out=${FUZZ_BUILD:-build-fuzz}
mkdir -p "$out"
command -v clang >/dev/null || { echo "fuzz: clang missing (apt-get install clang libclang-rt-14-dev)"; exit 1; }
status=0
for src in tests/fuzz/fuzz-*.c; do
  [ -e "$src" ] || continue
  name=$(basename "$src" .c)
  # the comment may run over several lines: take everything up to its "*/"
  extra=$(awk '/fuzz-sources:/ { f = 1; sub(/.*fuzz-sources:/, "") }
               f { l = $0; e = sub(/\*\/.*/, "", l); sub(/^[ \t]*\*[ \t]/, " ", l); printf "%s ", l; if (e) exit }' "$src")
  deps=""
  pkg-config --exists jansson && deps="$deps $(pkg-config --cflags --libs jansson)"
  # shellcheck disable=SC2086
  if ! clang -g -O1 -std=gnu17 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
       -Iinclude -I. -Isrc/lib -Isrc/proto -I"$out" "$src" $extra -o "$out/$name" $deps; then
    echo "fuzz: $name does not build"; status=1; continue
  fi
  corpus="tests/fuzz/corpus/$name"
  work=$(mktemp -d)
  [ -d "$corpus" ] && cp -r "$corpus"/. "$work"/ 2>/dev/null || true
  if "$out/$name" -artifact_prefix="$out/$name-" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=0 "$work" >"$out/$name.log" 2>&1; then
    echo "fuzz: $name ok ($secs s, $(grep -c . <(ls "$work")) inputs)"
  else
    echo "fuzz: $name FAILED"; tail -40 "$out/$name.log"; status=1
  fi
  rm -rf "$work"
done
exit $status
