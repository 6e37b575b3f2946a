#!/bin/sh
# gen-containerd-pb.sh PROTOC_C OUTDIR: containerd 1.6's task v2 API (Debian's
# golang-github-containerd-containerd-dev) through protoc-c, flattened into OUTDIR (protoc-c
# writes each file under its import path, which a meson custom_target cannot list) with the
# #includes rewritten to match. The basenames are unique.
set -eu
protoc=$1 out=$2
src=/usr/share/gocode/src
tmp=$(mktemp -d "$out/.gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$protoc" -I"$src" -I"$src/github.com/gogo/protobuf" -I"$src/github.com/gogo/protobuf/protobuf" \
    --c_out="$tmp" \
    github.com/containerd/containerd/runtime/v2/task/shim.proto \
    github.com/containerd/containerd/api/types/mount.proto \
    github.com/containerd/containerd/api/types/task/task.proto \
    gogoproto/gogo.proto google/protobuf/any.proto google/protobuf/empty.proto \
    google/protobuf/timestamp.proto google/protobuf/descriptor.proto 2>"$tmp/log" ||
    { cat "$tmp/log" >&2; exit 1; }
find "$tmp" -name '*.pb-c.[ch]' | while read -r f; do
    sed -E 's|#include "([^"]*/)?([^"/]+\.pb-c\.h)"|#include "\2"|' "$f" >"$out/$(basename "$f")"
done
