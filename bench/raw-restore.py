#!/usr/bin/env python3
"""Restore to ready with QEMU alone: the floor under `vmctl snapshot restore` (docs/benchmarks.md).

Usage: raw-restore.py CMDLINE STATE [N]

CMDLINE: a file with the NUL-separated command line of a QEMU that vmctl launched for this
snapshot (/proc/PID/cmdline of a restored VM): the same binary, machine, devices and template RAM
file (mapped private, as vmctl does). STATE: the snapshot's device-state file. Each of N rounds
launches that QEMU with its sockets in a scratch directory, loads the state over an fd
(x-ignore-shared, migrate-incoming fd:), continues it and sends the guest agent one PING on its
first virtio-serial port; the round ends at the PONG. No jail, no store, no identity: what is
left is QEMU's start-up, the load and the guest's first answer. Prints one time per round (usec).
"""
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time


def qmp_cmd(f, cmd, args=None):
    msg = {"execute": cmd}
    if args:
        msg["arguments"] = args
    f.write(json.dumps(msg) + "\n")
    f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r:
            return r["return"]
        if "error" in r:
            raise RuntimeError(f"{cmd}: {r['error']['desc']}")


def one(argv, state, tmp, deadline_s=30.0):
    for name in os.listdir(tmp):
        os.unlink(os.path.join(tmp, name))
    t0 = time.monotonic()
    end = t0 + deadline_s
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = socket.socket(socket.AF_UNIX)
        while True:
            try:
                s.connect(os.path.join(tmp, "qmp.sock"))
                break
            except OSError:
                if time.monotonic() > end or p.poll() is not None:
                    raise RuntimeError("QEMU did not open its QMP socket")
                time.sleep(0.001)
        f = s.makefile("rw")
        f.readline()  # greeting
        qmp_cmd(f, "qmp_capabilities")
        qmp_cmd(f, "migrate-set-capabilities",
                {"capabilities": [{"capability": "x-ignore-shared", "state": True}]})
        with open(state, "rb") as sf:
            # the fd goes with the command's own bytes: QEMU takes it with the data it reads
            cmd = json.dumps({"execute": "getfd", "arguments": {"fdname": "st"}}) + "\n"
            s.sendmsg([cmd.encode()],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", sf.fileno()))])
            while True:
                r = json.loads(f.readline())
                if "return" in r:
                    break
                if "error" in r:
                    raise RuntimeError(r["error"]["desc"])
        qmp_cmd(f, "migrate-incoming", {"uri": "fd:st"})
        while qmp_cmd(f, "query-migrate").get("status") != "completed":
            if time.monotonic() > end:
                raise RuntimeError("the load did not complete")
            time.sleep(0.0005)
        qmp_cmd(f, "cont")
        a = socket.socket(socket.AF_UNIX)
        a.connect(os.path.join(tmp, "agent.sock"))
        # a v1 PING, NEW_SESSION: magic "VMA", version, type 0x01, flags, 2 zero, id, length 0
        a.sendall(b"VMA" + bytes([1, 0x01, 0x01, 0, 0]) + struct.pack("<II", 1, 0))
        a.settimeout(max(0.1, end - time.monotonic()))
        hdr = b""
        while len(hdr) < 16:
            chunk = a.recv(16 - len(hdr))
            if not chunk:
                raise RuntimeError("the agent closed")
            hdr += chunk
        if hdr[:3] != b"VMA" or hdr[4] != 0x02:
            raise RuntimeError(f"not a PONG: {hdr!r}")
        return int((time.monotonic() - t0) * 1e6)
    finally:
        p.kill()
        p.wait()


def main():
    cmdline, state = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    argv = [a for a in open(cmdline, "rb").read().decode().split("\0") if a]
    tmp = tempfile.mkdtemp(prefix="vmctl-rawrestore.")
    try:
        # every socket, log and pid file of the VM's directory goes to the scratch directory
        sock_dir = None
        for a in argv:
            m = re.search(r"path=([^,]*)/qmp\.sock", a)
            if m:
                sock_dir = m.group(1)
        if not sock_dir:
            raise SystemExit("no qmp.sock in the command line")
        argv = [a.replace(sock_dir + "/", tmp + "/") for a in argv]
        for i in range(n):
            print(one(argv, state, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
