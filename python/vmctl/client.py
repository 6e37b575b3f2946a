"""The synchronous SDK: :class:`Client` (one vmctl server) and :class:`VM` (one machine)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator, Mapping, Optional, Sequence, Union

from ._http import Response, Transport
from .errors import (
    CommandExecutionUnavailableError,
    ServerUnavailableError,
    VmctlError,
    error_from_json,
)

__all__ = [
    "Client",
    "VM",
    "ExecResult",
    "ExecEvent",
    "ExecStream",
    "Event",
    "EventStream",
    "Snapshot",
    "Pool",
    "default_home",
]

PathLike = Union[str, "os.PathLike[str]"]
Argv = Union[str, Sequence[str]]


def default_home() -> str:
    """The vmctl home as the CLI finds it: ``$VMCTL_HOME``, else ``$XDG_DATA_HOME/vmctl``, else
    ``~/.local/share/vmctl``."""
    if os.environ.get("VMCTL_HOME"):
        return os.environ["VMCTL_HOME"]
    if os.environ.get("XDG_DATA_HOME"):
        return os.path.join(os.environ["XDG_DATA_HOME"], "vmctl")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "vmctl")


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _argv(argv: Argv) -> list[str]:
    if isinstance(argv, str):
        return ["sh", "-c", argv]
    out = [str(a) for a in argv]
    if not out:
        raise ValueError("argv must name a command")
    return out


def _env(env: Union[None, Mapping[str, str], Sequence[str]]) -> Optional[list[str]]:
    if env is None:
        return None
    if isinstance(env, Mapping):
        return [f"{k}={v}" for k, v in env.items()]
    return [str(e) for e in env]


@dataclass
class ExecResult:
    """The outcome of :meth:`VM.exec`: the exit status (128+N when killed by signal N), the
    signal (0 when none) and all of the output as bytes."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    signal: int = 0

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0

    @property
    def output(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    def check(self) -> "ExecResult":
        """Raise :class:`VmctlError` unless the command exited 0; return self."""
        if self.exit_code != 0:
            raise VmctlError(f"command exited {self.exit_code}", None,
                             {"exit_code": self.exit_code, "signal": self.signal,
                              "stderr": self.stderr.decode("utf-8", "replace")[-2000:]})
        return self


@dataclass
class ExecEvent:
    """One event of a streamed exec, in the order the server sent it.

    ``kind`` is ``"started"`` (``id`` set), ``"stdout"`` or ``"stderr"`` (``data`` set), or
    ``"exit"`` (``exit_code`` and ``signal`` set; always the last).
    """

    kind: str
    data: bytes = b""
    exit_code: Optional[int] = None
    signal: int = 0
    id: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "ExecEvent":
        """Parse one NDJSON line of ``POST /v1/vms/{name}/exec``; an ``error`` line raises it."""
        if "error" in obj:
            raise error_from_json(obj, None)
        if obj.get("event") == "started":
            return cls("started", id=None if obj.get("id") is None else str(obj["id"]))
        if "stream" in obj:
            stream = obj["stream"]
            if stream not in ("stdout", "stderr"):
                raise VmctlError(f"unknown exec stream {stream!r} from the server")
            try:
                data = base64.b64decode(obj.get("data") or "", validate=True)
            except ValueError:
                raise VmctlError("exec output from the server is not base64") from None
            return cls(stream, data=data)
        if "exit" in obj:
            return cls("exit", exit_code=int(obj["exit"]), signal=int(obj.get("signal") or 0))
        return cls(str(obj.get("event") or "unknown"))


class ExecStream:
    """A running command's events as an iterator (``for ev in vm.exec_stream(...)``).

    While it runs: :meth:`write` feeds stdin (with ``stdin_open=True``), :meth:`send_signal`,
    :meth:`resize` (tty), :meth:`kill`. Closing the stream (or leaving its ``with`` block) before
    the command ended kills it. After the last event, :attr:`exit_code` and :attr:`signal` are set.
    """

    def __init__(self, client: "Client", resp: Response) -> None:
        self._client = client
        self._resp = resp
        self._lines = resp.iter_lines()
        self.id: Optional[str] = None
        self.exit_code: Optional[int] = None
        self.signal: int = 0
        self.done = False

    def __iter__(self) -> "ExecStream":
        return self

    def __next__(self) -> ExecEvent:
        if self.done:
            raise StopIteration
        try:
            obj = next(self._lines)
        except StopIteration:
            self.done = True
            raise VmctlError("the exec stream ended before the command's exit status") from None
        try:
            ev = ExecEvent.from_json(obj)
        except BaseException:
            self.done = True
            self._resp.close()
            raise
        if ev.kind == "started":
            self.id = ev.id
        elif ev.kind == "exit":
            self.exit_code, self.signal, self.done = ev.exit_code, ev.signal, True
            self._resp.close()
        return ev

    def _need_id(self) -> str:
        if self.id is None:
            raise VmctlError("the command has not started yet (no id)")
        return self.id

    def write(self, data: bytes, eof: bool = False) -> None:
        """Send bytes to the command's stdin (needs ``stdin_open=True``); ``eof``: close it after."""
        self._client._t.request("POST", f"/v1/exec/{_q(self._need_id())}/stdin", data, raw=True,
                                query={"eof": 1} if eof else None,
                                headers={"Content-Type": "application/octet-stream"}).read()

    def close_stdin(self) -> None:
        """Close the command's stdin."""
        self.write(b"", eof=True)

    def send_signal(self, sig: Union[int, str]) -> None:
        """Send a signal (``15`` or ``"TERM"``) to the command."""
        self._client._t.request("POST", f"/v1/exec/{_q(self._need_id())}/signal",
                                {"signal": sig}).read()

    def resize(self, rows: int, cols: int) -> None:
        """Resize the command's terminal (``tty=True`` only)."""
        self._client._t.request("POST", f"/v1/exec/{_q(self._need_id())}/resize",
                                {"rows": rows, "cols": cols}).read()

    def kill(self) -> None:
        """SIGKILL the command's process group."""
        self._client._t.request("DELETE", f"/v1/exec/{_q(self._need_id())}").read()

    def result(self) -> ExecResult:
        """Read the rest of the stream and return it as an :class:`ExecResult`."""
        out: list[bytes] = []
        err: list[bytes] = []
        for ev in self:
            if ev.kind == "stdout":
                out.append(ev.data)
            elif ev.kind == "stderr":
                err.append(ev.data)
        assert self.exit_code is not None
        return ExecResult(self.exit_code, b"".join(out), b"".join(err), self.signal)

    def close(self) -> None:
        """Stop reading; a command still running is killed (the server sees the close)."""
        self.done = True
        self._resp.close()

    def __enter__(self) -> "ExecStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass
class Event:
    """A change in the store (``GET /v1/events``): ``type`` is ``created``, ``state``, ``exit``
    or ``destroyed`` (and ``ready``, with no VM, once the server watches the store); ``from_state``/``to_state`` the states (None before creation / after
    destruction); ``time`` in unix seconds."""

    type: str
    vm: str
    from_state: Optional[str]
    to_state: Optional[str]
    time: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Event":
        if "error" in obj:
            raise error_from_json(obj, None)
        return cls(str(obj.get("type")), str(obj.get("vm")), obj.get("from"), obj.get("to"),
                   float(obj.get("time") or 0.0), dict(obj))


class EventStream:
    """The server's event stream as an iterator; it never ends by itself: :meth:`close` it (or
    use it in a ``with`` block)."""

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self._lines = resp.iter_lines()

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> Event:
        try:
            return Event.from_json(next(self._lines))
        except TimeoutError:  # the builtin: socket.timeout
            self.close()
            raise VmctlError("no event from the server within the stream's timeout") from None

    def close(self) -> None:
        self._resp.close()

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _find_vmctl() -> str:
    env = os.environ.get("VMCTL")
    if env:
        return env
    found = shutil.which("vmctl")
    if not found:
        raise ServerUnavailableError(
            "cannot start a vmctl server: no vmctl binary ($VMCTL unset, none in PATH)",
            help="Set VMCTL to the vmctl binary, or install vm-manager")
    return found


class Client:
    """A connection to ``vmctl serve``.

    With no arguments it talks to the server on ``$VMCTL_HOME/serve.sock`` (``home`` overrides
    the home) and, when none answers there, starts one (``vmctl --home HOME serve --foreground``
    in its own session; the binary is ``$VMCTL`` or ``vmctl`` in ``PATH``) unless
    ``autostart=False``. ``socket`` names another unix socket; ``url`` (``http://127.0.0.1:PORT``)
    a TCP server, with ``token`` its bearer token (or ``token_file``).
    """

    def __init__(
        self,
        socket: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        home: Optional[str] = None,
        *,
        token_file: Optional[str] = None,
        autostart: Optional[bool] = None,
        timeout: Optional[float] = 600.0,
        start_timeout: float = 30.0,
    ) -> None:
        if socket is not None and url is not None:
            raise ValueError("give socket or url, not both")
        if token is None and token_file is not None:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        self.home = os.fspath(home) if home is not None else default_home()
        self.socket = socket if socket is not None or url is not None else os.path.join(
            self.home, "serve.sock")
        self.url = url
        # autostart only for the default socket of a home (not for a socket or URL named)
        self.autostart = (socket is None and url is None) if autostart is None else autostart
        self.start_timeout = start_timeout
        self.server_process: Optional[subprocess.Popen[bytes]] = None
        self._t = Transport(self.socket if url is None else None, url, token, timeout)

    # -- the connection ---------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        try:
            return self._t.request(method, path, body, **kw)
        except ServerUnavailableError:
            if not self.autostart or self.url is not None:
                raise
            if hasattr(body, "seek"):
                body.seek(0)
            self.start_server()
            return self._t.request(method, path, body, **kw)

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self._request(method, path, body, **kw).json()

    def start_server(self) -> None:
        """Start ``vmctl serve --foreground`` for this home (in its own session, so it outlives
        this process; its log appended to ``HOME/serve.log``) and wait until it answers (at most
        ``start_timeout`` seconds)."""
        vmctl = _find_vmctl()
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        log_path = os.path.join(self.home, "serve.log")
        cmd = [vmctl, "--home", self.home, "serve", "--foreground"]
        if self.socket != os.path.join(self.home, "serve.sock"):
            cmd += ["--socket", str(self.socket)]
        with open(log_path, "ab") as log:
            start = log.tell()
            self.server_process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=log,
                                                   start_new_session=True, close_fds=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._t.request("GET", "/v1/version", timeout=5.0).read()
                return
            except ServerUnavailableError:
                pass
            rc = self.server_process.poll()
            if rc is not None or time.monotonic() > deadline:
                if rc is None:
                    self.server_process.kill()
                    self.server_process.wait()
                self.server_process = None
                try:
                    with open(log_path, "rb") as f:
                        f.seek(start)
                        err = f.read().decode("utf-8", "replace").strip()[-2000:]
                except OSError:
                    err = ""
                raise ServerUnavailableError(
                    f"cannot start a vmctl server ({' '.join(cmd)}): "
                    + (f"it exited {rc}" if rc is not None else
                       f"no answer within {self.start_timeout:g} s"),
                    None, {"command": cmd, "log": log_path},
                    f"Run the command by hand to see why; its log is {log_path}",
                    cause=err or None)
            time.sleep(0.05)

    def stop_server(self, timeout: float = 10.0) -> None:
        """Stop the server this Client started (SIGTERM, then SIGKILL after ``timeout``)."""
        p, self.server_process = self.server_process, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_server()

    # -- the server -------------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``{"version", "library", "api"}`` of the server."""
        return self._json("GET", "/v1/version")

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document."""
        return self._json("GET", "/v1/openapi.json")

    # -- VMs ----------------------------------------------------------------------------------

    def list(self) -> list["VM"]:
        """Every VM in the store, as :class:`VM` objects (their ``info`` filled)."""
        doc = self._json("GET", "/v1/vms")
        return [VM(self, v["name"], v) for v in (doc or {}).get("vms", [])]

    def get(self, name: str) -> "VM":
        """The VM ``name`` (raises :class:`VMNotFoundError`)."""
        return VM(self, name, self._json("GET", f"/v1/vms/{_q(name)}"))

    def create(self, name: str, vcpus: int = 2, memory_mib: int = 512,
               image: Optional[str] = None, **kw: Any) -> "VM":
        """Create a VM; see :meth:`VM.create` for the arguments."""
        return VM.create(name, vcpus, memory_mib, image, client=self, **kw)

    def pools(self) -> list[Pool]:
        """Every warm pool (as ``vmctl pool list --json``)."""
        return [Pool.from_json(p) for p in (self._json("GET", "/v1/pools") or {}).get("pools", [])]

    def set_pool(self, vm: str, snapshot: str, size: int) -> Optional[Pool]:
        """:meth:`Snapshot.set_pool` of snapshot ``snapshot`` of VM ``vm``."""
        return Snapshot(VM(self, vm), snapshot).set_pool(size)

    def images(self) -> list[dict[str, Any]]:
        """The cached images (as ``vmctl image list --json``)."""
        return (self._json("GET", "/v1/images") or {}).get("images", [])

    def stats(self, name: str, guest: bool = True) -> dict[str, Any]:
        """The statistics of VM ``name`` (as ``vmctl stats NAME --json``)."""
        return self._json("GET", f"/v1/vms/{_q(name)}/stats", query=None if guest else {"guest": 0})

    def events(self, timeout: Optional[float] = None) -> EventStream:
        """The store's changes as they happen (an endless :class:`EventStream`); ``timeout``:
        seconds one wait for the next event may take before :class:`VmctlError` (None: no
        limit)."""
        return EventStream(self._request("GET", "/v1/events", stream=True, timeout=timeout))


def _strip(name: str, prefix: str) -> Optional[str]:
    """An archive entry's path relative to the downloaded directory: the server's tar names
    entries ``BASE/...`` (``tar -C PARENT BASE``); ``None`` for the root entry."""
    name = os.path.normpath(name.lstrip("/"))
    if prefix not in ("", "."):
        if name == prefix:
            return None
        if name.startswith(prefix + "/"):
            name = name[len(prefix) + 1:]
    return None if name == "." else name


def _extract(tar: tarfile.TarFile, dest: str, prefix: str) -> None:
    """Extract a tar stream from a guest into ``dest``, trusting nothing in it: tarfile's
    ``data`` filter where Python has it (3.11.4+); else only regular files and directories whose
    path stays inside ``dest`` and goes through no symbolic link, permission bits only. Entries
    left out are named in the :class:`AgentError` raised after the rest was extracted."""
    root = os.path.realpath(dest)
    skipped: list[str] = []
    data_filter = getattr(tarfile, "data_filter", None)
    for m in tar:
        name = _strip(m.name, prefix)
        if name is None:
            continue
        if data_filter is not None:
            m.name = name
            try:
                tar.extract(m, root, filter="data")
            except tarfile.FilterError:
                skipped.append(m.name)
            continue
        target = os.path.join(root, name)
        parent = os.path.realpath(os.path.dirname(target))
        if (name.startswith("..") or os.path.commonpath([root, parent]) != root
                or os.path.islink(target)):
            skipped.append(m.name)
            continue
        if m.isdir():
            os.makedirs(target, mode=0o777, exist_ok=True)
            os.chmod(target, (m.mode & 0o777) | 0o700)
        elif m.isfile():
            src = tar.extractfile(m)
            assert src is not None
            fd, tmp = tempfile.mkstemp(prefix=".vmctl-", dir=parent)
            with os.fdopen(fd, "wb") as f:
                shutil.copyfileobj(src, f)
            os.chmod(tmp, m.mode & 0o777)
            os.replace(tmp, target)
        else:
            skipped.append(m.name)
    if skipped:
        from .errors import AgentError

        raise AgentError(f"the copy out of the guest left out {len(skipped)} entries",
                         None, {"path": dest, "skipped": len(skipped)},
                         "Everything else was copied; links and special files are not taken "
                         "from a guest by the SDK", notes=skipped[:16])


@dataclass
class Pool:
    """A template snapshot's warm pool (docs/snapshots.md "Warm pool"), an element of ``vmctl
    pool list --json``: ``size`` hypervisors kept launched for snapshot ``snapshot`` of VM ``vm``,
    ``ready`` of them ready now, ``members`` their VM names (``pool-HEX``), ``project`` the
    VMFile whose ``vmctl up`` set it (``from "VM/SNAP" pool=N``; None: set by hand). A clone of
    the snapshot takes one of them."""

    vm: str
    snapshot: str
    size: int
    ready: int
    members: list[str] = field(default_factory=list)
    project: Optional[str] = None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Pool":
        return cls(str(obj.get("vm", "")), str(obj.get("snapshot", "")), int(obj.get("size", 0)),
                   int(obj.get("ready", 0)), [str(m) for m in obj.get("members") or []],
                   obj.get("project"))


class Snapshot:
    """A snapshot of a VM (when the server has snapshots; else its calls raise
    :class:`NotSupportedError`). Its fields (``kind``, ``memory_mib``, ``refs``, ...) are those of
    ``vmctl snapshot list --json``, also in ``info``."""

    def __init__(self, vm: "VM", name: str, info: Optional[dict[str, Any]] = None) -> None:
        self.vm = vm
        self.name = name
        self.info = info or {}

    @property
    def kind(self) -> Optional[str]:
        """"template" (its clones map its RAM file) or "full" (RAM in the stream)."""
        return self.info.get("kind")

    @property
    def memory_mib(self) -> Optional[int]:
        return self.info.get("memory_mib")

    @property
    def machine(self) -> Optional[str]:
        return self.info.get("machine")

    @property
    def qemu_version(self) -> Optional[str]:
        """The QEMU that saved it (a restore needs the same)."""
        return self.info.get("qemu_version")

    @property
    def dir(self) -> Optional[str]:
        """Its directory on the server's host."""
        return self.info.get("dir")

    @property
    def created_at(self) -> Optional[int]:
        """Unix seconds."""
        return self.info.get("created_at")

    @property
    def refs(self) -> int:
        """How many VMs map it (clones, pool processes), when it was read."""
        return int(self.info.get("refs") or 0)

    @property
    def save_ms(self) -> Optional[float]:
        """How long the save took (from :meth:`VM.snapshot` only)."""
        return self.info.get("save_ms")

    def _path(self) -> str:
        return f"/v1/vms/{_q(self.vm.name)}/snapshots/{_q(self.name)}"

    def set_pool(self, size: int) -> Optional[Pool]:
        """Keep ``size`` (0-64) hypervisors ready for this template snapshot, launched before
        this returns (``vmctl pool VM/SNAP --size N``); returns the pool, or None for 0 (the
        pool and its hypervisors removed). :class:`ValidationError` (``config::invalid``) past
        64 or for a full snapshot."""
        doc = self.vm.client._json("PUT", self._path() + "/pool", {"size": size})
        return Pool.from_json(doc) if doc else None

    def remove_pool(self) -> None:
        """Remove this snapshot's pool and its hypervisors (none: nothing to do)."""
        self.vm.client._request("DELETE", self._path() + "/pool").read()

    def clone(self, count: int = 1, name: Optional[str] = None,
              timeout: Optional[float] = None) -> list["VM"]:
        """Make ``count`` new running VMs from this snapshot (each ready, with its own hostname,
        MAC and random state); returns them. ``name`` (default ``VM-SNAP``) is the new VM's name
        for one, else the stem of ``name-1`` .. ``name-N``."""
        body: dict[str, Any] = {"name": name or f"{self.vm.name}-{self.name}", "count": count}
        if timeout is not None:
            body["timeout"] = timeout
        doc = self.vm.client._json("POST", self._path() + "/clone", body)
        vms = doc.get("vms", []) if isinstance(doc, dict) else doc or []
        return [VM(self.vm.client, v["name"], v) for v in vms]

    def restore(self, timeout: Optional[float] = None) -> "VM":
        """Bring the snapshot's (not running) VM back to this snapshot and run it; returns the
        VM (its ``info`` refreshed) once its agent answers (docs/snapshots.md)."""
        body = {"timeout": timeout} if timeout is not None else {}
        doc = self.vm.client._json("POST", self._path() + "/restore", body)
        if isinstance(doc, dict):
            self.vm.info = doc
        return self.vm

    def remove(self) -> None:
        """Remove the snapshot (``snapshot::in_use`` while clones or a pool map it)."""
        self.vm.client._request("DELETE", self._path()).read()

    def __repr__(self) -> str:
        return f"Snapshot({self.vm.name!r}, {self.name!r})"


class VM:
    """One VM of a server. Usually made by :meth:`VM.create` (a context manager: the VM is
    destroyed when the block ends, also when it raises) or :meth:`Client.get`."""

    def __init__(self, client: Client, name: str, info: Optional[dict[str, Any]] = None) -> None:
        self.client = client
        self.name = name
        self.info: dict[str, Any] = info or {}
        self.destroy_on_exit = False

    def __repr__(self) -> str:
        return f"VM({self.name!r}, state={self.info.get('state')!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        vcpus: int = 2,
        memory_mib: int = 512,
        image: Optional[str] = None,
        *,
        client: Optional[Client] = None,
        start: bool = True,
        wait: bool = True,
        timeout: Optional[float] = None,
        disk_gib: Optional[int] = None,
        net: Optional[str] = None,
        ports: Optional[Sequence[str]] = None,
        env: Union[None, Mapping[str, str], Sequence[str]] = None,
        **extra: Any,
    ) -> "VM":
        """Create a VM and (``start=True``) start it and wait until its guest agent answers
        (``wait``; ``timeout`` seconds, None: the library's default). When the start fails the
        VM is destroyed again and the error raised. Other keywords (``backend``, ``kernel``,
        ``initrd``, ``cmdline``, ``machine``, ``accel``, ``cloud_init``, ``ssh_key``,
        ``snapshottable``: its RAM in a file, for template snapshots) are passed as the API names
        them. Used as a context manager the VM is destroyed on exit."""
        client = client if client is not None else Client()
        body: dict[str, Any] = {"name": name, "vcpus": vcpus, "memory_mib": memory_mib}
        opt = {"image": image, "disk_gib": disk_gib, "net": net,
               "ports": list(ports) if ports is not None else None, "env": _env(env)}
        body.update({k: v for k, v in opt.items() if v is not None})
        body.update({k: v for k, v in extra.items() if v is not None})
        if start:
            body["start"] = True
            body["wait"] = bool(wait)
            if timeout:
                body["timeout"] = timeout
        try:
            info = client._json("POST", "/v1/vms", body)
        except VmctlError as e:
            # the VM stays created when its start failed: take it away again, keep the error
            if start and e.code != "vm_manager::vm::already_exists" and e.status != 400:
                try:
                    client._request("DELETE", f"/v1/vms/{_q(name)}", query={"force": 1}).read()
                except VmctlError:
                    pass
            raise
        vm = cls(client, name, info)
        vm.destroy_on_exit = True
        return vm

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.destroy_on_exit:
            self.destroy(force=True, missing_ok=True)

    def _post(self, action: str, body: Any = None) -> dict[str, Any]:
        self.info = self.client._json("POST", f"/v1/vms/{_q(self.name)}/{action}", body) or {}
        return self.info

    def start(self, wait: bool = True, timeout: Optional[float] = None) -> dict[str, Any]:
        """Start the VM; ``wait``: until its guest agent answers (``timeout`` seconds)."""
        body: dict[str, Any] = {"wait": wait}
        if timeout:
            body["timeout"] = timeout
        return self._post("start", body)

    def stop(self, force: bool = False, timeout: Optional[float] = None) -> dict[str, Any]:
        """Shut the VM down (``force``: escalate to a kill after ``timeout``)."""
        body: dict[str, Any] = {"force": force}
        if timeout:
            body["timeout"] = timeout
        return self._post("stop", body)

    def kill(self) -> dict[str, Any]:
        """Kill the VM's hypervisor process."""
        return self._post("kill")

    def pause(self) -> dict[str, Any]:
        """Pause the VM's vCPUs."""
        return self._post("pause")

    def resume(self) -> dict[str, Any]:
        """Resume a paused VM."""
        return self._post("resume")

    def destroy(self, force: bool = True, missing_ok: bool = False) -> None:
        """Remove the VM (``force``: also when it runs). ``missing_ok``: a VM already gone is
        no error."""
        from .errors import VMNotFoundError

        try:
            self.client._request("DELETE", f"/v1/vms/{_q(self.name)}",
                                 query={"force": 1} if force else None).read()
        except VMNotFoundError:
            if not missing_ok:
                raise
        self.destroy_on_exit = False
        self.info = {**self.info, "state": "destroyed"}

    def status(self) -> dict[str, Any]:
        """The VM's status (as ``vmctl status NAME --json``); also kept in :attr:`info`."""
        self.info = self.client._json("GET", f"/v1/vms/{_q(self.name)}")
        return self.info

    @property
    def state(self) -> str:
        """The VM's state now (asks the server)."""
        return str(self.status().get("state"))

    def stats(self, guest: bool = True) -> dict[str, Any]:
        """The VM's statistics (``guest=False``: without asking the guest agent)."""
        return self.client.stats(self.name, guest)

    # -- exec ---------------------------------------------------------------------------------

    def exec_stream(
        self,
        argv: Argv,
        timeout: Optional[float] = None,
        env: Union[None, Mapping[str, str], Sequence[str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[None, bytes, str] = None,
        *,
        user: Optional[str] = None,
        stdin_open: bool = False,
        tty: bool = False,
        rows: Optional[int] = None,
        cols: Optional[int] = None,
    ) -> ExecStream:
        """Run a command and return its events as they arrive (an :class:`ExecStream`).
        ``argv`` is a list, or a string run by ``sh -c``. ``stdin``: all of its input (bytes or
        text); with ``stdin_open`` more can be written with :meth:`ExecStream.write`."""
        body: dict[str, Any] = {"argv": _argv(argv)}
        if timeout:
            body["timeout"] = timeout
        if env is not None:
            body["env"] = _env(env)
        if cwd is not None:
            body["cwd"] = cwd
        if user is not None:
            body["user"] = user
        if stdin is not None:
            data = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
            body["stdin"] = base64.b64encode(data).decode()
        if stdin_open:
            body["stdin_open"] = True
        if tty:
            body["tty"] = True
            if rows:
                body["rows"] = rows
            if cols:
                body["cols"] = cols
        resp = self.client._request("POST", f"/v1/vms/{_q(self.name)}/exec", body, stream=True)
        return ExecStream(self.client, resp)

    def exec(
        self,
        argv: Argv,
        timeout: Optional[float] = None,
        env: Union[None, Mapping[str, str], Sequence[str]] = None,
        cwd: Optional[str] = None,
        stdin: Union[None, bytes, str] = None,
        *,
        user: Optional[str] = None,
        check: bool = False,
    ) -> ExecResult:
        """Run a command to its end; return its :class:`ExecResult`. A ``timeout`` that expires
        raises :class:`OperationTimeoutError` (the guest killed the command); ``check``: raise
        unless it exited 0."""
        with self.exec_stream(argv, timeout, env, cwd, stdin, user=user) as s:
            r = s.result()
        return r.check() if check else r

    # -- files --------------------------------------------------------------------------------

    def upload(self, local: PathLike, remote: str, mode: Optional[int] = None) -> None:
        """Copy a local file, or a directory (its contents land in the guest directory
        ``remote``), into the VM. ``remote`` is an absolute guest path."""
        local = os.fspath(local)
        path = f"/v1/vms/{_q(self.name)}/files"
        if os.path.isdir(local):
            # the server extracts into an existing directory only: make it first
            self.exec(["mkdir", "-p", remote], timeout=60, check=True)
            with tempfile.TemporaryFile() as tmp:
                with tarfile.open(fileobj=tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for entry in sorted(os.listdir(local)):
                        tar.add(os.path.join(local, entry), arcname=entry)
                size = tmp.tell()
                tmp.seek(0)
                self.client._request("PUT", path, tmp, raw=True, query={"path": remote},
                                     headers={"Content-Type": "application/x-tar",
                                              "Content-Length": str(size)}).read()
            return
        st = os.stat(local)
        query: dict[str, Any] = {"path": remote,
                                 "mode": format(mode if mode is not None else st.st_mode & 0o777,
                                                "04o")}
        with open(local, "rb") as f:
            self.client._request("PUT", path, f, raw=True, query=query,
                                 headers={"Content-Type": "application/octet-stream",
                                          "Content-Length": str(st.st_size)}).read()

    def write_file(self, remote: str, data: Union[bytes, str], mode: int = 0o644) -> None:
        """Write ``data`` to the guest file ``remote``."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self.client._request("PUT", f"/v1/vms/{_q(self.name)}/files", raw, raw=True,
                             query={"path": remote, "mode": format(mode, "04o")},
                             headers={"Content-Type": "application/octet-stream"}).read()

    def read_file(self, remote: str) -> bytes:
        """The bytes of the guest file ``remote``."""
        return self.client._request("GET", f"/v1/vms/{_q(self.name)}/files",
                                    query={"path": remote}, stream=True).read()

    def download(self, remote: str, local: PathLike) -> str:
        """Copy a guest file or directory to ``local`` (like ``cp -r``: into an existing local
        directory under its own name). Directories are extracted with tarfile's ``data`` filter
        (nothing outside ``local``, no devices, no setuid bits). Returns the path written."""
        local = os.fspath(local)
        if os.path.isdir(local):
            local = os.path.join(local, os.path.basename(remote.rstrip("/")) or "root")
        resp = self.client._request("GET", f"/v1/vms/{_q(self.name)}/files",
                                    query={"path": remote}, stream=True)
        if resp.content_type == "application/x-tar":
            os.makedirs(local, exist_ok=True)
            try:
                with tarfile.open(fileobj=resp.raw, mode="r|") as tar:
                    _extract(tar, local, os.path.basename(remote.rstrip("/")) or ".")
            finally:
                resp.close()
            return local
        directory = os.path.dirname(os.path.abspath(local))
        fd, tmp = tempfile.mkstemp(prefix=".vmctl-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_chunks():
                    f.write(chunk)
            os.replace(tmp, local)
        except BaseException:
            resp.close()
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return local

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot(self, name: str, kind: Optional[str] = None,
                 keep_running: bool = False) -> Snapshot:
        """Take a snapshot ``name`` of the VM: ``kind`` "template" (a --snapshottable VM: RAM
        left out of the stream, clones map it) or "full" (RAM in the stream; the default for
        other VMs). :class:`NotSupportedError` from a server without snapshots."""
        body: dict[str, Any] = {"name": name}
        if kind is not None:
            body["kind"] = kind
        if keep_running:
            body["keep_running"] = True
        doc = self.client._json("POST", f"/v1/vms/{_q(self.name)}/snapshots", body)
        return Snapshot(self, name, doc if isinstance(doc, dict) else None)

    def snapshots(self) -> list[Snapshot]:
        """The VM's snapshots."""
        doc = self.client._json("GET", f"/v1/vms/{_q(self.name)}/snapshots") or {}
        items = doc.get("snapshots", []) if isinstance(doc, dict) else doc
        return [Snapshot(self, s.get("name", ""), s) for s in items]

    def wait_exec_ready(self, timeout: float = 60.0) -> None:
        """Wait until a command runs in the guest (``true``), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.exec(["true"], timeout=max(1.0, deadline - time.monotonic()))
                return
            except CommandExecutionUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
