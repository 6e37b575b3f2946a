#!/bin/bash
# CLI start-up before and after a change, in one run: `vmctl --version`, `vmctl status NAME` and
# `vmctl list --json` with 1,000 VMs in the store, for two builds (BEFORE and AFTER) against the
# same store, with the sqlite3 CLI reading the same rows as the baseline (one process start plus
# one query) and /bin/true as the floor of a process start. hyperfine, RUNS runs each after 10
# warm-ups; prints median (p50) and mean, and p50 ratios to the sqlite3 baseline. With valgrind
# installed, also the instructions each vmctl command executes (callgrind Ir): unlike times on a
# shared machine, those do not depend on the load.
# Usage: bench/startup.sh BEFORE_BUILD_DIR AFTER_BUILD_DIR [RUNS]
set -euo pipefail
before=${1:?before build dir}/src/cli/vmctl
after=${2:?after build dir}/src/cli/vmctl
runs=${3:-200}
for t in hyperfine jq sqlite3; do command -v $t >/dev/null || { echo "$t is not installed"; exit 1; }; done
home=$(mktemp -d /tmp/vmctl-bench-startup.XXXXXX)
trap 'rm -rf "$home"' EXIT
"$after" --home "$home" image build-default >/dev/null
for i in $(seq 1000); do echo "$i"; done | xargs -P 2 -I{} "$after" --home "$home" create "vm{}" >/dev/null
echo "VMs in store: $("$before" --home "$home" list --json | jq length) (read by BEFORE)"
for b in "$before" "$after"; do echo "$b: $(ldd "$b" | wc -l) shared objects"; done
hyperfine -N --warmup 10 --runs "$runs" --export-json "$home/h.json" \
  "/bin/true" \
  "sqlite3 $home/vmctl.db 'select * from vms'" \
  "$before --version" "$after --version" \
  "$before --home $home status vm500" "$after --home $home status vm500" \
  "$before --home $home list --json" "$after --home $home list --json" >&2
jq -r --arg b "$before" --arg a "$after" '
  (.results[1].median) as $base
  | "| command | p50 | mean | p50 ratio to sqlite3 |", "|---|---|---|---|",
    (.results[] | "| `\(.command | sub($b; "BEFORE") | sub($a; "AFTER") | sub(" --home [^ ]+"; "")
      | sub("sqlite3 [^ ]+"; "sqlite3 vmctl.db"))` | \(.median * 1000 * 100 | round / 100) ms | \(.mean * 1000 * 100 | round / 100) ms | \(.median / $base * 100 | round / 100) |")' \
  "$home/h.json"

command -v valgrind >/dev/null || exit 0
echo
echo "| command | instructions BEFORE | instructions AFTER | AFTER / BEFORE |"
echo "|---|---|---|---|"
for args in "--version" "status vm500" "list --json"; do
  ir=()
  for b in "$before" "$after"; do
    # shellcheck disable=SC2086
    ir+=("$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$b" --home "$home" $args 2>&1 >/dev/null |
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p')")
  done
  echo "| \`vmctl $args\` | ${ir[0]} | ${ir[1]} | $(awk -v a="${ir[0]}" -v b="${ir[1]}" 'BEGIN { printf "%.3f", b / a }') |"
done
