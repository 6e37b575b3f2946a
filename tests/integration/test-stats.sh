#!/bin/bash
# vmctl stats (issue 12, metrics): one booted VM (the default guest's kernel and initrd with a
# 1 GiB qcow2 disk, as test-disk-full makes it, on user-mode networking) shared by every case.
# - user-mode networking: no host counters (a reason, no made-up numbers), the guest's own
#   eth0 counters move after pings of the slirp gateway;
# - counters move: a 4 MiB O_DIRECT write to /dev/vda in the guest raises disk0's write bytes by
#   at least 4 MiB and its write requests; a busy loop of 1-2 s raises the QEMU process's CPU time;
# - --json: every source's fields present and numeric, the available flags, cpu.percent with
#   --interval; the table's columns;
# - --prometheus parses (a checker below: the exposition grammar, HELP and TYPE for every metric,
#   counters ending in _total, label values escaped, no duplicate series);
# - a VM that is not running, and a VM whose QMP socket is gone (query-blockstats fails), give
#   vm_manager::metrics::failed naming the source while the other values are still printed;
# - a paused VM: no guest values and no error;
# - no NAME: the running VMs only; --watch redraws (a table per interval, ANSI on a terminal);
# - the cgroup source of the jailed VM (as root);
# - PSS shows what clones share: two clones of one template snapshot, PSS well below RSS.
. "$(dirname "$0")/lib.sh"
need_guest
command -v qemu-img >/dev/null || skip "qemu-img is needed for the disk image (apt-get install qemu-utils)"
command -v python3 >/dev/null || skip "python3 is needed for the Prometheus checker (apt-get install python3)"
# the home's images/ is a directory of its own (the blank disk is imported there), with the
# default guest linked in: never import into the shared $VMCTL_TEST_IMAGES
export VMCTL_HOME
VMCTL_HOME=$(mktemp -d "/tmp/vmctl-$TEST_NAME.XXXXXX")
mkdir -p "$VMCTL_HOME/images"
ln -s "$VMCTL_TEST_IMAGES/default" "$VMCTL_HOME/images/default"
trap cleanup EXIT
def=$VMCTL_TEST_IMAGES/default

vm create probe >/dev/null 2>&1 || fail "create probe"
cmdline=$(vm status --json probe | jq -r .cmdline)
vm destroy --force probe >/dev/null 2>&1
qemu-img create -q -f qcow2 "$VMCTL_HOME/blank.qcow2" 1G || fail "qemu-img create"
vm image import "$VMCTL_HOME/blank.qcow2" --name blank >/dev/null 2>&1 || fail "import blank"
rm -f "$VMCTL_HOME/blank.qcow2"
vm create io --kernel "$def/vmlinux" --initrd "$def/initrd.img" --image blank \
  --cmdline "$cmdline" --net user >/dev/null 2>&1 || { fail "create io"; finish; }
vm start io --wait --timeout 120 >/dev/null 2>&1 || { fail "start io"; finish; }
vm create off --net none >/dev/null 2>&1 || fail "create off"
for _ in $(seq 100); do vm exec io -- test -b /dev/vda && break; sleep 0.2; done

js() { vm stats --json "$@" 2>/dev/null; }

# --- JSON fields
out=$(js io); rc=$?
expect_eq "stats io --json exits 0" "$rc" 0
expect_eq "an array of one" "$(jq -r 'length' <<<"$out")" 1
expect_eq "every source available but the host's network (user-mode), no errors" \
  "$(jq -c '.[0] | [.cpu.available, .memory.available, .uptime.available, .disk.available, .network.available, .guest.available, .guest_network.available, (.errors | length)]' <<<"$out")" \
  "[true,true,true,true,false,true,true,0]"
expect_eq "numeric fields" "$(jq -r '.[0] | [.pid, .vcpus, .memory_bytes, .cpu.seconds, .cpu.user_seconds,
  .cpu.system_seconds, .memory.rss_bytes, .memory.pss_bytes, .uptime.seconds,
  .guest.mem_total_bytes, .guest.mem_available_bytes, .guest.load[0], .guest.load[2],
  .guest.uptime_seconds, (.disk.devices[] | .read_bytes, .write_bytes, .read_ops, .write_ops)]
  | map(type) | unique | join(",")' <<<"$out")" number
expect_eq "disks: disk0 and seed" "$(jq -r '[.[0].disk.devices[].device] | sort | join(",")' <<<"$out")" disk0,seed
grep -q "^user-mode networking has no host interface" <<<"$(jq -r '.[0].network.reason' <<<"$out")" &&
  ok "network: the reason user-mode networking has no counters" || fail "network: $(jq -c '.[0].network' <<<"$out")"
expect_eq "network: no made-up interfaces" "$(jq -c '.[0].network.interfaces' <<<"$out")" "[]"
expect_eq "cpu.percent null without --interval" "$(jq -r '.[0].cpu.percent' <<<"$out")" null
rss=$(jq -r '.[0].memory.rss_bytes' <<<"$out"); pss=$(jq -r '.[0].memory.pss_bytes' <<<"$out")
[ "$pss" -gt 0 ] && [ "$pss" -le "$rss" ] && ok "0 < PSS ($pss) <= RSS ($rss)" || fail "PSS $pss, RSS $rss"
gt=$(jq -r '.[0].guest.mem_total_bytes' <<<"$out")
[ "$gt" -gt 0 ] && [ "$gt" -le $((256 << 20)) ] && ok "guest MemTotal $gt within its 256 MiB" || fail "guest MemTotal $gt"
if [ "$(id -u)" = 0 ]; then # jailed: its cgroup (the v1 and v2 details: test-jail, test-jail-v2)
  [ "$(jq -r '.[0].cgroup | .available and .cpu_seconds > 0 and (.version == 1 or .version == 2)' <<<"$out")" = true ] &&
    ok "cgroup: $(jq -c '.[0].cgroup' <<<"$out")" || fail "cgroup source: $(jq -c '.[0].cgroup' <<<"$out")"
else
  expect_eq "cgroup: unjailed, a reason and no error" "$(jq -c '.[0].cgroup | [.available, (.reason | type)]' <<<"$out")" '[false,"string"]'
fi
out=$(js io --interval 0.5)
expect_eq "cpu.percent a number with --interval" "$(jq -r '.[0].cpu.percent | type' <<<"$out")" number

# --- counters move: disk
before=$(js io)
vm exec io -- dd if=/dev/urandom of=/dev/vda bs=1M count=4 oflag=direct >/dev/null 2>&1 ||
  fail "dd in the guest"
after=$(js io)
wb0=$(jq -r '.[0].disk.devices[] | select(.device == "disk0") | .write_bytes' <<<"$before")
wb1=$(jq -r '.[0].disk.devices[] | select(.device == "disk0") | .write_bytes' <<<"$after")
wo0=$(jq -r '.[0].disk.devices[] | select(.device == "disk0") | .write_ops' <<<"$before")
wo1=$(jq -r '.[0].disk.devices[] | select(.device == "disk0") | .write_ops' <<<"$after")
[ $((wb1 - wb0)) -ge $((4 << 20)) ] && ok "disk0 write bytes +$((wb1 - wb0)) after a 4 MiB write" ||
  fail "disk0 write bytes $wb0 -> $wb1"
[ "$wo1" -gt "$wo0" ] && ok "disk0 write requests $wo0 -> $wo1" || fail "disk0 write requests $wo0 -> $wo1"

# --- counters move: CPU (a busy loop of 1-2 s in the guest)
c0=$(jq -r '.[0].cpu.seconds' <<<"$after")
vm exec io -- sh -c 'end=$(($(date +%s) + 2)); while [ "$(date +%s)" -lt "$end" ]; do :; done' ||
  fail "busy loop in the guest"
c1=$(js io | jq -r '.[0].cpu.seconds')
awk -v a="$c0" -v b="$c1" 'BEGIN { exit !(b > a) }' &&
  ok "cpu seconds $c0 -> $c1 after the busy loop" || fail "cpu seconds $c0 -> $c1"
awk -v a="$c0" -v b="$c1" 'BEGIN { printf "info: the busy loop cost QEMU %.2f s of host CPU (reported, not asserted)\n", b - a }'

# --- counters move: the guest's own network counters (user-mode networking)
n0=$(jq -r '[.[0].guest_network.interfaces[] | select(.interface == "eth0") | .tx_packets] | add // 0' <<<"$after")
vm exec io -- sh -c 'ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 2>/dev/null;
  ping -c 3 -W 2 10.0.2.2' >/dev/null 2>&1 || echo "info: ping of the slirp gateway failed (counters still move)"
out=$(js io)
n1=$(jq -r '[.[0].guest_network.interfaces[] | select(.interface == "eth0") | .tx_packets] | add // 0' <<<"$out")
[ "$n1" -ge $((n0 + 3)) ] && ok "guest eth0 transmit packets $n0 -> $n1 after 3 pings" ||
  fail "guest eth0 transmit packets $n0 -> $n1: $(jq -c '.[0].guest_network' <<<"$out")"
grep -Eq '^io .* [0-9.]+ [KMG]?i?B / [0-9.]+ [KMG]?i?B \(guest\)' <<<"$(vm stats io 2>/dev/null)" &&
  ok "table: NET RX/TX from the guest, marked (guest)" || fail "table: $(vm stats io 2>&1)"

# --- the table
tab=$(vm stats io 2>&1); rc=$?
expect_eq "table exits 0" "$rc" 0
expect_eq "table header" "$(head -1 <<<"$tab" | tr -s ' ')" \
  "NAME CPU% MEM(RSS) PSS DISK R/W NET RX/TX GUEST MEM LOAD UPTIME STATE"
grep -Eq '^io +[0-9]+\.[0-9]%' <<<"$tab" && ok "a CPU% for io" || fail "table: $tab"

# --- Prometheus
cat >"$VMCTL_HOME/promcheck.py" <<'EOF'
import re, sys
NAME = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
LVAL = r'"(?:[^"\\\n]|\\[\\"n])*"'
LABELS = r'\{(?:[a-zA-Z_][a-zA-Z0-9_]*=' + LVAL + r'(?:,[a-zA-Z_][a-zA-Z0-9_]*=' + LVAL + r')*)?\}'
VALUE = r'(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|NaN|[+-]Inf)'
SAMPLE = re.compile(r'^(' + NAME + r')(' + LABELS + r')? ' + VALUE + r'( -?[0-9]+)?$')
HELP = re.compile(r'^# HELP (' + NAME + r') (.*)$')
TYPE = re.compile(r'^# TYPE (' + NAME + r') (counter|gauge|histogram|summary|untyped)$')
errs, helps, types, seen, done, current, n = [], {}, {}, set(), set(), None, 0
text = sys.stdin.read()
if not text.endswith('\n'):
    errs.append('the text does not end in a newline')
for i, line in enumerate(text.splitlines(), 1):
    if line.startswith('#'):
        m = HELP.match(line) or TYPE.match(line)
        if not m:
            if line.startswith('# HELP') or line.startswith('# TYPE'):
                errs.append(f'{i}: bad comment: {line}')
            continue
        name = m.group(1)
        if name in done:
            errs.append(f'{i}: {name} described again after its samples ended')
        (helps if line.startswith('# HELP') else types)[name] = m.group(2)
        continue
    m = SAMPLE.match(line)
    if not m:
        errs.append(f'{i}: not a sample: {line}')
        continue
    n += 1
    name = m.group(1)
    if name != current:
        if current:
            done.add(current)
        if name in done:
            errs.append(f'{i}: samples of {name} are not together')
        current = name
    if name not in helps or name not in types:
        errs.append(f'{i}: {name} has no HELP or TYPE before it')
    elif types[name] == 'counter' and not name.endswith('_total'):
        errs.append(f'{i}: counter {name} does not end in _total')
    elif name.endswith('_total') and types[name] != 'counter':
        errs.append(f'{i}: {name} ends in _total but is a {types[name]}')
    if not name.startswith('vmctl_vm_'):
        errs.append(f'{i}: {name} is not a vmctl_vm_ metric')
    if 'vm="' not in (m.group(2) or ''):
        errs.append(f'{i}: no vm label: {line}')
    key = (name, m.group(2))
    if key in seen:
        errs.append(f'{i}: duplicate series {line}')
    seen.add(key)
for e in errs:
    print('FAIL: prometheus: ' + e)
print(f'info: {n} samples checked')
sys.exit(1 if errs or n == 0 else 0)
EOF
prom=$(vm stats --prometheus io 2>/dev/null); rc=$?
expect_eq "--prometheus exits 0" "$rc" 0
python3 "$VMCTL_HOME/promcheck.py" <<<"$prom" && ok "the Prometheus output parses" || fail "Prometheus output:
$prom"
grep -q '^vmctl_vm_disk_write_bytes_total{vm="io",device="disk0"} [0-9]' <<<"$prom" &&
  ok "disk counter with vm and device labels" || fail "no disk0 write counter"
grep -q '^vmctl_vm_cpu_seconds_total{vm="io",mode="user"} [0-9]' <<<"$prom" &&
  ok "cpu counter" || fail "no cpu counter"
grep -q '^vmctl_vm_source_up{vm="io",source="disk"} 1$' <<<"$prom" && ok "source_up 1 for disk" ||
  fail "no source_up for disk"
grep -q '^vmctl_vm_network_\|source="network"' <<<"$prom" &&
  fail "host network samples on user-mode networking" || ok "no host network samples (user-mode)"
grep -q '^vmctl_vm_guest_network_transmit_packets_total{vm="io",interface="eth0"} [0-9]' <<<"$prom" &&
  ok "the guest's eth0 counters" || fail "no guest eth0 counter"
# the checker itself rejects what it must
printf '# HELP vmctl_vm_x_bytes x\n# TYPE vmctl_vm_x_bytes counter\nvmctl_vm_x_bytes{vm="a"} 1\n' |
  python3 "$VMCTL_HOME/promcheck.py" >/dev/null && fail "checker took a counter without _total" ||
  ok "checker rejects a counter without _total"
printf '# HELP vmctl_vm_x y\n# TYPE vmctl_vm_x gauge\nvmctl_vm_x{vm="a"b"} 1\n' |
  python3 "$VMCTL_HOME/promcheck.py" >/dev/null && fail "checker took an unescaped quote" ||
  ok "checker rejects an unescaped quote"

# --- no NAME: the running VMs
expect_eq "no NAME: running VMs only" "$(js | jq -r '[.[].name] | join(",")')" io

# --- a VM that is not running: metrics::failed, the other VM still there
out=$(js io off); rc=$?
expect_eq "a stopped VM among them: exit 1" "$rc" 1
expect_eq "io still complete" "$(jq -c '.[0] | [.name, .cpu.available, .disk.available, (.errors | length)]' <<<"$out")" '["io",true,true,0]'
expect_eq "off: metrics::failed, source process" \
  "$(jq -r '.[1].errors[0] | [.code, .details.vm, .details.source] | join(" ")' <<<"$out")" \
  "vm_manager::metrics::failed off process"
err=$(vm stats io off 2>&1 >/dev/null)
grep -q "vm_manager::metrics::failed" <<<"$err" && grep -q "vm 'off'" <<<"$err" &&
  ok "the table's stderr names off" || fail "stderr: $err"

# --- a paused VM: no guest values (its agent cannot answer), not an error; the rest is there
vm pause io >/dev/null || fail "pause io"
out=$(js io); rc=$?
expect_eq "paused: exit 0, no errors" "$rc/$(jq -r '.[0].errors | length' <<<"$out")" "0/0"
expect_eq "paused: guest unavailable with its reason, cpu and disk there" \
  "$(jq -r '.[0] | [.state, .guest.available, .guest.reason, .cpu.available, .disk.available] | join(" ")' <<<"$out")" \
  "paused false the vm is paused true true"
vm resume io >/dev/null || fail "resume io"

# --- a source that cannot be read: query-blockstats without a QMP socket
mv "$VMCTL_HOME/vms/io/qmp.sock" "$VMCTL_HOME/vms/io/qmp.sock.away"
out=$(js io); rc=$?
expect_eq "no QMP socket: exit 1" "$rc" 1
expect_eq "disk unavailable, the error names it" \
  "$(jq -r '.[0] | [.disk.available, .errors[0].code, .errors[0].details.source] | join(" ")' <<<"$out")" \
  "false vm_manager::metrics::failed disk"
grep -q "disk statistics from QEMU.*QMP socket" <<<"$(jq -r '.[0].errors[0].message' <<<"$out")" &&
  ok "the message names the disk statistics and the QMP socket" || fail "message: $(jq -r '.[0].errors[0].message' <<<"$out")"
expect_eq "the other sources still there" \
  "$(jq -c '.[0] | [.cpu.available, .memory.available, .uptime.available, .guest.available, (.memory.rss_bytes | type)]' <<<"$out")" \
  '[true,true,true,true,"number"]'
prom=$(vm stats --prometheus io 2>/dev/null)
grep -q '^vmctl_vm_source_up{vm="io",source="disk"} 0$' <<<"$prom" && ok "source_up 0 for disk" ||
  fail "source_up: $(grep source_up <<<"$prom")"
grep -q '^vmctl_vm_disk_' <<<"$prom" && fail "disk samples without a source" || ok "no made-up disk samples"
grep -q '^vmctl_vm_memory_rss_bytes{vm="io"} [0-9]' <<<"$prom" && ok "memory still exported" ||
  fail "no memory sample"
python3 "$VMCTL_HOME/promcheck.py" <<<"$prom" >/dev/null && ok "still parses" || fail "does not parse"
tab=$(vm stats io 2>/dev/null)
grep -Eq '^io +[0-9.]+% +[0-9.]+ MiB +[0-9.]+ MiB +- ' <<<"$tab" && ok "table: '-' for the disk, the rest shown" ||
  fail "table: $tab"
mv "$VMCTL_HOME/vms/io/qmp.sock.away" "$VMCTL_HOME/vms/io/qmp.sock"

# --- --watch: one table per interval; usage errors
timeout --preserve-status -s INT 3 "$VMCTL" stats io --watch --interval 0.5 >"$VMCTL_HOME/watch.out" 2>&1
rc=$?
expect_eq "--watch ends 0 on SIGINT" "$rc" 0
frames=$(grep -c '^NAME' "$VMCTL_HOME/watch.out")
[ "$frames" -ge 2 ] && ok "--watch drew $frames tables" || fail "--watch: $(cat "$VMCTL_HOME/watch.out")"
python3 - "$VMCTL" <<'EOF' && ok "--watch on a terminal redraws in place (ANSI home, clear to end of line)" || fail "--watch on a terminal"
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "stats", "io", "--watch", "--interval", "0.5"])
out, end = b"", time.time() + 4
while time.time() < end:
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            out += os.read(fd, 65536)
        except OSError:
            break
os.kill(pid, signal.SIGINT)
deadline = time.time() + 5
while time.time() < deadline:
    p, st = os.waitpid(pid, os.WNOHANG)
    if p:
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0); print("vmctl did not end on SIGINT"); sys.exit(1)
ok = out.count(b"\x1b[H") >= 2 and b"\x1b[K" in out and b"NAME" in out and os.WEXITSTATUS(st) == 0
if not ok:
    print(repr(out[-400:]), st)
sys.exit(0 if ok else 1)
EOF
out=$(vm --json stats --watch 2>/dev/null); rc=$?
expect_eq "--watch --json is a usage error" "$rc/$(jq -r .error.code <<<"$out")" "2/vm_manager::cli::usage"
err=$(vm stats --prometheus --interval 1 2>&1 >/dev/null); rc=$?
expect_eq "--prometheus --interval is a usage error" "$rc/$(grep -c 'interval does not go with --prometheus' <<<"$err")" "2/1"
out=$(vm --json stats --prometheus 2>/dev/null); rc=$?
expect_eq "--prometheus --json is a usage error" "$rc/$(jq -r .error.code <<<"$out")" "2/vm_manager::cli::usage"

# --- PSS shows what clones share: two clones of one template snapshot map its RAM file, so each
# one's proportional set is well below its resident set (a cold-booted VM's is not: its guest
# RAM is its own)
for n in $(vm list --json | jq -r '.[].name'); do vm destroy --force "$n" >/dev/null 2>&1; done
if vm create tpl --snapshottable --net none >/dev/null 2>&1 && vm start tpl --wait >/dev/null 2>&1 &&
  vm snapshot create tpl t >/dev/null 2>&1 && vm clone tpl t cl --count 2 >/dev/null 2>&1; then
  sleep 2 # both restored and settled
  out=$(js cl-1 cl-2 --no-guest)
  for i in 0 1; do
    r=$(jq -r ".[$i].memory.rss_bytes" <<<"$out") p=$(jq -r ".[$i].memory.pss_bytes" <<<"$out")
    # the shared pages (the template's RAM the guest touched, the QEMU binary) count half
    [ "$p" -gt 0 ] && [ $((p * 10)) -lt $((r * 8)) ] &&
      ok "clone $((i + 1)): PSS $((p >> 20)) MiB < 0.8 x RSS $((r >> 20)) MiB" ||
      fail "clone $((i + 1)): PSS $p, RSS $r"
  done
else
  fail "template snapshot and two clones for the PSS check"
fi
finish
