"""The SDK's pure parts, without a vmctl server: error mapping, NDJSON and exec event parsing,
the unix-socket HTTP connection (against a tiny http.server on a unix socket)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator

import pytest

import vmctl
from vmctl import errors as E
from vmctl._http import Transport, UnixHTTPConnection, parse_ndjson_line


def err(code: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": f"msg of {code}", "help": "do x",
                      "details": details, "notes": ["n1"], "context": ["while y"],
                      "errno": None, "errno_name": None, "cause": None}}


@pytest.mark.parametrize("code,status,cls", [
    ("vm_manager::vm::not_found", 404, E.VMNotFoundError),
    ("vm_manager::vm::already_exists", 409, E.VMAlreadyExistsError),
    ("vm_manager::vm::invalid_state", 409, E.InvalidStateError),
    ("vm_manager::config::invalid", 400, E.ValidationError),
    ("vm_manager::api::bad_request", 400, E.ValidationError),
    ("vm_manager::cli::usage", 400, E.ValidationError),
    ("vm_manager::vmfile::validation", 400, E.ValidationError),
    ("vm_manager::network::setup_failed", 500, E.NetworkError),
    ("vm_manager::network::firewall_failed", 500, E.NetworkError),
    ("vm_manager::network::config_invalid", 400, E.NetworkConfigError),
    ("vm_manager::network::ip_discovery_timeout", 504, E.OperationTimeoutError),
    ("vm_manager::host::kvm_unavailable", 500, E.HostError),
    ("vm_manager::host::missing_dependency", 500, E.HostError),
    ("vm_manager::qemu::spawn_failed", 500, E.HostError),
    ("vm_manager::image::not_found", 404, E.ImageError),
    ("vm_manager::image::checksum_mismatch", 500, E.ImageError),
    ("vm_manager::snapshot::not_found", 404, E.SnapshotError),
    ("vm_manager::store::locked", 503, E.StoreError),
    ("vm_manager::agent::failed", 500, E.AgentError),
    ("vm_manager::provision::failed", 500, E.ProvisionError),
    ("vm_manager::qemu::qmp_command_failed", 500, E.APIError),
    ("vm_manager::api::route_not_found", 404, E.APIError),
    ("vm_manager::api::unauthorized", 401, E.AuthenticationError),
    ("vm_manager::api::not_implemented", 501, E.NotSupportedError),
    ("vm_manager::timeout", 504, E.OperationTimeoutError),
    ("vm_manager::exec::unavailable", 409, E.CommandExecutionUnavailableError),
    ("vm_manager::internal", 500, E.InternalError),
    ("vm_manager::brand_new::kind", 500, E.VmctlError),
])
def test_error_mapping(code: str, status: int, cls: type) -> None:
    e = E.error_from_json(err(code, vm="web"), status)
    assert type(e) is cls
    assert isinstance(e, vmctl.VmctlError)
    assert e.code == code and e.status == status and e.help == "do x"
    assert e.details == {"vm": "web"} and e.notes == ["n1"] and e.context == ["while y"]
    assert code in str(e)


def test_error_attributes() -> None:
    e = E.error_from_json(err("vm_manager::timeout", operation="exec", timeout_seconds=2), 504)
    assert isinstance(e, E.OperationTimeoutError)
    assert e.operation == "exec" and e.timeout_seconds == 2.0 and e.timeout == 2.0
    assert vmctl.TimeoutError is E.OperationTimeoutError
    e = E.error_from_json(err("vm_manager::exec::unavailable", vm="w", reason="not running",
                              remediation="vmctl start w"), 409)
    assert (e.vm, e.vm_id, e.reason, e.remediation) == ("w", "w", "not running", "vmctl start w")
    e = E.error_from_json(err("vm_manager::vm::not_found", vm="x"), 404)
    assert e.vm_id == "x"
    e = E.error_from_json(err("vm_manager::vm::already_exists", vm="x"), 409)
    assert e.vm_id == "x"
    e = E.error_from_json(err("vm_manager::vm::invalid_state", vm="x", **{"from": "stopped", "to": "paused"}), 409)
    assert (e.vm, e.from_state, e.to_state) == ("x", "stopped", "paused")
    e = E.error_from_json(err("vm_manager::config::invalid", field="vcpus", value="0"), 400)
    assert (e.field, e.value) == ("vcpus", "0")
    e = E.error_from_json(err("vm_manager::api::not_implemented"), 501)
    assert "not supported by this server" in e.message and e.status_code == 501
    e = E.error_from_json(err("vm_manager::image::in_use", image="default"), 409)
    assert e.image == "default"
    assert isinstance(E.error_from_json(err("vm_manager::network::config_invalid"), 400),
                      E.ValidationError)


def test_error_not_an_error_object() -> None:
    e = E.error_from_json("<html>bad gateway</html>", 502)
    assert type(e) is E.APIError and e.status_code == 502 and "502" in e.message
    e = E.error_from_json({"error": {"message": "no code"}}, 500)
    assert type(e) is E.APIError and e.code is None


def test_ndjson_lines() -> None:
    assert parse_ndjson_line(b'{"exit": 0, "signal": 0}\n') == {"exit": 0, "signal": 0}
    assert parse_ndjson_line(b"  \n") is None
    with pytest.raises(E.APIError):
        parse_ndjson_line(b"{not json\n")
    with pytest.raises(E.APIError):
        parse_ndjson_line(b"[1, 2]\n")


def test_exec_events() -> None:
    ev = vmctl.ExecEvent.from_json({"event": "started", "id": 3})
    assert (ev.kind, ev.id) == ("started", "3")
    ev = vmctl.ExecEvent.from_json({"stream": "stderr", "data": base64.b64encode(b"\x00\xff").decode()})
    assert (ev.kind, ev.data) == ("stderr", b"\x00\xff")
    ev = vmctl.ExecEvent.from_json({"exit": 137, "signal": 9})
    assert (ev.kind, ev.exit_code, ev.signal) == ("exit", 137, 9)
    with pytest.raises(E.OperationTimeoutError):
        vmctl.ExecEvent.from_json(err("vm_manager::timeout", operation="exec", timeout_seconds=1))
    with pytest.raises(vmctl.VmctlError):
        vmctl.ExecEvent.from_json({"stream": "stdout", "data": "!!!"})


def test_events() -> None:
    ev = vmctl.Event.from_json({"type": "state", "vm": "a", "from": "created", "to": "running",
                                "time": 5.5})
    assert (ev.type, ev.vm, ev.from_state, ev.to_state, ev.time) == (
        "state", "a", "created", "running", 5.5)


# -- a tiny HTTP server on a unix socket ------------------------------------------------------

class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gate: threading.Event
    seen: list

    def address_string(self) -> str:
        return "unix"

    def log_message(self, *args: Any) -> None:
        pass

    def send_json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_GET(self) -> None:
        type(self).seen.append(("GET", self.path, self.headers.get("Authorization")))
        if self.path == "/v1/version":
            self.send_json(200, {"version": "0.test", "library": "0.test", "api": "v1"})
        elif self.path == "/v1/vms/ghost":
            self.send_json(404, err("vm_manager::vm::not_found", vm="ghost"))
        elif self.path == "/v1/vms/web/snapshots":
            self.send_json(501, err("vm_manager::api::not_implemented"))
        elif self.path == "/v1/pools":
            self.send_json(200, {"pools": [POOL]})
        else:
            self.send_json(404, err("vm_manager::api::route_not_found"))

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        type(self).seen.append(("POST", self.path, body))
        if self.path == "/v1/vms":  # a server that dies in the middle of the request
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if self.path != "/v1/vms/web/exec":
            self.send_json(404, err("vm_manager::api::route_not_found"))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        self.chunk(b'{"event": "started", "id": "7"}\n')
        self.chunk(json.dumps({"stream": "stdout", "data": b64(b"a\n")}).encode() + b"\n")
        # the next line only once the client has seen the first output: proves it streams
        type(self).gate.wait(10)
        self.chunk(json.dumps({"stream": "stderr", "data": b64(b"e\n")}).encode() + b"\n"
                   + json.dumps({"stream": "stdout", "data": b64(b"b\n")}).encode() + b"\n")
        self.chunk(b'{"exit": 3, "signal": 0}\n')
        self.chunk(b"")


    def do_PUT(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        type(self).seen.append(("PUT", self.path, body))
        if self.path != "/v1/vms/web/snapshots/base/pool":
            self.send_json(404, err("vm_manager::snapshot::not_found"))
        elif body["size"] > 64:
            self.send_json(400, err("vm_manager::config::invalid", field="size"))
        else:
            self.send_json(200, dict(POOL, size=body["size"]) if body["size"] else {})

    def do_DELETE(self) -> None:
        type(self).seen.append(("DELETE", self.path, None))
        self.send_response(204)
        self.end_headers()


POOL = {"vm": "web", "snapshot": "base", "size": 2, "ready": 1, "members": ["pool-0123456789abcdef"]}


class Served:
    def __init__(self, path: str, handler: type) -> None:
        self.path = path
        self.handler = handler


@pytest.fixture
def server() -> Iterator[Served]:
    d = tempfile.mkdtemp(prefix="vmctl-sdk-unit.")
    path = os.path.join(d, "serve.sock")
    handler = type("H", (Handler,), {"gate": threading.Event(), "seen": []})
    srv = UnixHTTPServer(path, handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield Served(path, handler)
    finally:
        handler.gate.set()
        srv.shutdown()
        srv.server_close()
        os.unlink(path)
        os.rmdir(d)


def test_unix_connection(server: Served) -> None:
    conn = UnixHTTPConnection(server.path, timeout=5)
    conn.request("GET", "/v1/version")
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["api"] == "v1"
    conn.close()


def test_client_errors_from_server(server: Served) -> None:
    c = vmctl.Client(socket=server.path)
    assert c.version()["version"] == "0.test"
    with pytest.raises(vmctl.VMNotFoundError) as ei:
        c.get("ghost")
    assert ei.value.vm_id == "ghost" and ei.value.status == 404
    with pytest.raises(vmctl.NotSupportedError, match="not supported by this server"):
        vmctl.VM(c, "web").snapshots()


def test_exec_stream_order_and_streaming(server: Served) -> None:
    vm = vmctl.VM(vmctl.Client(socket=server.path), "web")
    s = vm.exec_stream(["sh", "-c", "x"], timeout=5, env={"K": "V"}, stdin=b"in")
    seen = []
    for ev in s:
        seen.append((ev.kind, ev.data))
        if ev.kind == "stdout" and ev.data == b"a\n":
            server.handler.gate.set()  # the server holds the rest back until now
    assert seen == [("started", b""), ("stdout", b"a\n"), ("stderr", b"e\n"),
                    ("stdout", b"b\n"), ("exit", b"")]
    assert s.exit_code == 3 and s.id == "7"
    body = server.handler.seen[-1][2]
    assert body == {"argv": ["sh", "-c", "x"], "timeout": 5, "env": ["K=V"],
                    "stdin": base64.b64encode(b"in").decode()}


def test_exec_result(server: Served) -> None:
    server.handler.gate.set()
    r = vmctl.VM(vmctl.Client(socket=server.path), "web").exec("x")
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"a\nb\n", b"e\n")
    assert server.handler.seen[-1][2]["argv"] == ["sh", "-c", "x"]


def test_no_server(tmp_path: Any) -> None:
    c = vmctl.Client(socket=str(tmp_path / "none.sock"))
    with pytest.raises(vmctl.ServerUnavailableError, match="no vmctl server answers"):
        c.version()


def test_autostart_failure_is_reported(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMCTL", "/bin/false")
    c = vmctl.Client(home=str(tmp_path), start_timeout=5)
    with pytest.raises(vmctl.ServerUnavailableError, match="cannot start a vmctl server.*exited 1"):
        c.version()


def test_bearer_token() -> None:
    t = Transport(url="http://127.0.0.1:1", token="sekrit")
    assert t.token == "sekrit" and t.where == "http://127.0.0.1:1"
    with pytest.raises(ValueError):
        Transport(url="https://x")


def test_broken_connection_is_not_retried(server: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMCTL", "/bin/false")  # a restart attempt would fail differently
    c = vmctl.Client(socket=server.path, autostart=True)
    with pytest.raises(vmctl.ServerConnectionLostError):
        vmctl.VM.create("x", client=c, start=False)
    assert [h for h in server.handler.seen if h[:2] == ("POST", "/v1/vms")] == [
        ("POST", "/v1/vms", {"name": "x", "vcpus": 2, "memory_mib": 512})]


def test_pools(server: Served) -> None:
    c = vmctl.Client(socket=server.path)
    assert c.pools() == [vmctl.Pool("web", "base", 2, 1, ["pool-0123456789abcdef"])]
    snap = vmctl.Snapshot(vmctl.VM(c, "web"), "base")
    p = snap.set_pool(3)
    assert isinstance(p, vmctl.Pool) and (p.size, p.ready, p.members) == (3, 1, POOL["members"])
    assert server.handler.seen[-1] == ("PUT", "/v1/vms/web/snapshots/base/pool", {"size": 3})
    assert snap.set_pool(0) is None
    with pytest.raises(vmctl.ValidationError) as ei:
        snap.set_pool(65)
    assert ei.value.code == "vm_manager::config::invalid" and ei.value.status == 400
    with pytest.raises(vmctl.SnapshotError):
        c.set_pool("web", "nope", 1)
    snap.remove_pool()
    assert server.handler.seen[-1] == ("DELETE", "/v1/vms/web/snapshots/base/pool", None)
    assert asyncio.run(vmctl.AsyncClient(client=c).pools())[0].snapshot == "base"


def test_snapshot_fields() -> None:
    s = vmctl.Snapshot(vmctl.VM(vmctl.Client(socket="/nonexistent"), "web"), "base",
                       {"kind": "template", "memory_mib": 256, "refs": 2, "created_at": 1,
                        "machine": "microvm", "qemu_version": "7.2.0", "dir": "/d"})
    assert (s.kind, s.memory_mib, s.refs, s.created_at, s.machine, s.qemu_version, s.dir,
            s.save_ms) == ("template", 256, 2, 1, "microvm", "7.2.0", "/d", None)
