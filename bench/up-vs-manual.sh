#!/bin/bash
# `vmctl up` of a two-machine VMFile against the same work done by hand with vmctl
# create/start/exec, in the same run: by hand one machine after the other (what a user types),
# and by hand with the two machines in parallel shell jobs (the fair baseline for up's threads).
# Each round destroys everything first; rounds alternate the order of the three. Prints the
# median of each and the ratios.
#
# Usage: bench/up-vs-manual.sh [ROUNDS]   (env: VMCTL=path/to/vmctl, VMCTL_TEST_IMAGES=dir with
#        default/ from `vmctl image build-default`, else it is built into the bench home)
set -euo pipefail
rounds=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
VMCTL=${VMCTL:-$root/build/src/cli/vmctl}
work=$(mktemp -d /tmp/vmctl-bench-up.XXXXXX)
export VMCTL_HOME=$work/home
mkdir -p "$VMCTL_HOME"
cleanup() {
  "$VMCTL" down --file "$work/VMFile.kdl" --destroy >/dev/null 2>&1 || true
  for n in ba bb; do "$VMCTL" destroy --force "$n" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${VMCTL_TEST_IMAGES:-}" ]; then
  ln -s "$VMCTL_TEST_IMAGES" "$VMCTL_HOME/images"
else
  "$VMCTL" image build-default >/dev/null
fi

cat >"$work/VMFile.kdl" <<'EOF'
vm "ba" {
    provision "shell" { inline "echo one > /tmp/one"; }
    provision "shell" { inline "uname -r; cat /tmp/one"; }
}
vm "bb" {
    provision "shell" { inline "echo one > /tmp/one"; }
    provision "shell" { inline "uname -r; cat /tmp/one"; }
}
EOF

by_hand() { # NAME
  "$VMCTL" create "$1" >/dev/null 2>&1
  "$VMCTL" start "$1" --wait --timeout 120 >/dev/null
  "$VMCTL" exec "$1" -- sh -c "echo one > /tmp/one" >/dev/null
  "$VMCTL" exec "$1" -- sh -c "uname -r; cat /tmp/one" >/dev/null
}
destroy_all() { for n in ba bb; do "$VMCTL" destroy --force "$n" >/dev/null 2>&1 || true; done; }
now() { date +%s.%N; }

run_up() {
  local t0; t0=$(now)
  "$VMCTL" up --file "$work/VMFile.kdl" >/dev/null 2>&1
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
}
run_seq() {
  local t0; t0=$(now)
  by_hand ba; by_hand bb
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
}
run_par() {
  local t0; t0=$(now)
  by_hand ba & local p1=$!
  by_hand bb & local p2=$!
  wait "$p1"; wait "$p2"
  awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
}

declare -a up seq par
for ((i = 0; i < rounds; i++)); do
  order=(up seq par)
  [ $((i % 3)) -eq 1 ] && order=(seq par up)
  [ $((i % 3)) -eq 2 ] && order=(par up seq)
  for what in "${order[@]}"; do
    destroy_all
    t=$(run_$what)
    eval "$what+=(\"$t\")"
  done
  echo "round $((i + 1)): up ${up[-1]} s, by hand sequential ${seq[-1]} s, by hand parallel ${par[-1]} s"
done
destroy_all

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mu=$(median "${up[@]}"); ms=$(median "${seq[@]}"); mp=$(median "${par[@]}")
echo "median of $rounds: up $mu s, by hand sequential $ms s, by hand parallel $mp s"
awk -v u="$mu" -v s="$ms" -v p="$mp" 'BEGIN {
  printf "ratio up / by hand sequential: %.2f\nratio up / by hand parallel:   %.2f\n", u / s, u / p }'
