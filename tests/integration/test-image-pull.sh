#!/bin/bash
# image pull from a real HTTP server on loopback: success, 404, a server dropping mid-transfer,
# a stalled transfer, wrong checksum, truncated and corrupt files, zstd/xz decompression, file://
# URLs, a second pull served from the cache, and no half image after a killed pull.
source "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || skip "python3 is not installed"
command -v qemu-img >/dev/null || skip "qemu-img is not installed"

export VMCTL_HOME
VMCTL_HOME=$(mktemp -d /tmp/vmctl-image-pull.XXXXXX)
srv_pid=
trap 'kill $srv_pid 2>/dev/null; rm -rf "$VMCTL_HOME"' EXIT
www=$VMCTL_HOME/www
mkdir -p "$www"

qemu-img create -q -f qcow2 "$www/small.qcow2" 256M
qemu-io -c "write -P 0x5a 0 3M" "$www/small.qcow2" >/dev/null
head -c 4M /dev/urandom >"$www/plain.raw"
zstd -q -k "$www/plain.raw" -o "$www/plain.raw.zst"
xz -k -T1 -c "$www/plain.raw" >"$www/plain.raw.xz"
head -c $(($(stat -c %s "$www/plain.raw.xz") / 2)) "$www/plain.raw.xz" >"$www/cut.raw.xz"
head -c 200000 "$www/small.qcow2" >"$www/trunc.qcow2"
cp "$www/small.qcow2" "$www/corrupt.qcow2"
# refcount table offset (header byte 48) pointed far past the end of the file
printf '\x00\x00\x00\x10\x00\x00\x00\x00' | dd of="$www/corrupt.qcow2" bs=1 seek=48 conv=notrunc status=none
sha_small=$(sha256sum <"$www/small.qcow2" | cut -d' ' -f1)
sha_zst=$(sha256sum <"$www/plain.raw.zst" | cut -d' ' -f1)

python3 "$(dirname "$0")/image-http-server.py" "$www" >"$VMCTL_HOME/port" &
srv_pid=$!
for _ in $(seq 50); do [ -s "$VMCTL_HOME/port" ] && break; sleep 0.1; done
port=$(cat "$VMCTL_HOME/port")
[ -n "$port" ] || { echo "FAIL: the HTTP server did not start"; exit 1; }
base=http://127.0.0.1:$port

out=$(vm --json image pull "$base/files/small.qcow2" --sha256 "$sha_small")
expect_eq "pull qcow2 with checksum: format" "$(jq -r .format <<<"$out")" qcow2
expect_eq "pull qcow2: name from URL" "$(jq -r .name <<<"$out")" small
expect_eq "pull qcow2: virtual size" "$(jq -r .virtual_size <<<"$out")" 268435456
expect_eq "pull qcow2: not cached" "$(jq -r .cached <<<"$out")" false
cmp -s "$www/small.qcow2" "$VMCTL_HOME/images/small/disk" && ok "pulled bytes identical" || fail "pulled bytes differ"
qemu-img check -q "$VMCTL_HOME/images/small/disk" && ok "pulled image passes qemu-img check" || fail "qemu-img check"

: >"$www/requests.log"
out=$(vm --json image pull "$base/files/small.qcow2" --sha256 "$sha_small")
expect_eq "second pull served from the cache" "$(jq -r .cached <<<"$out")" true
expect_eq "second pull made no request" "$(wc -l <"$www/requests.log")" 0

out=$(vm --json image pull "$base/files/plain.raw.zst" --name z --sha256 "$sha_zst")
expect_eq "zstd pull: raw" "$(jq -r .format <<<"$out")" raw
cmp -s "$www/plain.raw" "$VMCTL_HOME/images/z/disk" && ok "zstd decompressed" || fail "zstd content"
out=$(vm --json image pull "$base/files/plain.raw.xz" --name x)
cmp -s "$www/plain.raw" "$VMCTL_HOME/images/x/disk" && ok "xz decompressed" || fail "xz content: $out"
out=$(vm --json image pull "file://$www/small.qcow2" --name f)
expect_eq "file:// pull" "$(jq -r .format <<<"$out")" qcow2

expect_code "404" vm_manager::image::download_failed image pull "$base/files/missing.qcow2"
expect_eq "404 status code in details" "$(jq -r .error.details.status_code <<<"$LAST_JSON")" 404
expect_code "server drops mid-transfer" vm_manager::image::download_failed image pull "$base/drop/small.qcow2" --name d
grep -qi "transfer closed\|partial" <<<"$(jq -r .error.details.reason <<<"$LAST_JSON")" &&
  ok "drop reason names the partial transfer" || fail "drop reason: $LAST_JSON"
VMCTL_DOWNLOAD_STALL_SECONDS=2 expect_code "stalled transfer" vm_manager::image::download_failed image pull "$base/slow/small.qcow2" --name s
expect_code "connection refused" vm_manager::image::download_failed image pull "http://127.0.0.1:1/x.qcow2" --name cr
expect_code "wrong checksum" vm_manager::image::checksum_mismatch image pull "$base/files/small.qcow2" --name w --sha256 "$(printf '0%.0s' $(seq 64))"
expect_eq "checksum details: actual" "$(jq -r .error.details.actual <<<"$LAST_JSON")" "$sha_small"
expect_code "truncated qcow2" vm_manager::image::format_detection_failed image pull "$base/files/trunc.qcow2"
expect_code "corrupt qcow2" vm_manager::image::format_detection_failed image pull "$base/files/corrupt.qcow2"
expect_code "truncated xz" vm_manager::image::download_failed image pull "$base/files/cut.raw.xz" --name cut
expect_code "bad sha256 syntax" vm_manager::config::invalid image pull "$base/files/small.qcow2" --name b --sha256 xyz

names=$(vm --json image list | jq -r '[.[].name] | sort | join(",")')
expect_eq "only complete images in the cache" "$names" "f,small,x,z"
leftovers=$(find "$VMCTL_HOME/images" -maxdepth 1 -name '.tmp-*' | wc -l)
expect_eq "failed pulls leave nothing behind" "$leftovers" 0

# a pull killed mid-transfer leaves no image that looks complete, and prune removes its leftovers
VMCTL_DOWNLOAD_STALL_SECONDS=60 "$VMCTL" image pull "$base/slow/small.qcow2" --name killed >/dev/null 2>&1 &
pull_pid=$!
for _ in $(seq 50); do [ -n "$(find "$VMCTL_HOME/images" -maxdepth 1 -name '.tmp-killed-*')" ] && break; sleep 0.1; done
sleep 0.5
kill -9 $pull_pid; wait $pull_pid 2>/dev/null
expect_eq "killed pull: not listed" "$(vm --json image list | jq -r '[.[].name] | index("killed")')" null
# the next image command (that list) removed the leftovers of the killed pull; prune has none left
expect_eq "the next image command removes the killed pull's leftovers" "$(find "$VMCTL_HOME/images" -maxdepth 1 -name '.tmp-killed-*' | wc -l)" 0
out=$(vm --json image prune)
expect_eq "prune finds nothing left" "$(jq -r '.removed | length' <<<"$out")" 0
expect_eq "nothing left" "$(find "$VMCTL_HOME/images" -maxdepth 1 -name '.tmp-*' | wc -l)" 0

# Ctrl-C (SIGINT) mid-transfer: the pull is cancelled, exits 130 and leaves nothing
VMCTL_DOWNLOAD_STALL_SECONDS=60 "$VMCTL" image pull "$base/slow/small.qcow2" --name interrupted >/dev/null 2>&1 &
pull_pid=$!
for _ in $(seq 50); do [ -n "$(find "$VMCTL_HOME/images" -maxdepth 1 -name '.tmp-interrupted-*')" ] && break; sleep 0.1; done
sleep 0.5
kill -INT $pull_pid; wait $pull_pid; rc=$?
expect_eq "SIGINT: pull exits 130" "$rc" 130
expect_eq "SIGINT: pull left no .tmp dir" "$(find "$VMCTL_HOME/images" -maxdepth 1 -name '.tmp-*' | wc -l)" 0

finish
