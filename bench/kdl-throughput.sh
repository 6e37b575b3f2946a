#!/bin/bash
# KDL parse throughput on a generated 10 MiB document (bench/kdl-throughput.c): in process,
# kdl_parse and kdl_parse + kdl_format against a memchr line count of the same buffer; then end
# to end, `vmctl kdl fmt FILE` against `wc -l FILE` on the same file (hyperfine).
# Usage: bench/kdl-throughput.sh BUILD_DIR
set -euo pipefail
build=${1:?build dir}
vmctl=$build/src/cli/vmctl
tmp=$(mktemp -d /tmp/vmctl-kdl-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
"$build/bench/kdl-throughput" --runs 7 --write "$tmp/doc.kdl"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 2 --runs 10 "wc -l $tmp/doc.kdl" "$vmctl kdl fmt $tmp/doc.kdl" \
    --output=null
fi
# The VMFile case (issue 16): vmfile_parse (parse + validation) of 10,000, 20,000 and 40,000 steps
# in process, then end to end `vmctl up --file F --name none` (validates, then fails with
# vm::not_found: creates nothing) on the 40,000-step file.
"$build/bench/kdl-throughput" --vmfile 40000 --runs 5 --write "$tmp/vmfile.kdl"
if command -v hyperfine >/dev/null; then
  hyperfine -N -i --warmup 1 --runs 10 \
    "$vmctl --home $tmp/home up --file $tmp/vmfile.kdl --name none" --output=null
fi
