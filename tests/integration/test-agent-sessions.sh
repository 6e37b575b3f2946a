#!/bin/bash
# Several vmctl processes talking to ONE booted default guest at once: each takes a free
# virtio-serial port of its own (org.vmctl.agent, .1, .2, .3), and each port is an agent session
# of its own. Checked with the guest's own clock (/proc/uptime), never an absolute time:
# - three `vmctl exec` processes run their commands at the same time (the guest intervals have a
#   common point; each client's NEW_SESSION ping leaves the others' commands alone);
# - six processes on four ports all succeed, and never more than four commands run at once;
# - a client killed mid-command loses its command in the guest, another client's command on
#   another port finishes;
# - AF_VSOCK sessions, without vhost-vsock on this host: with vsock_loopback loaded in the guest,
#   tests/agent/vsock-sessions.c (static, copied in) talks to the agent over vsock (CID 1): four
#   sessions with the same request id, NEW_SESSION and a close touching only their own session,
#   16 sessions served and a 17th closed.
. "$(dirname "$0")/lib.sh"
src=$(cd "$(dirname "$0")/../.." && pwd)
need_guest
setup_home
tmp=$VMCTL_HOME/t
mkdir -p "$tmp"

vm run se >/dev/null 2>&1 || { fail "run se"; finish; }

# record NAME SECONDS: a command that writes its guest start and end times to /tmp/NAME.{start,end}
record() {
  echo "read t x </proc/uptime; echo \$t >/tmp/$1.start; sleep $2; read t x </proc/uptime; echo \$t >/tmp/$1.end; echo $1-done"
}

# intervals N1 N2 ...: "start end" per name, read back from the guest
intervals() {
  local n
  for n in "$@"; do
    printf '%s %s\n' "$(vm exec se -- cat "/tmp/$n.start")" "$(vm exec se -- cat "/tmp/$n.end")"
  done
}

# --- three processes at once: their guest intervals overlap
pids=()
for n in a b c; do
  "$VMCTL" exec se -- sh -c "$(record "$n" 2)" >"$tmp/$n.out" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  wait "${pids[$i]}"; rc=$?
  n=$(echo a b c | cut -d' ' -f$((i + 1)))
  expect_eq "exec $n: exit code and output" "$rc $(cat "$tmp/$n.out")" "0 $n-done"
done
iv=$(intervals a b c)
echo "$iv" | sed 's/^/  guest interval: /'
# a common point: the latest start is before the earliest end
awk 'NF == 2 { if ($1 > s) s = $1; if (e == "" || $2 < e) e = $2 } END { exit !(s < e) }' <<<"$iv" &&
  ok "three execs ran at the same time in the guest" || fail "no overlap: $iv"

# --- six processes on four ports: all succeed, at most four run at once
pids=()
for i in 1 2 3 4 5 6; do
  "$VMCTL" exec se -- sh -c "$(record "s$i" 2)" >"$tmp/s$i.out" 2>&1 &
  pids+=($!)
done
good=0
for i in 1 2 3 4 5 6; do
  wait "${pids[$((i - 1))]}" && [ "$(cat "$tmp/s$i.out")" = "s$i-done" ] && good=$((good + 1)) ||
    echo "  s$i: $(cat "$tmp/s$i.out")"
done
expect_eq "six concurrent execs on four ports all succeed" "$good" 6
iv=$(intervals s1 s2 s3 s4 s5 s6)
echo "$iv" | sed 's/^/  guest interval: /'
# the most commands running at one instant (an end at the same instant as a start comes first)
most=$(awk 'NF == 2 { print $1, 1; print $2, 0 }' <<<"$iv" | sort -k1,1n -k2,2n |
  awk '{ n += $2 ? 1 : -1; if (n > m) m = n } END { print m }')
[ "$most" -ge 2 ] && [ "$most" -le 4 ] && ok "at most four at once, the others waited (peak $most)" ||
  fail "peak concurrency $most (expected 2..4 with 4 ports)"

# --- a client killed mid-command: only its own session's command goes
vm exec se -- rm -f /tmp/k.end /tmp/l.end
"$VMCTL" exec se -- sh -c "$(record k 4)" >/dev/null 2>&1 &
killed=$!
"$VMCTL" exec se -- sh -c "$(record l 3)" >"$tmp/l.out" 2>&1 &
other=$!
# kill the first client once its command runs in the guest
for _ in $(seq 100); do vm exec se -- test -e /tmp/k.start 2>/dev/null && break; sleep 0.1; done
kill -9 "$killed"
wait "$killed" 2>/dev/null
wait "$other"; rc=$?
expect_eq "the other client's command finished" "$rc $(cat "$tmp/l.out")" "0 l-done"
sleep 2 # past the end the killed command would have reached
expect_eq "the killed client's command was stopped in the guest" \
  "$(vm exec se -- sh -c 'test -e /tmp/k.end && echo ran-on || echo stopped')" stopped

expect_eq "exec still works afterwards" "$(vm exec se -- echo fine)" fine

# --- vsock sessions inside the guest (vsock_loopback from the guest kernel's own package)
kv=$(vm exec se -- uname -r)
deb=$(ls "${XDG_CACHE_HOME:-$HOME/.cache}"/vmctl/debs/linux-image-"$kv"_*.deb 2>/dev/null | head -1)
if [ -z "$deb" ]; then
  skip_section "the vsock sessions: no cached kernel package for $kv (vmctl image build-default caches it)"
else
  mkdir -p "$tmp/k"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/k" --wildcards '*/vsock_loopback.ko*'
  ko=$(find "$tmp/k" -name 'vsock_loopback.ko*' | head -1)
  case "$ko" in
    *.xz) xz -dc "$ko" >"$tmp/vsock_loopback.ko" ;;
    *.zst) zstd -qdc "$ko" >"$tmp/vsock_loopback.ko" ;;
    *) cp "$ko" "$tmp/vsock_loopback.ko" ;;
  esac
  gcc -std=gnu17 -O2 -static -I"$src/src/proto" -o "$tmp/vsock-sessions" \
    "$src/tests/agent/vsock-sessions.c" "$src/src/proto/agent-proto.c" || fail "compile vsock-sessions"
  vm cp "$tmp/vsock_loopback.ko" se:/tmp/vsock_loopback.ko && vm cp "$tmp/vsock-sessions" se:/tmp/ ||
    fail "copy to the guest"
  vm exec se -- sh -c 'rm -f /tmp/vs-closed.*; test -e /dev/vsock && insmod /tmp/vsock_loopback.ko' ||
    fail "vsock_loopback in the guest"
  out=$(vm exec se -- /tmp/vsock-sessions 1 1024)
  expect_eq "vsock sessions (same id on 4 sessions, NEW_SESSION, close, 16 + 1)" "$out" "vsock sessions ok"
  sleep 2 # past the end the closed session's command would have reached
  expect_eq "the closed vsock session's command was stopped" \
    "$(vm exec se -- sh -c 'test -e /tmp/vs-closed.start && ! test -e /tmp/vs-closed.end && echo stopped')" stopped
fi
vm destroy --force se >/dev/null || fail "destroy"
finish
