#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# HTTP checks of test-serve.sh against a running `vmctl serve` (stdlib only).
# serve-checks.py CHECK SOCKET [ARGS...]; prints "ok: ..." / "FAIL: ..." lines, exits 1 on a FAIL.
import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

fails = 0


def ok(what):
    print("ok: " + what, flush=True)


def fail(what):
    global fails
    fails += 1
    print("FAIL: " + what, flush=True)


def expect(what, cond, detail=""):
    ok(what) if cond else fail(what + (": " + detail if detail else ""))


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def conn(sock, timeout=60):
    if sock.startswith("tcp:"):
        host, port = sock[4:].rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=timeout)
    return UnixConn(sock, timeout)


def request(sock, method, path, body=None, headers=None, timeout=60):
    c = conn(sock, timeout)
    h = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data, r


def jrequest(sock, method, path, body=None, headers=None):
    st, data, _ = request(sock, method, path, body, headers)
    try:
        return st, json.loads(data) if data else None
    except ValueError:
        return st, {"_raw": data[:200]}


def err_code(doc):
    return (doc or {}).get("error", {}).get("code") if isinstance(doc, dict) else None


def exec_events(sock, vm, req, on_started=None):
    """Run an exec; returns the list of events (dicts) in order."""
    c = conn(sock, 120)
    c.request("POST", "/v1/vms/%s/exec" % vm, body=json.dumps(req).encode(),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return r.status, [json.loads(r.read())]
    events = []
    while True:
        line = r.readline()
        if not line:
            break
        ev = json.loads(line)
        events.append(ev)
        if "event" in ev and on_started:
            on_started(ev["id"])
    c.close()
    return 200, events


def out_of(events, stream="stdout"):
    return b"".join(base64.b64decode(e["data"]) for e in events if e.get("stream") == stream)


def check_exec(sock, vm):
    st, ev = exec_events(sock, vm, {"argv": ["sh", "-c", "echo a; sleep 1; echo b"]})
    expect("exec answers 200", st == 200, str(ev))
    kinds = [("started" if "event" in e else e.get("stream") or ("exit" if "exit" in e else "error"))
             for e in ev]
    expect("exec: started first, exit last", kinds[:1] == ["started"] and kinds[-1:] == ["exit"],
           str(kinds))
    chunks = [base64.b64decode(e["data"]) for e in ev if e.get("stream") == "stdout"]
    # a and b come as separate events, a before b, both before the exit: streamed, not collected
    expect("exec streams: 'a' arrives as its own event before 'b' and the exit",
           len(chunks) >= 2 and chunks[0] == b"a\n" and b"".join(chunks) == b"a\nb\n", str(chunks))
    expect("exec exit 0", ev[-1].get("exit") == 0 and ev[-1].get("signal") == 0, str(ev[-1]))

    st, ev = exec_events(sock, vm, {"argv": ["sh", "-c", "echo oops >&2; exit 3"]})
    expect("exec exit code 3", ev[-1].get("exit") == 3, str(ev[-1]))
    expect("exec stderr streamed", out_of(ev, "stderr") == b"oops\n", str(ev))

    st, ev = exec_events(sock, vm, {"argv": ["cat"], "stdin": base64.b64encode(b"hello\x00x").decode()})
    expect("exec stdin in the body", out_of(ev) == b"hello\x00x", str(ev))

    # stdin streamed through /v1/exec/{id}/stdin
    def feed(eid):
        def go():
            s1, _, _ = request(sock, "POST", "/v1/exec/%s/stdin" % eid, body=b"one ")
            s2, _, _ = request(sock, "POST", "/v1/exec/%s/stdin?eof=1" % eid, body=b"two")
            expect("stdin requests answer 204", s1 == 204 and s2 == 204, "%s %s" % (s1, s2))
        threading.Thread(target=go).start()
    st, ev = exec_events(sock, vm, {"argv": ["cat"], "stdin_open": True}, on_started=feed)
    expect("exec stdin streamed, then closed", out_of(ev) == b"one two" and ev[-1].get("exit") == 0,
           str(ev))

    # a signal by name ends it
    def term(eid):
        def go():
            time.sleep(0.5)
            s, _, _ = request(sock, "POST", "/v1/exec/%s/signal" % eid, body={"signal": "TERM"})
            expect("signal answers 204", s == 204, str(s))
        threading.Thread(target=go).start()
    st, ev = exec_events(sock, vm, {"argv": ["sleep", "30"]}, on_started=term)
    expect("signal TERM ends the command (signal 15)", ev[-1].get("signal") == 15, str(ev[-1]))

    def kill(eid):
        def go():
            time.sleep(0.5)
            s, _, _ = request(sock, "DELETE", "/v1/exec/%s" % eid)
            expect("DELETE exec answers 204", s == 204, str(s))
        threading.Thread(target=go).start()
    st, ev = exec_events(sock, vm, {"argv": ["sleep", "30"]}, on_started=kill)
    expect("DELETE exec kills it (signal 9)", ev[-1].get("signal") == 9, str(ev[-1]))

    st, ev = exec_events(sock, vm, {"argv": ["sleep", "30"], "timeout": 1})
    expect("exec timeout: last event is vm_manager::timeout",
           err_code(ev[-1]) == "vm_manager::timeout", str(ev[-1]))

    st, doc = jrequest(sock, "POST", "/v1/exec/999999/signal", {"signal": 15})
    expect("unknown exec id: 404", st == 404 and err_code(doc) == "vm_manager::api::route_not_found"
           and doc["error"]["details"].get("exec_id") == "999999", str(doc))
    st, ev = exec_events(sock, vm, {"argv": []})
    expect("exec without argv: 400", st == 400 and err_code(ev[0]) == "vm_manager::api::bad_request",
           str(ev))
    st, ev = exec_events(sock, vm, {"argv": ["true"], "bogus": 1})
    expect("exec unknown field: 400 naming it",
           st == 400 and ev[0]["error"]["details"].get("field") == "bogus", str(ev))
    st, ev = exec_events(sock, vm, {"argv": ["true"], "tty": True})
    expect("exec on a tty", st == 200 and ev[-1].get("exit") == 0, str(ev[-1]))


def check_files(sock, vm):
    data = os.urandom(300 * 1024)
    st, _, _ = request(sock, "PUT", "/v1/vms/%s/files?path=/tmp/up.bin&mode=0600" % vm, body=data,
                       headers={"Content-Type": "application/octet-stream"})
    expect("upload answers 204", st == 204, str(st))
    st, got, r = request(sock, "GET", "/v1/vms/%s/files?path=/tmp/up.bin" % vm)
    expect("download answers 200", st == 200, str(st))
    expect("upload/download roundtrip (300 KiB)", got == data, "%d bytes" % len(got))
    # a tar into a directory, and a directory out as a tar
    tmp = sys.argv[3]
    os.makedirs(tmp + "/src/sub", exist_ok=True)
    open(tmp + "/src/sub/f.txt", "w").write("in a tar\n")
    tar = subprocess.run(["tar", "-cf", "-", "-C", tmp + "/src", "."], capture_output=True).stdout
    # into a directory that does not exist yet: made, as `cp -r` into a new directory would
    st, body, _ = request(sock, "PUT", "/v1/vms/%s/files?path=/tmp/tdir" % vm, body=tar,
                          headers={"Content-Type": "application/x-tar"})
    expect("tar upload answers 204", st == 204, "%s %s" % (st, body[:300]))
    st, got, r = request(sock, "GET", "/v1/vms/%s/files?path=/tmp/tdir&format=tar" % vm)
    names = subprocess.run(["tar", "-tf", "-"], input=got, capture_output=True).stdout.decode()
    expect("tar download holds the uploaded file", st == 200 and "tdir/sub/f.txt" in names,
           "%s %r" % (st, names))
    # a field below its minimum is refused, as the CLI refuses `--vcpus 0`
    st, doc = jrequest(sock, "POST", "/v1/vms", body={"name": "zero-cpus", "vcpus": 0})
    expect("create with vcpus 0: 400 naming the field",
           st == 400 and err_code(doc) == "vm_manager::api::bad_request"
           and doc["error"]["details"].get("field") == "vcpus", str(doc))
    st, doc = jrequest(sock, "GET", "/v1/vms/%s/files" % vm)
    expect("download without path: 400", st == 400 and err_code(doc) == "vm_manager::api::bad_request",
           str(doc))


def check_slow(sock):
    # one client sends half a request and stalls; another is answered meanwhile
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.sendall(b"POST /v1/vms HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"na")
    s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s2.connect(sock)
    s2.sendall(b"GET /v1/vms HTTP/1.1\r\nHo")  # stalled inside the headers
    st, doc = jrequest(sock, "GET", "/v1/vms")
    expect("a stalled client does not block another's request", st == 200 and "vms" in doc, str(st))
    s.close()
    s2.close()


def check_events(sock, vmctl):
    c = conn(sock, 60)
    c.request("GET", "/v1/events")
    r = c.getresponse()
    first = json.loads(r.readline())
    expect("events: 200 and a ready line first", r.status == 200 and first.get("type") == "ready",
           str(first))
    subprocess.run([vmctl, "create", "ev-vm"], capture_output=True, check=False)
    seen = []
    deadline = time.time() + 30
    while time.time() < deadline:
        ev = json.loads(r.readline())
        seen.append(ev)
        if ev.get("type") == "created" and ev.get("vm") == "ev-vm":
            break
    expect("events: a VM created by the CLI shows", seen and seen[-1].get("type") == "created",
           str(seen))
    subprocess.run([vmctl, "destroy", "ev-vm"], capture_output=True, check=False)
    while time.time() < deadline:
        ev = json.loads(r.readline())
        if ev.get("type") == "destroyed" and ev.get("vm") == "ev-vm":
            ok("events: its destruction shows")
            break
    else:
        fail("events: destruction not seen")
    c.close()


def check_routes(sock, routes_file, spec_file):
    spec = json.load(open(spec_file))
    served = set()
    for line in open(routes_file):
        m, p = line.split()
        served.add((m, p))
    documented = set()
    for p, item in spec["paths"].items():
        for m in item:
            if m != "parameters":
                documented.add((m.upper(), p))
    expect("every route of the server is in openapi.json", served <= documented,
           str(served - documented))
    expect("every route of openapi.json is in the server", documented <= served,
           str(documented - served))
    for m, p in sorted(documented):
        path = p.replace("{name}", "no-such-vm").replace("{id}", "999999").replace(
            "{snapshot}", "s1")
        if p.endswith("/files"):
            path += "?path=/tmp/x"
        c = conn(sock, 30)
        body = None if m in ("GET", "DELETE") else b"{}"
        c.request(m, path, body=body)
        r = c.getresponse()
        data = r.read(4096) if r.getheader("Content-Type") == "application/json" else b""
        c.close()
        code = err_code(json.loads(data)) if data.startswith(b"{\"error\"") else None
        known = not (code in ("vm_manager::api::route_not_found",
                              "vm_manager::api::method_not_allowed")
                     and b"exec_id" not in data)
        expect("%s %s answers (%d%s)" % (m, p, r.status, " " + code if code else ""), known)


def main():
    check, sock = sys.argv[1], sys.argv[2]
    if check == "exec":
        check_exec(sock, sys.argv[3])
    elif check == "files":
        vm = sys.argv[4]
        check_files(sock, vm)
    elif check == "slow":
        check_slow(sock)
    elif check == "events":
        check_events(sock, sys.argv[3])
    elif check == "routes":
        check_routes(sock, sys.argv[3], sys.argv[4])
    else:
        fail("unknown check " + check)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
