#!/bin/bash
# Interactive use on one booted default guest, through a real pseudo-terminal on the host
# (tests/integration/tty-drive.py, python3's os.openpty): `vmctl exec -t` gives the command a
# /dev/pts terminal with the host's window size and TERM, resizes follow SIGWINCH, byte 0x03
# interrupts a sleep in the guest, exit statuses propagate, the host terminal is raw while the
# command runs and restored after (also after an error and after SIGTERM); `vmctl shell` runs
# what is typed into it and exits with the shell's status; the serial console (console.sock)
# answers with a shell. Without a terminal on the host, exec -t is config::invalid and shell
# reads its commands from stdin.
. "$(dirname "$0")/lib.sh"
need_guest
command -v python3 >/dev/null || skip "python3 is not installed (apt-get install python3)"
setup_home
drive=$(dirname "$0")/tty-drive.py

vm run tt >/dev/null 2>&1 || { fail "run tt"; finish; }

# --- no terminal on the host
out=$(vm exec -t tt -- true </dev/null 2>&1); rc=$?
expect_eq "exec -t with stdin not a terminal: exit 1" "$rc" 1
grep -q "vm_manager::config::invalid" <<<"$out" && grep -q "not a TTY" <<<"$out" &&
  ok "exec -t with stdin not a terminal: config::invalid, 'not a TTY'" ||
  fail "exec -t without a terminal: $out"
out=$(vm --json exec -t tt -- true </dev/null 2>/dev/null); rc=$?
expect_eq "exec -t --json: usage error (exit 2)" "$rc" 2
out=$(printf 'echo piped-$((2+3))\nexit 4\n' | vm shell tt 2>&1); rc=$?
expect_eq "shell with stdin a pipe: runs the piped commands" "$out" piped-5
expect_eq "shell with stdin a pipe: exit status 4" "$rc" 4

# --- on a terminal
python3 "$drive" "$VMCTL" tt tty resize ctrl-c mode ssh shell console || fails=$((fails + $?))
[ -n "${VMCTL_TTY_BENCH:-}" ] && python3 "$drive" "$VMCTL" tt bench

vm destroy --force tt >/dev/null 2>&1
pgrep -f "$VMCTL_HOME/vms/" >/dev/null && fail "a QEMU of this test is still running"
finish
