#!/usr/bin/env python3
# One TCP flow for bench/firewall.sh: `fw-flow.py server PORT` (in the uplink namespace) and
# `fw-flow.py stream|rr HOST PORT SECONDS` (in the fake VM's): stream prints MB/s of a bulk
# transfer, rr the mean round trip in microseconds of 1-byte request/response on one connection.
import socket
import sys
import threading
import time


def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)

    def handle(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = c.recv(1)
        if mode == b"s":
            while c.recv(1 << 20):
                pass
        else:
            while True:
                d = c.recv(1)
                if not d:
                    break
                c.sendall(d)
        c.close()

    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def client(mode, host, port, seconds):
    c = socket.create_connection((host, port), timeout=5)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    end = time.monotonic() + seconds
    if mode == "stream":
        c.sendall(b"s")
        buf = b"x" * (1 << 20)
        sent = 0
        t0 = time.monotonic()
        while time.monotonic() < end:
            c.sendall(buf)
            sent += len(buf)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        print("%.1f" % (sent / (time.monotonic() - t0) / 1e6))
    else:
        c.sendall(b"r")
        n = 0
        t0 = time.monotonic()
        while time.monotonic() < end:
            c.sendall(b"x")
            c.recv(1)
            n += 1
        print("%.1f" % ((time.monotonic() - t0) / n * 1e6))
    c.close()


if sys.argv[1] == "server":
    serve(int(sys.argv[2]))
else:
    client(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
