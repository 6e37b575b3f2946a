#!/usr/bin/env python3
"""A lying guest agent for tests/integration/test-hostile-cp.sh: it speaks the agent protocol
(docs/agent-protocol.md) on a unix socket, as QEMU's end of the virtio-serial port would, and
answers FILE_GET and EXEC (the `tar -c` of a directory copy) with what the scenario says: a
FILE_INFO that lies about the mode or the size, a tar stream with links out of the tree, device
nodes, setuid bits, "..", absolute names, a truncated entry.

Usage: fake-agent.py SOCKET SCENARIO VICTIM_DIR   (serves until killed)
"""
import io
import os
import socket
import struct
import sys
import tarfile

MAGIC = b"VMA"
PING, PONG, ERROR, EXEC, STDOUT, EXIT, SIGNAL, FILE_GET, FILE_INFO = (
    0x01, 0x02, 0x03, 0x10, 0x11, 0x13, 0x16, 0x31, 0x32)
CAPS = 1 | 2 | 4 | 8 | 16  # EXEC SHUTDOWN CONCURRENT STDIN_STREAM FILES


def frame(version, type_, id_, payload=b""):
    return MAGIC + bytes([version, type_, 0]) + b"\0\0" + struct.pack("<II", id_, len(payload)) + payload


def pstr(s):
    b = s.encode() + b"\0"
    return struct.pack("<I", len(b)) + b


def file_info(mode, size, mtime=1600000000):
    return struct.pack("<IQqI", mode, size, mtime, 0)


def exit_ok():
    return struct.pack("<iII", 0, 0, 0)


def tar_bytes(members):
    """members: (TarInfo, data or None); GNU format so long names become 'L' entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for ti, data in members:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def ti(name, type_=tarfile.REGTYPE, mode=0o644, data=b"", link=""):
    t = tarfile.TarInfo(name)
    t.type = type_
    t.mode = mode
    t.size = len(data) if type_ == tarfile.REGTYPE else 0
    t.linkname = link
    t.uid = t.gid = 0
    t.mtime = 1600000000
    if type_ in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        t.devmajor, t.devminor = 1, 1
    return t, (data if type_ == tarfile.REGTYPE else None)


def evil_tar(victim):
    return tar_bytes([
        ti("./", tarfile.DIRTYPE, 0o777),
        ti("./l", tarfile.SYMTYPE, 0o777, link=victim),
        ti("./l/through-link", data=b"escaped\n"),           # a file through the link just made
        ti("../dotdot", data=b"escaped\n"),                   # out of the tree
        ti("/" + victim.lstrip("/") + "/absolute", data=b"escaped\n"),  # absolute: stays inside
        ti("./h", tarfile.LNKTYPE, link=victim + "/victim-file"),  # hard link to a host file
        ti("./suid", mode=0o4777, data=b"#!/bin/sh\n"),
        ti("./sgiddir", tarfile.DIRTYPE, 0o2777),
        ti("./sticky", tarfile.DIRTYPE, 0o1777),
        ti("./mem", tarfile.CHRTYPE, 0o666),
        ti("./fifo", tarfile.FIFOTYPE, 0o666),
        ti("./" + "n" * 150, data=b"long name\n"),
    ])


def truncated_tar():
    whole = tar_bytes([ti("./big", data=b"A" * 5000)])
    return whole[:512 + 1000]  # the header says 5000 bytes; 1000 come


def main():
    sock_path, scenario, victim = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        serve(conn, scenario, victim)
        conn.close()


def serve(conn, scenario, victim):
    buf = b""
    while True:
        try:
            d = conn.recv(65536)
        except OSError:
            return
        if not d:
            return
        buf += d
        while len(buf) >= 16:
            i = buf.find(MAGIC)
            if i < 0:
                buf = b""
                break
            buf = buf[i:]
            if len(buf) < 16:
                break
            ver, typ = buf[3], buf[4]
            id_, ln = struct.unpack("<II", buf[8:16])
            if len(buf) < 16 + ln:
                break
            buf = buf[16 + ln:]
            out = answer(ver, typ, id_, scenario, victim)
            if out:
                conn.sendall(out)


def answer(ver, typ, id_, scenario, victim):
    if typ == PING:
        return frame(ver, PONG, id_, bytes([2, 0, 0, 0]) + struct.pack("<IQ", 0x1234, CAPS) + pstr("fake-liar"))
    if typ == FILE_GET:
        data = b"#!/bin/sh\necho owned\n"
        if scenario == "mode-lie":  # a world-writable setuid file, and a "device" type
            info = file_info(0o020000 | 0o6777, len(data))
        elif scenario == "size-short":  # announces more than it sends
            info = file_info(0o100644, len(data) + 100)
        elif scenario == "size-long":  # sends more than it announces
            info = file_info(0o100644, 4)
        elif scenario == "data-first":  # data before FILE_INFO
            return frame(ver, STDOUT, id_, data) + frame(ver, FILE_INFO, id_, file_info(0o100644, len(data))) + frame(ver, EXIT, id_, exit_ok())
        elif scenario in ("evil-tar", "truncated-tar"):
            return frame(ver, ERROR, id_, struct.pack("<I", 21) + pstr("is a directory"))  # EISDIR
        else:
            info = file_info(0o100644, len(data))
        return frame(ver, FILE_INFO, id_, info) + frame(ver, STDOUT, id_, data) + frame(ver, EXIT, id_, exit_ok())
    if typ == EXEC:
        data = evil_tar(victim) if scenario == "evil-tar" else truncated_tar()
        out = b""
        for off in range(0, len(data), 32768):
            out += frame(ver, STDOUT, id_, data[off:off + 32768])
        return out + frame(ver, EXIT, id_, exit_ok())
    if typ == SIGNAL:
        return b""
    return b""


if __name__ == "__main__":
    main()
