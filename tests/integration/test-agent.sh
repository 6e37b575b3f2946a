#!/bin/bash
# The guest agent end to end on ONE booted default guest: exit codes, signals, stdout/stderr
# separation and order, 50 MiB of output (checksum), binary data both ways, stdin to EOF, a timeout
# that kills the whole process group, 16 concurrent execs on one session (tests/agent/exec-many.c
# through libvmctl), file and directory copies with checksum/mode/mtime, metadata and info, the
# agent killed mid-exec (clear error, VM usable after init restarts it), malformed frames.
. "$(dirname "$0")/lib.sh"
need_guest
setup_home
command -v python3 >/dev/null || skip "python3 is needed to send raw frames"
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "$(dirname "$VMCTL")/../.." && pwd)
tmp=$VMCTL_HOME/t
mkdir -p "$tmp"

vm run ag >/dev/null 2>&1 || { fail "run ag"; finish; }

# --- exit codes and signals
for code in 0 3 255; do
  vm exec ag -- sh -c "exit $code"; expect_eq "exit code $code" "$?" "$code"
done
vm exec ag -- sh -c 'kill -TERM $$'; expect_eq "signal TERM -> 143" "$?" 143
vm exec ag -- sh -c 'kill -KILL $$'; expect_eq "signal KILL -> 137" "$?" 137
out=$(vm --json exec ag -- sh -c 'kill -9 $$'); rc=$?
expect_eq "json signal" "$(jq -c '[.exit_code, .signal]' <<<"$out")/$rc" "[null,9]/137"
vm exec ag -- /no/such/cmd 2>"$tmp/nf.err"; expect_eq "command not found exits 127" "$?" 127
grep -q "No such file" "$tmp/nf.err" && ok "guest message" ||
  fail "guest message missing: $(cat "$tmp/nf.err")"

# --- run as another user (--user): by number, number:group, and by name with its groups
expect_eq "--user UID" "$(vm exec ag --user 65534 -- id -u)" 65534
expect_eq "--user UID:GID" "$(vm exec ag --user 1000:1001 -- sh -c 'echo $(id -u) $(id -g) $HOME $USER')" \
  "1000 1001 / 1000"
vm exec ag -- sh -c 'echo "tester:x:1234:1234::/home/tester:/bin/sh" >>/etc/passwd &&
  echo "tester:x:1234:" >>/etc/group && echo "extra:x:4321:root,tester" >>/etc/group &&
  mkdir -p /home/tester' || fail "add a user"
expect_eq "--user NAME: uid, groups, HOME, USER" \
  "$(vm exec ag --user tester -- sh -c 'echo $(id -u) $(id -G) $HOME $USER $LOGNAME')" \
  "1234 1234 4321 /home/tester tester tester"
expect_eq "--env wins over the user's HOME" \
  "$(vm exec ag --user tester --env HOME=/tmp -- sh -c 'echo $HOME')" /tmp
vm exec ag --user 65534 -- sh -c 'echo x >/root/denied' 2>/dev/null
[ $? -ne 0 ] && ok "an unprivileged user cannot write /root" || fail "uid 65534 wrote to /root"
expect_code "--user unknown" vm_manager::agent::failed exec ag --user nosuchuser -- true
jq -r .error.message <<<"$LAST_JSON" | grep -q "no such user" && ok "unknown user explained" ||
  fail "unknown user: $LAST_JSON"
expect_code "--user over ssh" vm_manager::config::invalid exec ag --via ssh --user 1000 -- true

# --- stdout/stderr separation and order
vm exec ag -- sh -c 'echo o1; echo e1 >&2; echo o2' >"$tmp/o" 2>"$tmp/e"
expect_eq "stdout only" "$(cat "$tmp/o")" "o1
o2"
expect_eq "stderr only" "$(cat "$tmp/e")" "e1"
vm exec ag -- sh -c 'echo 1; sleep 0.2; echo 2 >&2; sleep 0.2; echo 3; sleep 0.2; echo 4 >&2' >"$tmp/oe" 2>&1
expect_eq "order across streams" "$(tr '\n' ' ' <"$tmp/oe")" "1 2 3 4 "
# streamed live: the first line arrives while the command still runs
start=$(date +%s%N)
first=$(vm exec ag -- sh -c 'echo early; sleep 3; echo late' | { read -r l; echo "$l $(( ($(date +%s%N) - start) / 1000000 ))"; cat >/dev/null; })
ms=${first#early }
[ "${first%% *}" = early ] && [ "$ms" -lt 2500 ] && ok "output streamed live (${ms} ms)" ||
  fail "output not live: '$first'"

# --- 50 MiB of output, checksummed on both sides
vm exec ag -- sh -c 'head -c 52428800 /dev/urandom >/tmp/big' || fail "make /tmp/big"
want=$(vm exec ag -- sha256sum /tmp/big | cut -d' ' -f1)
got=$(vm exec ag -- cat /tmp/big | sha256sum | cut -d' ' -f1)
expect_eq "50 MiB stdout checksum" "$got" "$want"
got=$(vm exec ag -- sh -c 'cat /tmp/big >&2' 2>&1 >/dev/null | sha256sum | cut -d' ' -f1)
expect_eq "50 MiB stderr checksum" "$got" "$want"
vm exec ag -- rm -f /tmp/big

# --- binary data in and out, stdin to EOF
head -c 3000000 /dev/urandom >"$tmp/bin"
want=$(sha256sum <"$tmp/bin" | cut -d' ' -f1)
expect_eq "binary stdin (3 MB) seen by the guest" \
  "$(vm exec ag -i -- sha256sum <"$tmp/bin" | cut -d' ' -f1)" "$want"
expect_eq "binary round trip through cat" \
  "$(vm exec ag -i -- cat <"$tmp/bin" | sha256sum | cut -d' ' -f1)" "$want"
expect_eq "stdin to EOF" "$(printf 'a\nb\nc\n' | vm exec ag -i -- wc -l | tr -d ' ')" 3
expect_eq "no -i: stdin is /dev/null" "$(echo x | vm exec ag -- wc -c | tr -d ' ')" 0
expect_eq "command ignoring its input" "$(vm exec ag -i -- echo done <"$tmp/bin")" done

# --- timeout kills the process group
t0=$(date +%s)
expect_code "timeout" vm_manager::timeout exec ag --timeout 1 -- sh -c 'sleep 1000 & sleep 1000'
expect_eq "timeout details" "$(jq -c '[.error.details.operation, .error.details.timeout_seconds]' <<<"$LAST_JSON")" '["exec",1]'
[ $(($(date +%s) - t0)) -lt 10 ] && ok "timeout returned promptly" || fail "timeout slow"
expect_eq "no sleep 1000 left" "$(vm exec ag -- sh -c 'ps -o args | grep -c "^sleep 1000"')" 0

# --- 16 concurrent execs on one session (library)
gcc -std=gnu17 -O2 -Wall -I"$src/include" -I"$build/include" -o "$tmp/exec-many" "$src/tests/agent/exec-many.c" \
  -L"$build/src/lib" -lvmctl -Wl,-rpath,"$build/src/lib" || fail "compile exec-many"
out=$("$tmp/exec-many" "$VMCTL_HOME" ag concurrent 16)
grep -q "all ok" <<<"$out" && ok "16 concurrent execs: outputs and codes" || fail "concurrent: $out"
el=$(sed -n 's/^elapsed //p' <<<"$out")
awk -v e="$el" 'BEGIN { exit !(e < 8) }' && ok "16 x sleep 1 ran concurrently (${el} s)" ||
  fail "not concurrent: ${el} s"

# --- files: round trip with checksum, mode and mtime
head -c 5000000 /dev/urandom >"$tmp/f"
chmod 0751 "$tmp/f"
touch -d '2020-01-02 03:04:05' "$tmp/f"
vm cp "$tmp/f" ag:/tmp/f || fail "cp to vm"
expect_eq "guest checksum" "$(vm exec ag -- sha256sum /tmp/f | cut -d' ' -f1)" "$(sha256sum <"$tmp/f" | cut -d' ' -f1)"
expect_eq "guest mode" "$(vm exec ag -- stat -c %a /tmp/f)" 751
expect_eq "guest mtime" "$(vm exec ag -- stat -c %Y /tmp/f)" "$(stat -c %Y "$tmp/f")"
vm cp ag:/tmp/f "$tmp/f2" || fail "cp from vm"
cmp -s "$tmp/f" "$tmp/f2" && ok "file round trip identical" || fail "file round trip differs"
expect_eq "local mode" "$(stat -c %a "$tmp/f2")" 751
expect_eq "local mtime" "$(stat -c %Y "$tmp/f2")" "$(stat -c %Y "$tmp/f")"
vm cp "$tmp/f" ag:/root/ || fail "cp into a directory"
expect_eq "into a directory keeps the name" "$(vm exec ag -- stat -c %s /root/f)" 5000000
expect_code "cp of a missing guest file" vm_manager::agent::failed cp ag:/nonexistent "$tmp/x"
[ -e "$tmp/x" ] && fail "partial file left" || ok "no partial file left"

# --- directories (tar)
mkdir -p "$tmp/d/sub/deeper"
echo one >"$tmp/d/a"; head -c 100000 /dev/urandom >"$tmp/d/sub/b"; echo three >"$tmp/d/sub/deeper/c"
chmod 0600 "$tmp/d/a"
vm cp "$tmp/d" ag:/tmp/dcopy || fail "cp dir to vm"
expect_eq "dir in guest" "$(vm exec ag -- sh -c 'cd /tmp/dcopy && find . | sort | tr "\n" " "')" ". ./a ./sub ./sub/b ./sub/deeper ./sub/deeper/c "
mkdir "$tmp/back"
vm cp ag:/tmp/dcopy "$tmp/back" || fail "cp dir from vm"
diff -r "$tmp/d" "$tmp/back/dcopy" >/dev/null && ok "dir round trip identical" || fail "dir round trip differs"
expect_eq "dir file mode kept" "$(stat -c %a "$tmp/back/dcopy/a")" 600

# --- metadata and info
"$tmp/exec-many" "$VMCTL_HOME" ag metadata sandbox1 GREETING=hello token 's3cr3t' || fail "metadata"
expect_eq "hostname" "$(vm exec ag -- hostname)" sandbox1
expect_eq "env for later commands" "$(vm exec ag -- sh -c 'echo $GREETING')" hello
expect_eq "secret file" "$(vm exec ag -- sh -c 'stat -c %a /run/vmctl/secrets/token; cat /run/vmctl/secrets/token')" "600
s3cr3t"
out=$("$tmp/exec-many" "$VMCTL_HOME" ag info)
grep -Eq '^uptime [0-9.]+ mem_total [1-9][0-9]+ mem_available [1-9]' <<<"$out" && ok "info: $out" || fail "info: $out"

# --- malformed frames: the agent answers errors and keeps working
sock=$(vm status --json ag | jq -r .dir)/agent.sock
py_out=$(python3 - "$sock" <<'PY'
import socket, struct, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
def frame(ver, typ, fid, payload, flags=0):
    return b"VMA" + bytes([ver, typ, flags, 0, 0]) + struct.pack("<II", fid, len(payload)) + payload
s.sendall(b"\x00garbage VM\xffVM" * 50)                 # garbage: resync
s.sendall(frame(2, 0x10, 7, b"\x01\x02\x03"))            # malformed EXEC
s.sendall(frame(9, 0x10, 8, b""))                        # unknown version
s.sendall(frame(2, 0x7e, 9, b""))                        # unknown type
s.sendall(b"VMA\x02\x10\x00\x00\x00" + struct.pack("<II", 10, 0x7fffffff))  # absurd length
s.sendall(frame(1, 0x01, 11, b""))                       # and a ping after all that
got, buf, t0 = [], b"", time.time()
while time.time() - t0 < 5 and 11 not in [g[1] for g in got]:
    buf += s.recv(65536)
    while len(buf) >= 16 and buf[:3] == b"VMA":
        n = struct.unpack("<I", buf[12:16])[0]
        if len(buf) < 16 + n: break
        got.append((buf[4], struct.unpack("<I", buf[8:12])[0], buf[16:16 + n])); buf = buf[16 + n:]
for typ, fid, p in got: print(hex(typ), fid, p[8:].split(b"\0")[0].decode(errors="replace") if typ == 3 else "")
PY
)
grep -q "^0x3 7 malformed EXEC" <<<"$py_out" && ok "malformed EXEC answered" || fail "malformed EXEC: $py_out"
grep -q "^0x3 8 unsupported protocol version 9" <<<"$py_out" && ok "bad version answered" || fail "bad version: $py_out"
grep -q "^0x3 9 unsupported message type" <<<"$py_out" && ok "unknown type answered" || fail "unknown type: $py_out"
grep -q "^0x2 11" <<<"$py_out" && ok "ping answered after the garbage" || fail "no pong: $py_out"
expect_eq "exec after malformed frames" "$(vm exec ag -- echo still-fine)" still-fine

# --- the agent killed mid-exec: clear error, then usable again
out=$(vm --json exec ag -- sh -c 'echo before; kill -9 $(pidof vmctl-agent); sleep 20'); rc=$?
expect_eq "killed agent: exec fails" "$rc/$(jq -r .error.code <<<"$out")" "1/vm_manager::agent::failed"
jq -r .error.message <<<"$out" | grep -q "restarted" && ok "error says the agent restarted" ||
  fail "unclear error: $out"
expect_eq "exec after the agent restarted" "$(vm exec ag -- echo back)" back

vm destroy --force ag >/dev/null || fail "destroy"
finish
