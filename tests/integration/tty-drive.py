#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Drive `vmctl exec -t`, `vmctl shell` and the serial console of a running VM through a real
pseudo-terminal on the host, as a person at a terminal would (used by test-tty.sh).

    tty-drive.py VMCTL VM CHECK...

Checks: tty (a /dev/pts path, the window size set on the host PTY, TERM, the exit status), resize
(a SIGWINCH on the host changes the guest's size), ctrl-c (byte 0x03 interrupts a sleep), mode
(the host terminal is raw while the command runs and restored after, also after an error),
ssh (exec -t --via ssh is refused),
shell (`echo hi; exit 3` typed into `vmctl shell`), console (a shell prompt on console.sock),
bench (keystroke round trip through exec -t versus the plain exec stream).
Prints "ok: ..." / "FAIL: ..." lines; exits with the number of failures. Every wait has a
deadline."""
import fcntl
import os
import select
import signal
import socket
import statistics
import struct
import sys
import termios
import time

VMCTL, VM = sys.argv[1], sys.argv[2]
fails = 0


def ok(what):
    print(f"ok: {what}", flush=True)


def fail(what):
    global fails
    fails += 1
    print(f"FAIL: {what}", flush=True)


def expect(what, cond, detail=""):
    if cond:
        ok(what)
    else:
        fail(f"{what}{': ' + detail if detail else ''}")


def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Term:
    """vmctl ARGS on a new host PTY (its controlling terminal, as in a terminal window). The
    slave stays open here too, to read the terminal's mode while and after vmctl runs."""

    def __init__(self, args, rows=24, cols=80, env=None):
        self.master, self.slave = os.openpty()
        set_size(self.master, rows, cols)
        self.mode_before = termios.tcgetattr(self.slave)
        self.out = b""
        self.status = None
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                fcntl.ioctl(self.slave, termios.TIOCSCTTY, 0)
                for k in (0, 1, 2):
                    os.dup2(self.slave, k)
                os.closerange(3, 256)
                e = dict(os.environ)
                e.update(env or {})
                os.execve(VMCTL, [VMCTL] + args, e)
            finally:
                os._exit(127)
        self.pid = pid

    def read_until(self, needle, timeout=30.0):
        """Read output until needle (bytes) appears after what was read so far; True if so."""
        start = len(self.out)
        end = time.monotonic() + timeout
        while needle not in self.out[start:]:
            left = end - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if r:
                try:
                    d = os.read(self.master, 65536)
                except OSError:
                    return False
                self.out += d
            elif self.poll() is not None and not r:
                self.drain()
                return needle in self.out[start:]
        return True

    def drain(self):
        while True:
            r, _, _ = select.select([self.master], [], [], 0.05)
            if not r:
                return
            try:
                d = os.read(self.master, 65536)
            except OSError:
                return
            if not d:
                return
            self.out += d

    def send(self, data):
        os.write(self.master, data)

    def poll(self):
        if self.status is None:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(st)
        return self.status

    def wait(self, timeout=60.0):
        """vmctl's exit status (killed after the timeout: then None)."""
        end = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < end:
            self.drain()
            time.sleep(0.02)
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
            return None
        self.drain()
        return self.status

    def mode(self):
        return termios.tcgetattr(self.slave)

    def close(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
        os.close(self.master)
        os.close(self.slave)


def text(b):
    return b.decode("utf-8", "replace")


def check_tty():
    t = Term(["exec", "-t", VM, "--", "sh", "-c",
              "tty; stty size; echo TERM=$TERM; echo err >&2; exit 42"],
             rows=33, cols=101, env={"TERM": "vt220"})
    st = t.wait()
    out = text(t.out)
    lines = out.replace("\r\n", "\n").split("\n")
    expect("exec -t: stdin is a /dev/pts terminal in the guest",
           any(l.startswith("/dev/pts/") for l in lines), repr(out))
    expect("exec -t: the host window size (33 x 101) arrives", "33 101" in lines, repr(out))
    expect("exec -t: TERM is the host's", "TERM=vt220" in lines, repr(out))
    expect("exec -t: stderr comes merged on the terminal", "err" in lines, repr(out))
    expect("exec -t: output has the terminal's \\r\\n", "\r\n" in out, repr(out))
    expect("exec -t: exit status 42 propagates", st == 42, f"status {st}")
    expect("exec -t: host terminal mode restored (stty -g before == after)",
           t.mode() == t.mode_before)
    t.close()


def check_resize():
    t = Term(["exec", "-t", VM, "--", "sh", "-c",
              "trap 'echo size=$(stty size)' WINCH; echo ready; "
              "i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done"],
             rows=20, cols=70)
    if not t.read_until(b"ready"):
        fail(f"resize: the command did not start: {text(t.out)!r}")
        t.close()
        return
    raw = t.mode()
    expect("exec -t: host terminal is raw while the command runs",
           not (raw[3] & termios.ICANON) and not (raw[3] & termios.ECHO)
           and not (raw[3] & termios.ISIG))
    set_size(t.master, 41, 123)  # the kernel sends vmctl SIGWINCH
    expect("exec -t: a resize on the host reaches the guest (SIGWINCH, 41 x 123)",
           t.read_until(b"size=41 123", 20), repr(text(t.out)))
    set_size(t.master, 25, 90)
    expect("exec -t: a second resize (25 x 90)", t.read_until(b"size=25 90", 20),
           repr(text(t.out)))
    t.send(b"\x03")
    st = t.wait(30)
    expect("exec -t: Ctrl-C ends the loop: status 130", st == 130, f"status {st}")
    expect("exec -t: host terminal mode restored after Ctrl-C", t.mode() == t.mode_before)
    t.close()


def check_ctrl_c():
    t = Term(["exec", "-t", VM, "--", "sh", "-c", "echo ready; sleep 120; echo never"])
    if not t.read_until(b"ready"):
        fail(f"ctrl-c: the command did not start: {text(t.out)!r}")
        t.close()
        return
    time.sleep(0.3)
    t0 = time.monotonic()
    t.send(b"\x03")  # raw mode: a byte for the guest's terminal, which makes it SIGINT there
    st = t.wait(30)
    took = time.monotonic() - t0
    expect("exec -t: byte 0x03 interrupts sleep in the guest (status 130)", st == 130,
           f"status {st}, output {text(t.out)!r}")
    expect("exec -t: the command did not go on after the interrupt", b"never" not in t.out)
    expect("exec -t: interrupted well before the sleep's 120 s", took < 60, f"{took:.1f} s")
    expect("exec -t: host terminal mode restored after the interrupt", t.mode() == t.mode_before)
    t.close()

    # job control: the guest's terminal is the shell's controlling terminal
    t = Term(["exec", "-t", VM, "--", "sh", "-c",
              "if [ -e /dev/tty ] && : </dev/tty; then echo ctty-ok; fi; "
              "ps -o pid,sid,tty,comm 2>/dev/null | head -3; echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$"])
    st = t.wait()
    out = text(t.out)
    expect("exec -t: /dev/tty opens (a controlling terminal)", "ctty-ok" in out, repr(out))
    import re
    m = re.search(r"sid=(\d+) pid=(\d+)", out)
    expect("exec -t: the command leads its own session", m and m.group(1) == m.group(2), repr(out))
    t.close()


def check_mode_on_error():
    # an error (a command that cannot start) after raw mode was set: the mode is restored
    t = Term(["exec", "-t", VM, "--", "/no/such/command"])
    st = t.wait()
    # like a shell: 127 and the agent's "No such file or directory" on the terminal
    expect("exec -t of a missing command: exit 127", st == 127 and b"No such file" in t.out,
           f"status {st}: {text(t.out)!r}")
    expect("exec -t of a missing command: host terminal mode restored",
           t.mode() == t.mode_before)
    t.close()
    # vmctl killed by SIGTERM (forwarded to the command, which ends): restored too
    t = Term(["exec", "-t", VM, "--", "sh", "-c", "echo ready; sleep 60"])
    if t.read_until(b"ready"):
        os.kill(t.pid, signal.SIGTERM)
        st = t.wait(30)
        expect("exec -t: SIGTERM forwarded: status 143", st == 143, f"status {st}")
        expect("exec -t: host terminal mode restored after SIGTERM", t.mode() == t.mode_before)
    else:
        fail(f"sigterm: the command did not start: {text(t.out)!r}")
    t.close()


def check_ssh():
    t = Term(["exec", "-t", "--via", "ssh", VM, "--", "true"])
    st = t.wait()
    expect("exec -t --via ssh: refused with config::invalid (a terminal needs the agent)",
           st == 1 and b"config::invalid" in t.out, f"status {st}: {text(t.out)!r}")
    expect("exec -t --via ssh: host terminal mode untouched", t.mode() == t.mode_before)
    t.close()


def check_shell():
    t = Term(["shell", VM], env={"TERM": "xterm-test"})
    prompt = t.read_until(b"# ", 30)
    expect("shell: a login shell's prompt (PS1 of /etc/profile: user@host)",
           prompt and b"root@" in t.out, repr(text(t.out)))
    t.send(b"echo hi-$TERM-$((40+2)) $PWD; exit 3\r")
    st = t.wait(30)
    out = text(t.out)
    expect("shell: the typed command ran (hi, TERM, arithmetic)", "hi-xterm-test-42" in out,
           repr(out))
    expect("shell: it starts in the user's home (/root)", "hi-xterm-test-42 /root" in out,
           repr(out))
    expect("shell: exit 3 is vmctl's status", st == 3, f"status {st}")
    expect("shell: host terminal mode restored", t.mode() == t.mode_before)
    t.close()
    # Ctrl-C at the prompt does not end the shell; Ctrl-D does (status 0)
    t = Term(["shell", VM])
    t.read_until(b"# ", 30)
    t.send(b"sleep 100\r")
    time.sleep(1.0)
    t.send(b"\x03")
    t.send(b"echo still-$((6*7))\r")
    expect("shell: Ctrl-C interrupts a foreground sleep, the shell stays",
           t.read_until(b"still-42", 30), repr(text(t.out)))
    # ^D only ends the shell at its prompt: typed while the shell still runs the echo, the
    # terminal is in canonical mode and the EOF is gone by the time line editing starts
    if b"# " not in t.out[t.out.rfind(b"still-42"):]:
        t.read_until(b"# ", 30)
    time.sleep(0.2)
    t.send(b"\x04")
    st = t.wait(30)
    expect("shell: Ctrl-D ends it (status 0)", st == 0, f"status {st}")
    t.close()


def check_console():
    home = os.environ["VMCTL_HOME"]
    path = os.path.join(home, "vms", VM, "console.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    got = b""
    end = time.monotonic() + 60
    next_send = 0.0
    while b"con2" not in got and time.monotonic() < end:
        if time.monotonic() >= next_send:
            s.sendall(b"echo con$((1+1))\n")  # the echo shows con$((1+1)); only a shell says con2
            next_send = time.monotonic() + 3
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            d = s.recv(65536)
            if not d:
                break
            got += d
    s.close()
    expect("console: a shell answers on console.sock (con2)", b"con2" in got, repr(text(got)[-400:]))


def roundtrip(args, line_mode, n=40):
    """Median time from writing a key to reading it back, in ms."""
    if line_mode:  # plain exec stream: pipes both ways, `cat` echoes each line
        import subprocess
        p = subprocess.Popen([VMCTL] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             bufsize=0)
        times = []
        os.set_blocking(p.stdout.fileno(), False)
        try:
            for i in range(n + 3):
                key = b"%c\n" % (97 + i % 26)
                t0 = time.perf_counter()
                p.stdin.write(key)
                got = b""
                end = time.monotonic() + 10
                while not got.endswith(key) and time.monotonic() < end:
                    select.select([p.stdout], [], [], 0.5)
                    try:
                        got += p.stdout.read(4096) or b""
                    except BlockingIOError:
                        pass
                if i >= 3:
                    times.append((time.perf_counter() - t0) * 1000)
        finally:
            p.stdin.close()
            p.wait(30)
        return statistics.median(times)
    t = Term(args)
    t.read_until(b"ready", 30)
    times = []
    for i in range(n + 3):
        key = bytes([97 + i % 26])
        t0 = time.perf_counter()
        t.send(key)  # the guest terminal echoes it (cat -u would too, after a newline)
        t.read_until(key, 10)
        if i >= 3:
            times.append((time.perf_counter() - t0) * 1000)
    t.send(b"\x04\x04")
    t.wait(5)  # raw mode: ^D is just a byte for cat; then it is killed
    t.close()
    return statistics.median(times)


def bench():
    rounds = []
    for _ in range(3):  # alternate them, so that load on the host hits all alike
        a = roundtrip(["exec", "-t", VM, "--", "sh", "-c", "echo ready; exec cat"], False)
        b = roundtrip(["exec", "-t", VM, "--", "sh", "-c",
                       "stty raw -echo; echo ready; exec cat"], False)
        c = roundtrip(["exec", "-i", VM, "--", "cat"], True)
        rounds.append((a, b, c))
        print(f"round: exec -t echoed by the guest's terminal {a:.2f} ms, exec -t raw through "
              f"cat {b:.2f} ms, exec -i line through cat {c:.2f} ms", flush=True)
    a, b, c = (statistics.median(r[i] for r in rounds) for i in range(3))
    print(f"bench: keystroke round trip (median of 3 medians of 40): exec -t terminal echo "
          f"{a:.2f} ms, exec -t through cat {b:.2f} ms, plain exec -i stream through cat "
          f"{c:.2f} ms; ratio through cat {b / c:.2f}", flush=True)


checks = {"tty": check_tty, "resize": check_resize, "ctrl-c": check_ctrl_c,
          "mode": check_mode_on_error, "ssh": check_ssh, "shell": check_shell, "console": check_console,
          "bench": bench}
for name in sys.argv[3:]:
    try:
        checks[name]()
    except Exception as e:  # a broken check is a failure, not a crash of the others
        fail(f"{name}: {type(e).__name__}: {e}")
sys.exit(min(fails, 100))
