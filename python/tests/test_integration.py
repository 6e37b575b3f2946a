"""The SDK against a real `vmctl serve` and real VMs (QEMU, the default guest).

Needs $VMCTL (the vmctl binary; else build/src/cli/vmctl of this tree) and $VMCTL_TEST_IMAGES
(a directory holding default/, as scripts/test.sh builds it). Without them every test here is
skipped with the reason, and under CI=true fails instead. One server (started on demand by the
Client itself) and one running VM are shared by the whole module.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Iterator

import pytest

import vmctl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"skipped under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def vmctl_bin() -> str:
    path = os.environ.get("VMCTL") or os.path.join(ROOT, "build", "src", "cli", "vmctl")
    if not os.access(path, os.X_OK):
        _missing(f"no vmctl binary at '{path}' (set VMCTL)")
    if not shutil.which("qemu-system-x86_64"):
        _missing("qemu-system-x86_64 is not installed (Debian package qemu-system-x86)")
    return path


@pytest.fixture(scope="module")
def home(vmctl_bin: str) -> Iterator[str]:
    images = os.environ.get("VMCTL_TEST_IMAGES", "")
    if not images or not os.path.isfile(os.path.join(images, "default", "vmlinux")):
        _missing("the default guest was not built (VMCTL_TEST_IMAGES; scripts/test.sh builds it)")
    d = tempfile.mkdtemp(prefix="vmctl-test-python-sdk.")
    os.symlink(images, os.path.join(d, "images"))
    try:
        yield d
    finally:
        # no QEMU of ours may outlive the tests
        out = subprocess.run(["pgrep", "-f", os.path.join(d, "vms") + "/"], capture_output=True,
                             text=True).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def client(vmctl_bin: str, home: str) -> Iterator[vmctl.Client]:
    os.environ["VMCTL"] = vmctl_bin  # the binary the Client starts on demand
    c = vmctl.Client(home=home, start_timeout=60)
    try:
        yield c
    finally:
        try:
            for v in c.list():
                v.destroy(force=True, missing_ok=True)
        finally:
            c.stop_server()


@pytest.fixture(scope="module")
def vm(client: vmctl.Client) -> Iterator[vmctl.VM]:
    with vmctl.VM.create("shared", vcpus=1, memory_mib=256, client=client, timeout=120,
                         snapshottable=True) as v:
        yield v
        snaps = v.snapshots()
    # a template snapshot's RAM file lives outside the home (/dev/shm): removed with the
    # snapshot, once the VM that maps it is gone
    for snap in snaps:
        snap.remove()


def test_server_started_on_demand(client: vmctl.Client, home: str) -> None:
    assert client.version()["api"] == "v1"
    assert client.server_process is not None and client.server_process.poll() is None
    assert os.path.exists(os.path.join(home, "serve.sock"))
    assert stat_mode(os.path.join(home, "serve.sock")) == 0o600


def stat_mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


def test_list_status_images_stats(client: vmctl.Client, vm: vmctl.VM) -> None:
    assert "shared" in [v.name for v in client.list()]
    assert vm.status()["state"] == "running" and vm.info["vcpus"] == 1
    assert "default" in [i["name"] for i in client.images()]
    st = vm.stats()
    assert st["name"] == "shared" and "cpu" in st and "memory" in st


def test_exec(vm: vmctl.VM) -> None:
    r = vm.exec(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=60)
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
    r = vm.exec("echo $K; pwd; cat", timeout=60, env={"K": "v 1"}, cwd="/tmp", stdin=b"in\x00put")
    assert r.ok and r.stdout == b"v 1\n/tmp\nin\x00put"
    r = vm.exec(["python3-does-not-exist"], timeout=60)
    assert r.exit_code == 127


def test_exec_stream_order_and_streaming(vm: vmctl.VM) -> None:
    # each line waits for a file the test makes only once it has seen the line before: a stream
    # that delivered events only at the command's end would hang here (until the timeout), and
    # stdout/stderr cannot race each other
    vm.exec(["rm", "-f", "/tmp/go1", "/tmp/go2"], timeout=60, check=True)
    wait = "while [ ! -e /tmp/{0} ]; do sleep 0.05; done"
    script = f"echo a; {wait.format('go1')}; echo b >&2; {wait.format('go2')}; echo c"
    seen = []
    with vm.exec_stream(script, timeout=120) as s:
        for ev in s:
            seen.append((ev.kind, ev.data))
            if ev.kind == "stdout" and ev.data == b"a\n":
                vm.exec(["touch", "/tmp/go1"], timeout=60, check=True)
            if ev.kind == "stderr":
                vm.exec(["touch", "/tmp/go2"], timeout=60, check=True)
    assert seen == [("started", b""), ("stdout", b"a\n"), ("stderr", b"b\n"), ("stdout", b"c\n"),
                    ("exit", b"")]
    assert s.exit_code == 0 and s.id is not None


def test_exec_stdin_open_and_signal(vm: vmctl.VM) -> None:
    with vm.exec_stream(["cat"], timeout=120, stdin_open=True) as s:
        ev = next(s)
        assert ev.kind == "started"
        s.write(b"hello ")
        s.write(b"world", eof=True)
        r = s.result()
    assert (r.exit_code, r.stdout) == (0, b"hello world")
    with vm.exec_stream(["sleep", "60"], timeout=120) as s:
        assert next(s).kind == "started"
        s.send_signal("TERM")
        r = s.result()
    assert (r.exit_code, r.signal) == (128 + 15, 15)


def test_exec_timeout(vm: vmctl.VM) -> None:
    with pytest.raises(vmctl.OperationTimeoutError) as ei:
        vm.exec(["sleep", "60"], timeout=1)
    e = ei.value
    assert e.code == "vm_manager::timeout" and e.operation == "exec" and e.timeout_seconds == 1
    assert vm.exec(["true"], timeout=60).ok  # the VM is fine afterwards


def test_not_found(client: vmctl.Client) -> None:
    with pytest.raises(vmctl.VMNotFoundError) as ei:
        client.get("no-such-vm")
    assert ei.value.vm_id == "no-such-vm" and ei.value.status == 404
    assert ei.value.code == "vm_manager::vm::not_found" and ei.value.help
    with pytest.raises(vmctl.VMNotFoundError):
        vmctl.VM(client, "no-such-vm").exec(["true"])


def test_already_exists_leaves_the_vm_alone(client: vmctl.Client, vm: vmctl.VM) -> None:
    with pytest.raises(vmctl.VMAlreadyExistsError) as ei:
        vmctl.VM.create("shared", client=client)
    assert ei.value.vm_id == "shared" and ei.value.status == 409
    assert vm.status()["state"] == "running"


def test_bad_config(client: vmctl.Client) -> None:
    with pytest.raises(vmctl.ValidationError) as ei:
        vmctl.VM.create("bad/name", client=client)
    assert ei.value.field == "name" and ei.value.status == 400
    with pytest.raises(vmctl.ValidationError) as ei:
        vmctl.VM.create("neg", vcpus=-1, client=client)
    assert ei.value.status == 400 and ei.value.field == "vcpus"
    with pytest.raises(vmctl.ImageError):  # image::overlay_creation_failed, from the library
        vmctl.VM.create("img", image="no-such-image-here", client=client, start=False)
    assert client.version()["api"] == "v1"  # the server is still there
    assert not {"bad/name", "neg", "img"} & {v.name for v in client.list()}


def test_exec_unavailable_and_invalid_state(client: vmctl.Client) -> None:
    with vmctl.VM.create("idle", vcpus=1, memory_mib=128, client=client, start=False) as v:
        assert v.status()["state"] == "created"
        with pytest.raises(vmctl.CommandExecutionUnavailableError) as ei:
            v.exec(["true"])
        assert ei.value.vm_id == "idle" and ei.value.reason and ei.value.status == 409
        with pytest.raises(vmctl.InvalidStateError) as si:
            v.pause()
        assert si.value.from_state == "created" and si.value.to_state == "paused"
    with pytest.raises(vmctl.VMNotFoundError):
        client.get("idle")


def test_pause_resume(vm: vmctl.VM) -> None:
    assert vm.pause()["state"] == "paused"
    assert vm.resume()["state"] == "running"
    assert vm.exec(["true"], timeout=60).ok


def test_upload_download_roundtrip(vm: vmctl.VM, tmp_path: Any) -> None:
    blob = secrets.token_bytes(300_000) + b"\x00\xff"
    src = tmp_path / "blob.bin"
    src.write_bytes(blob)
    os.chmod(src, 0o640)
    vm.upload(src, "/tmp/blob.bin")
    r = vm.exec(["sh", "-c", "stat -c %a /tmp/blob.bin; wc -c < /tmp/blob.bin"], timeout=60)
    assert r.stdout.split() == [b"640", str(len(blob)).encode()]
    back = vm.download("/tmp/blob.bin", tmp_path / "back.bin")
    assert open(back, "rb").read() == blob

    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    (tree / "sub" / "b.bin").write_bytes(b"\x01" * 70000)
    (tree / "sub" / "deeper" / "c").write_text("")
    vm.upload(tree, "/tmp/tree")
    r = vm.exec("cd /tmp/tree && find . -type f | sort", timeout=60, check=True)
    assert r.stdout.split() == [b"./a.txt", b"./sub/b.bin", b"./sub/deeper/c"]
    out = vm.download("/tmp/tree", tmp_path / "out")
    got = sorted(os.path.relpath(os.path.join(d, f), out)
                 for d, _, fs in os.walk(out) for f in fs)
    assert got == ["a.txt", "sub/b.bin", "sub/deeper/c"]
    assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == b"\x01" * 70000
    with pytest.raises(vmctl.VmctlError):
        vm.download("/no/such/file", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_context_manager_destroys_when_the_body_raises(client: vmctl.Client) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with vmctl.VM.create("ctx", vcpus=1, memory_mib=128, client=client, timeout=120) as v:
            assert v.status()["state"] == "running"
            raise RuntimeError("boom")
    with pytest.raises(vmctl.VMNotFoundError):
        client.get("ctx")


def test_events(client: vmctl.Client) -> None:
    # the server polls the store: make each change only once the one before was seen (the first
    # once the server's "ready" says it has read the store as it was)
    got = []
    v = None
    with client.events(timeout=60) as events:
        for e in events:
            if e.type == "ready" and v is None:
                v = vmctl.VM.create("ev", vcpus=1, memory_mib=128, client=client, start=False)
            if e.vm == "ev":
                got.append((e.type, e.from_state, e.to_state))
                if e.type == "created":
                    v.destroy()
                if e.type == "destroyed":
                    break
    assert got == [("created", None, "created"), ("destroyed", "created", None)]


def test_snapshot_and_clone(vm: vmctl.VM) -> None:
    """A full snapshot of the running shared VM, a clone from it that runs commands, the
    snapshot refused removal while the clone maps it, then removed."""
    vm.write_file("/root/before.txt", b"before")
    snap = vm.snapshot("sdk", kind="full")
    assert snap.info.get("kind") == "full"
    assert "sdk" in [s.name for s in vm.snapshots()]
    with pytest.raises(vmctl.SnapshotError if hasattr(vmctl, "SnapshotError") else vmctl.VmctlError):
        vm.snapshot("sdk", kind="full")  # snapshot::already_exists
    clones = snap.clone(1, name="sdkclone")
    try:
        assert [c.name for c in clones] == ["sdkclone"]
        r = clones[0].exec(["cat", "/root/before.txt"], timeout=60)
        assert r.exit_code == 0 and r.stdout == b"before"
        with pytest.raises(vmctl.VmctlError) as ei:
            snap.remove()
        assert ei.value.code == "vm_manager::snapshot::in_use"
    finally:
        for c in clones:
            c.destroy(force=True)
    snap.remove()
    assert "sdk" not in [s.name for s in vm.snapshots()]


def _wait_pool(client: vmctl.Client, ready: int) -> list[vmctl.Pool]:
    deadline = time.monotonic() + 60
    while True:
        pools = client.pools()
        if [p.ready for p in pools] == [ready] or time.monotonic() > deadline:
            return pools
        time.sleep(0.1)


def test_template_clones_pool_restore(client: vmctl.Client, vm: vmctl.VM) -> None:
    """A template snapshot of the shared (snapshottable) VM, typed; two clones from it; a warm
    pool of one set, listed and taken by a clone, refilled, removed; errors by their codes; then
    the VM restored from the snapshot."""
    vm.write_file("/root/tpl.txt", b"template")
    snap = vm.snapshot("pa-tpl", keep_running=True)
    assert (snap.kind, snap.memory_mib, snap.vm.name) == ("template", 256, "shared")
    assert isinstance(snap.created_at, int) and isinstance(snap.save_ms, float)
    listed = {s.name: s for s in vm.snapshots()}["pa-tpl"]
    assert (listed.kind, listed.refs, listed.dir) == ("template", 0, snap.dir)
    made: list[vmctl.VM] = []
    try:
        made += snap.clone(count=2, name="pa-sc")
        assert [c.name for c in made] == ["pa-sc-1", "pa-sc-2"]
        assert [c.info["state"] for c in made] == ["running", "running"]
        assert made[1].exec(["hostname"], timeout=60).stdout == b"pa-sc-2\n"
        assert made[0].read_file("/root/tpl.txt") == b"template"
        with pytest.raises(vmctl.ValidationError) as ei:
            snap.set_pool(65)
        assert ei.value.code == "vm_manager::config::invalid" and ei.value.help
        with pytest.raises(vmctl.SnapshotError) as ei:
            client.set_pool("shared", "pa-nope", 1)
        assert ei.value.code == "vm_manager::snapshot::not_found" and ei.value.status == 404
        assert client.pools() == []
        pool = snap.set_pool(1)
        assert pool is not None and (pool.vm, pool.snapshot, pool.size, pool.ready) == (
            "shared", "pa-tpl", 1, 1)
        assert client.pools() == [pool] and pool.project is None  # set through the API: by hand
        with pytest.raises(vmctl.SnapshotError) as ei:
            snap.remove()
        assert ei.value.code == "vm_manager::snapshot::in_use"
        member_pid = client.get(pool.members[0]).info["pid"]
        made += snap.clone(name="pa-sp")
        assert made[-1].info["pid"] == member_pid  # the clone is the pooled hypervisor
        assert made[-1].exec(["hostname"], timeout=60).stdout == b"pa-sp\n"
        pools = _wait_pool(client, 1)
        assert [p.ready for p in pools] == [1], pools  # the server's clone refilled it
        assert asyncio.run(vmctl.AsyncClient(client=client).pools()) == pools
        refilled_pid = client.get(pools[0].members[0]).info["pid"]
        assert snap.set_pool(0) is None
        assert client.pools() == []
        snap.remove_pool()  # none: nothing to do
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{refilled_pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{refilled_pid}"), "the pool's hypervisor outlived it"
    finally:
        snap.remove_pool()
        for c in made:
            c.destroy(force=True, missing_ok=True)
    vm.write_file("/root/tpl.txt", b"changed")
    vm.stop(force=True)
    assert snap.restore(timeout=120).info["state"] == "running"
    assert vm.read_file("/root/tpl.txt") == b"template"


def test_async(client: vmctl.Client, vm: vmctl.VM) -> None:
    async def main() -> Any:
        ac = vmctl.AsyncClient(client=client)
        avm = await ac.get("shared")
        results = await asyncio.gather(*(avm.exec(["echo", str(i)], timeout=60) for i in range(3)))
        kinds = [ev.kind async for ev in await avm.exec_stream("echo x", timeout=60)]
        with pytest.raises(vmctl.VMNotFoundError):
            await ac.get("nope")
        return [r.stdout for r in results], kinds

    outs, kinds = asyncio.run(main())
    assert outs == [b"0\n", b"1\n", b"2\n"]
    assert kinds == ["started", "stdout", "exit"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tcp_with_token(vmctl_bin: str, home: str, vm: vmctl.VM, tmp_path: Any) -> None:
    token = secrets.token_hex(16)
    (tmp_path / "token").write_text(token + "\n")
    os.chmod(tmp_path / "token", 0o600)
    port = free_port()
    p = subprocess.Popen([vmctl_bin, "--home", home, "serve", "--foreground",
                          "--socket", str(tmp_path / "s.sock"), "--listen", f"127.0.0.1:{port}",
                          "--token-file", str(tmp_path / "token")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        good = vmctl.Client(url=f"http://127.0.0.1:{port}", token_file=str(tmp_path / "token"))
        deadline = time.monotonic() + 30
        while True:
            try:
                assert good.version()["api"] == "v1"
                break
            except vmctl.ServerUnavailableError:
                assert p.poll() is None, p.stderr.read() if p.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "shared" in [v.name for v in good.list()]
        with pytest.raises(vmctl.AuthenticationError) as ei:
            vmctl.Client(url=f"http://127.0.0.1:{port}", token="wrong" * 4).list()
        assert ei.value.status_code == 401
    finally:
        p.terminate()
        p.wait(30)


def test_lifecycle(client: vmctl.Client) -> None:
    with vmctl.VM.create("life", vcpus=1, memory_mib=128, client=client, start=False) as v:
        assert v.start(wait=True, timeout=120)["state"] == "running"
        assert v.exec(["true"], timeout=60).ok
        assert v.kill()["state"] in ("stopped", "crashed")
        assert v.start(wait=True, timeout=120)["state"] == "running"
        assert v.stop(force=True, timeout=30)["state"] == "stopped"
        assert v.state == "stopped"


def test_write_read_file(vm: vmctl.VM, tmp_path: Any) -> None:
    vm.write_file("/tmp/wf", b"data\x00", mode=0o600)
    assert vm.read_file("/tmp/wf") == b"data\x00"
    assert vm.exec(["stat", "-c", "%a", "/tmp/wf"], timeout=60).stdout == b"600\n"
    (tmp_path / "d").mkdir()
    assert vm.download("/tmp/wf", tmp_path / "d") == str(tmp_path / "d" / "wf")
    assert (tmp_path / "d" / "wf").read_bytes() == b"data\x00"


def test_async_create_destroys(client: vmctl.Client) -> None:
    async def main() -> None:
        ac = vmctl.AsyncClient(client=client)
        with pytest.raises(RuntimeError):
            async with vmctl.AsyncVM.create("actx", vcpus=1, memory_mib=128, client=ac,
                                            start=False) as v:
                assert (await v.status())["state"] == "created"
                raise RuntimeError("boom")
        with pytest.raises(vmctl.VMNotFoundError):
            await ac.get("actx")

    asyncio.run(main())


def test_exec_tty(vm: vmctl.VM) -> None:
    with vm.exec_stream(["sh", "-c", "tty; read x; stty size"], tty=True, rows=24, cols=80,
                        stdin_open=True, timeout=60) as s:
        assert next(s).kind == "started"
        s.resize(40, 120)
        s.write(b"go\n")
        r = s.result()
    assert r.exit_code == 0
    assert b"/dev/" in r.stdout and b"40 120" in r.stdout and r.stderr == b""


def test_create_whose_start_times_out_is_taken_away(client: vmctl.Client) -> None:
    with pytest.raises(vmctl.OperationTimeoutError) as ei:
        vmctl.VM.create("slow", vcpus=1, memory_mib=128, client=client, timeout=0.05)
    assert ei.value.status == 504 and ei.value.timeout_seconds is not None
    with pytest.raises(vmctl.VMNotFoundError):
        client.get("slow")
