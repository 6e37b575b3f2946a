#!/bin/bash
# clang-format (.clang-format: 4 spaces, 100 columns, Linux braces) over every C source and header
# of src/, include/ and tests/: lists the files that are not formatted and exits 1. With --fix,
# formats them in place instead. scripts/test.sh runs it.
# Usage: scripts/check-format.sh [--fix]
set -uo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null ||
  { echo "format: clang-format is not installed (Debian package clang-format)"; exit 1; }
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard -- \
    'src/*.c' 'src/*.h' 'include/*.c' 'include/*.h' 'tests/*.c' 'tests/*.h')
else
  mapfile -t files < <(find src include tests -name '*.[ch]' | sort)
fi
[ "${#files[@]}" -gt 0 ] || { echo "format: no C files found"; exit 1; }
if [ "${1:-}" = --fix ]; then
  clang-format -i "${files[@]}"
  exit
fi
bad=()
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ "${#bad[@]}" -gt 0 ]; then
  echo "format: ${#bad[@]} of ${#files[@]} files are not clang-formatted (scripts/check-format.sh --fix):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "format: ${#files[@]} files clang-formatted"
