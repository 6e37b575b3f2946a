#!/bin/bash
# A hostile guest and `vmctl cp` out of it (issue 16). Each trial plants something in a real
# default guest (or, for the lying agent, has fake-agent.py answer in its place) and checks that
# nothing lands on the host that the guest should not be able to put there: writes through a
# symlink the guest made, setuid/setgid/sticky bits, the guest's owners, device nodes, FIFOs,
# a "./" entry changing the destination's mode, '..' and hard links out of the tree, a FILE_INFO
# that lies about the mode or the size, a truncated archive. Ends with the line
#   hostile-cp: N trials, M escapes
# Every trial counts as an escape when it fails (run it with VMCTL pointing at a build without the
# fix: the symlink, setuid, owner, device, FIFO, "./" and lying-agent trials escape).
. "$(dirname "$0")/lib.sh"
need_guest
command -v python3 >/dev/null || skip "python3 is needed for the fake agent (apt-get install python3)"
command -v sqlite3 >/dev/null || skip "sqlite3 is needed to mark the fake agent's vm running (apt-get install sqlite3)"
setup_home
src=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$VMCTL_HOME/t
victim=$VMCTL_HOME/victim # stands for any host directory the guest would like to write into
mkdir -p "$tmp" "$victim"
echo host >"$victim/victim-file"
me=$(id -u)
trials=0 escapes=0
# trial NAME CONDITION-THAT-MEANS-SAFE...
safe() { trials=$((trials + 1)); ok "$1"; }
escape() { trials=$((trials + 1)); escapes=$((escapes + 1)); fail "escape: $1"; }
check() { local what=$1; shift; if "$@"; then safe "$what"; else escape "$what"; fi; }
mode_of() { stat -c %a "$1" 2>/dev/null; }
no_special_bits() { [ -e "$1" ] && [ $(( 0$(stat -c %a "$1") & 07000 )) -eq 0 ]; }
owned_by_me() { [ "$(stat -c %u "$1" 2>/dev/null)" = "$me" ]; }
umask 022

vm run hc >/dev/null 2>&1 || { fail "run hc"; finish; }

# --- 1. a symlink planted by the first copy, written through by the second (the issue's case)
vm exec hc -- sh -c "mkdir -p /y && ln -s '$victim' /y/y && echo x >/y/P" || fail "plant /y"
vm cp hc:/y "$tmp/out" || fail "first cp of /y"
vm cp hc:/y "$tmp/out"; rc=$?
check "second copy does not write through the planted symlink" test ! -e "$victim/P"
expect_eq "second copy succeeds (the link is replaced by a directory)" "$rc" 0
[ -L "$tmp/out/y" ] && expect_eq "the link stays a link" ok ok
[ -d "$tmp/out/y" ] && [ ! -L "$tmp/out/y" ] && expect_eq "out/y is now a directory" ok ok
expect_eq "out/y holds the guest's P" "$(cat "$tmp/out/y/P" 2>/dev/null)" x

# --- 2. setuid/setgid/sticky, owners, devices, FIFOs, a world-writable "./"
vm exec hc -- sh -c '
  mkdir -p /h/sub /h/sg &&
  echo s >/h/suid && chown 1234:1234 /h/suid && chmod 4755 /h/suid &&
  echo g >/h/sgid && chmod 2755 /h/sgid &&
  chmod 1777 /h/sub && chmod 2777 /h/sg &&
  mknod /h/mem c 1 1 && mknod /h/blk b 7 0 && mkfifo /h/fifo &&
  ln /h/sgid /h/hardlink && ln -s /etc/shadow /h/shadow-link &&
  chmod 0777 /h' || fail "plant /h"
mkdir -m 0700 "$tmp/hdest" "$tmp/hdest/h"
out=$(vm --json cp hc:/h "$tmp/hdest"); rc=$?
expect_eq "cp of a tree with devices fails with cp::unsafe_entry" \
  "$rc/$(jq -r .error.code <<<"$out")" "1/vm_manager::cp::unsafe_entry"
d=$tmp/hdest/h
check "setuid bit dropped ($(mode_of "$d/suid"))" no_special_bits "$d/suid"
check "setgid bit dropped ($(mode_of "$d/sgid"))" no_special_bits "$d/sgid"
check "sticky bit dropped from a directory ($(mode_of "$d/sub"))" no_special_bits "$d/sub"
check "setgid bit dropped from a directory ($(mode_of "$d/sg"))" no_special_bits "$d/sg"
check "the guest's owner is not kept (uid $(stat -c %u "$d/suid" 2>/dev/null))" owned_by_me "$d/suid"
check "no character device on the host" test ! -e "$d/mem"
check "no block device on the host" test ! -e "$d/blk"
check "no FIFO on the host" test ! -e "$d/fifo"
check "./ does not change the destination's mode ($(mode_of "$d"))" test "$(mode_of "$d")" = 700
check "a link to /etc/shadow stays a link" test -L "$d/shadow-link"
expect_eq "hard link inside the tree kept" "$(stat -c %i "$d/hardlink" 2>/dev/null)" "$(stat -c %i "$d/sgid" 2>/dev/null)"
grep -q "'mem': a character device" <<<"$(jq -r '.error.notes[]?' <<<"$out")" &&
  ok "the note names the device" || fail "notes: $out"
vm cp hc:/h "$tmp/hnew" >/dev/null 2>&1
check "a new destination is not world-writable ($(mode_of "$tmp/hnew"))" test "$(mode_of "$tmp/hnew")" = 755
vm cp hc:/h/suid "$tmp/suid-file" || fail "cp of one setuid file"
check "single file: setuid bit dropped ($(mode_of "$tmp/suid-file"))" no_special_bits "$tmp/suid-file"
check "single file: owned by the caller" owned_by_me "$tmp/suid-file"

# --- 3. a round trip of an ordinary tree still works (modes, times, links, long names)
vm exec hc -- sh -c 'mkdir -p /n/a/b && echo one >/n/a/f && chmod 0640 /n/a/f &&
  ln -s f /n/a/lnk && touch -d "2020-01-02 03:04:05" /n/a/f &&
  n=/n/a/b/$(printf "x%.0s" $(seq 1 150)) && echo long >"$n" && mkdir -m 0750 /n/priv' ||
  fail "plant /n"
vm cp hc:/n "$tmp/n" || fail "cp of an ordinary tree"
expect_eq "file mode kept" "$(mode_of "$tmp/n/a/f")" 640
expect_eq "file mtime kept" "$(stat -c %Y "$tmp/n/a/f")" "$(date -d '2020-01-02 03:04:05' +%s)"
expect_eq "dir mode kept" "$(mode_of "$tmp/n/priv")" 750
expect_eq "symlink kept" "$(readlink "$tmp/n/a/lnk")" f
expect_eq "a 150-byte name" "$(cat "$tmp/n/a/b/"x* 2>/dev/null)" long
echo stale >"$tmp/n/a/f"
vm cp hc:/n "$tmp" >/dev/null || fail "copy again into the same place"
expect_eq "copied again: files replaced, directories merged" "$(cat "$tmp/n/a/f")/$(ls "$tmp/n" | tr '\n' ' ')" "one/a priv "

# --- 4. copies into the guest: a FIFO named on the host does not hang, links are sent as links
mkfifo "$tmp/fifo"
timeout 20 "$VMCTL" cp "$tmp/fifo" hc:/tmp/fifo >/dev/null 2>&1; rc=$?
[ "$rc" -ne 124 ] && ok "cp of a host FIFO does not hang (exit $rc)" || fail "cp of a host FIFO hung"
mkdir -p "$tmp/up" && ln -s /etc/hostname "$tmp/up/l"
vm cp "$tmp/up" hc:/tmp/up || fail "cp of a tree with a link into the guest"
expect_eq "the host link arrives as a link" "$(vm exec hc -- readlink /tmp/up/l)" /etc/hostname

# --- 5. a lying agent: fake-agent.py on the socket of a vm marked running in the store
vm create liar >/dev/null 2>&1 || fail "create liar"
dir=$(vm status --json liar | jq -r .dir)
fake_pid=
start_liar() {
  [ -n "$fake_pid" ] && { kill "$fake_pid" 2>/dev/null; wait "$fake_pid" 2>/dev/null; }
  rm -f "$dir/agent.sock"
  python3 "$src/tests/integration/fake-agent.py" "$dir/agent.sock" "$1" "$victim" &
  fake_pid=$!
  for _ in $(seq 100); do [ -S "$dir/agent.sock" ] && break; sleep 0.05; done
  local st; st=$(awk '{print $22}' "/proc/$fake_pid/stat")
  sqlite3 "$VMCTL_HOME/vmctl.db" \
    "UPDATE vms SET state='running', pid=$fake_pid, pid_start=$st WHERE name='liar'"
}
stop_liar() {
  [ -n "$fake_pid" ] && { kill "$fake_pid" 2>/dev/null; wait "$fake_pid" 2>/dev/null; }
  fake_pid=
  sqlite3 "$VMCTL_HOME/vmctl.db" "UPDATE vms SET state='stopped', pid=0, pid_start=0 WHERE name='liar'"
}

start_liar mode-lie
vm cp liar:/x "$tmp/liar-mode" >/dev/null 2>&1
check "FILE_INFO 06777: no setuid/setgid, not world-writable ($(mode_of "$tmp/liar-mode"))" \
  test "$(mode_of "$tmp/liar-mode")" = 755
check "FILE_INFO claiming a device makes a regular file" test -f "$tmp/liar-mode"

for sc in size-short size-long data-first; do
  start_liar "$sc"
  out=$(vm --json cp liar:/x "$tmp/liar-$sc" 2>/dev/null); rc=$?
  check "$sc: refused ($(jq -r .error.code <<<"$out"))" test "$rc" = 1 -a ! -e "$tmp/liar-$sc"
  ls "$tmp" | grep -q "liar-$sc.vmctl-" && fail "$sc: temporary file left" || true
done

start_liar evil-tar
out=$(vm --json cp liar:/x "$tmp/evil" 2>/dev/null)
check "tar: no file through a symlink made by the same archive" test ! -e "$victim/through-link"
check "tar: no '..' out of the tree" test ! -e "$VMCTL_HOME/t/dotdot" -a ! -e "$tmp/dotdot"
check "tar: no hard link to a host file" test ! -e "$tmp/evil/h" -o "$(stat -c %i "$tmp/evil/h" 2>/dev/null)" != "$(stat -c %i "$victim/victim-file")"
check "tar: setuid 04777 arrives $(mode_of "$tmp/evil/suid")" test "$(mode_of "$tmp/evil/suid")" = 755
check "tar: setgid dir arrives $(mode_of "$tmp/evil/sgiddir")" no_special_bits "$tmp/evil/sgiddir"
check "tar: sticky dir arrives $(mode_of "$tmp/evil/sticky")" no_special_bits "$tmp/evil/sticky"
check "tar: no device node" test ! -e "$tmp/evil/mem"
check "tar: no FIFO" test ! -e "$tmp/evil/fifo"
check "tar: ./ 0777 does not make the destination world-writable ($(mode_of "$tmp/evil"))" \
  test "$(mode_of "$tmp/evil")" = 755
check "tar: an absolute name stays inside" test -e "$tmp/evil/${victim#/}/absolute" -a ! -e "$victim/absolute"
expect_eq "tar: the copy reports what it left out" "$(jq -r .error.code <<<"$out")" vm_manager::cp::unsafe_entry
expect_eq "victim directory untouched" "$(ls "$victim")" victim-file

start_liar truncated-tar
out=$(vm --json cp liar:/x "$tmp/trunc" 2>/dev/null); rc=$?
check "a truncated archive is an error ($(jq -r .error.message <<<"$out"))" test "$rc" = 1
check "no partial file of a truncated archive" test ! -e "$tmp/trunc/big"
stop_liar

echo "hostile-cp: $trials trials, $escapes escapes"
vm destroy --force liar >/dev/null 2>&1
finish
