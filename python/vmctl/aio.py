"""asyncio variants of :class:`~vmctl.Client` and :class:`~vmctl.VM`.

They run the synchronous SDK's calls in worker threads (``asyncio.to_thread``), so a slow call
never blocks the event loop and many run at once; streams (exec, events) are async iterators
whose every step is one such call. (Not a native asyncio HTTP client: the same code path as the
synchronous SDK, at the cost of a thread per call in flight.)
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Optional, Sequence, TypeVar, Union

from .client import (
    VM,
    Client,
    Event,
    EventStream,
    ExecEvent,
    ExecResult,
    ExecStream,
    Pool,
    Snapshot,
)

__all__ = ["AsyncClient", "AsyncVM", "AsyncExecStream", "AsyncEventStream", "AsyncSnapshot"]

T = TypeVar("T")
_END = object()


def _step(it: Iterator[T]) -> Any:
    try:
        return next(it)
    except StopIteration:
        return _END


async def _call(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    return await asyncio.to_thread(fn, *args, **kw)


class AsyncExecStream:
    """:class:`~vmctl.ExecStream` as an async iterator (``async for ev in stream``)."""

    def __init__(self, stream: ExecStream) -> None:
        self.sync = stream

    @property
    def id(self) -> Optional[str]:
        return self.sync.id

    @property
    def exit_code(self) -> Optional[int]:
        return self.sync.exit_code

    def __aiter__(self) -> "AsyncExecStream":
        return self

    async def __anext__(self) -> ExecEvent:
        ev = await _call(_step, self.sync)
        if ev is _END:
            raise StopAsyncIteration
        return ev

    async def write(self, data: bytes, eof: bool = False) -> None:
        """Feed the command's stdin (``stdin_open=True``)."""
        await _call(self.sync.write, data, eof)

    async def send_signal(self, sig: Union[int, str]) -> None:
        """Send the command a signal."""
        await _call(self.sync.send_signal, sig)

    async def kill(self) -> None:
        """SIGKILL the command's process group."""
        await _call(self.sync.kill)

    async def result(self) -> ExecResult:
        """The rest of the stream as an :class:`~vmctl.ExecResult`."""
        return await _call(self.sync.result)

    async def close(self) -> None:
        await _call(self.sync.close)

    async def __aenter__(self) -> "AsyncExecStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncEventStream:
    """:class:`~vmctl.EventStream` as an async iterator."""

    def __init__(self, stream: EventStream) -> None:
        self.sync = stream

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> Event:
        ev = await _call(_step, self.sync)
        if ev is _END:
            raise StopAsyncIteration
        return ev

    async def close(self) -> None:
        await _call(self.sync.close)

    async def __aenter__(self) -> "AsyncEventStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncSnapshot:
    """:class:`~vmctl.Snapshot`, async."""

    def __init__(self, snap: Snapshot, client: "AsyncClient") -> None:
        self.sync = snap
        self._client = client
        self.name = snap.name

    @property
    def info(self) -> dict[str, Any]:
        return self.sync.info

    @property
    def kind(self) -> Optional[str]:
        return self.sync.kind

    async def clone(self, count: int = 1, name: Optional[str] = None,
                    timeout: Optional[float] = None) -> list["AsyncVM"]:
        vms = await _call(self.sync.clone, count, name, timeout)
        return [AsyncVM(v, self._client) for v in vms]

    async def restore(self, timeout: Optional[float] = None) -> "AsyncVM":
        return AsyncVM(await _call(self.sync.restore, timeout), self._client)

    async def remove(self) -> None:
        await _call(self.sync.remove)

    async def set_pool(self, size: int) -> Optional[Pool]:
        return await _call(self.sync.set_pool, size)

    async def remove_pool(self) -> None:
        await _call(self.sync.remove_pool)


class AsyncVM:
    """:class:`~vmctl.VM`, async: ``async with await AsyncVM.create(...) as vm`` or
    ``async with AsyncVM.create(...) as vm`` (destroys the VM on exit)."""

    def __init__(self, vm: VM, client: "AsyncClient") -> None:
        self.sync = vm
        self.client = client
        self.name = vm.name

    @property
    def info(self) -> dict[str, Any]:
        return self.sync.info

    @classmethod
    def create(cls, name: str, vcpus: int = 2, memory_mib: int = 512, image: Optional[str] = None,
               *, client: Optional["AsyncClient"] = None, **kw: Any) -> "_Creating":
        """Create (and start, and wait for) a VM; awaitable, and an async context manager that
        destroys the VM on exit. Arguments as :meth:`vmctl.VM.create`."""
        return _Creating(cls, client or AsyncClient(), (name, vcpus, memory_mib, image), kw)

    async def start(self, wait: bool = True, timeout: Optional[float] = None) -> dict[str, Any]:
        return await _call(self.sync.start, wait, timeout)

    async def stop(self, force: bool = False, timeout: Optional[float] = None) -> dict[str, Any]:
        return await _call(self.sync.stop, force, timeout)

    async def kill(self) -> dict[str, Any]:
        return await _call(self.sync.kill)

    async def pause(self) -> dict[str, Any]:
        return await _call(self.sync.pause)

    async def resume(self) -> dict[str, Any]:
        return await _call(self.sync.resume)

    async def destroy(self, force: bool = True, missing_ok: bool = False) -> None:
        await _call(self.sync.destroy, force, missing_ok)

    async def status(self) -> dict[str, Any]:
        return await _call(self.sync.status)

    async def stats(self, guest: bool = True) -> dict[str, Any]:
        return await _call(self.sync.stats, guest)

    async def exec(self, argv: Union[str, Sequence[str]], timeout: Optional[float] = None,
                   env: Union[None, Mapping[str, str], Sequence[str]] = None,
                   cwd: Optional[str] = None, stdin: Union[None, bytes, str] = None,
                   **kw: Any) -> ExecResult:
        return await _call(self.sync.exec, argv, timeout, env, cwd, stdin, **kw)

    async def exec_stream(self, argv: Union[str, Sequence[str]], timeout: Optional[float] = None,
                          env: Union[None, Mapping[str, str], Sequence[str]] = None,
                          cwd: Optional[str] = None, stdin: Union[None, bytes, str] = None,
                          **kw: Any) -> AsyncExecStream:
        return AsyncExecStream(await _call(self.sync.exec_stream, argv, timeout, env, cwd,
                                           stdin, **kw))

    async def upload(self, local: str, remote: str) -> None:
        await _call(self.sync.upload, local, remote)

    async def download(self, remote: str, local: str) -> str:
        return await _call(self.sync.download, remote, local)

    async def snapshot(self, name: str, kind: Optional[str] = None,
                       keep_running: bool = False) -> AsyncSnapshot:
        return AsyncSnapshot(await _call(self.sync.snapshot, name, kind, keep_running), self.client)

    async def snapshots(self) -> list[AsyncSnapshot]:
        return [AsyncSnapshot(s, self.client) for s in await _call(self.sync.snapshots)]

    async def __aenter__(self) -> "AsyncVM":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.sync.destroy_on_exit:
            await _call(self.sync.destroy, True, True)


class _Creating:
    """What :meth:`AsyncVM.create` returns: await it, or ``async with`` it."""

    def __init__(self, cls: type[AsyncVM], client: "AsyncClient", args: tuple, kw: dict) -> None:
        self._cls, self._client, self._args, self._kw = cls, client, args, kw
        self._vm: Optional[AsyncVM] = None

    async def _make(self) -> AsyncVM:
        vm = await _call(VM.create, *self._args, client=self._client.sync, **self._kw)
        self._vm = self._cls(vm, self._client)
        return self._vm

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._make().__await__()

    async def __aenter__(self) -> AsyncVM:
        return await self._make()

    async def __aexit__(self, *exc: Any) -> None:
        if self._vm is not None:
            await self._vm.__aexit__(*exc)


class AsyncClient:
    """:class:`~vmctl.Client`, async; the same arguments."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.sync = kw.pop("client", None) or Client(*args, **kw)

    async def version(self) -> dict[str, Any]:
        return await _call(self.sync.version)

    async def list(self) -> list[AsyncVM]:
        return [AsyncVM(v, self) for v in await _call(self.sync.list)]

    async def get(self, name: str) -> AsyncVM:
        return AsyncVM(await _call(self.sync.get, name), self)

    def create(self, name: str, vcpus: int = 2, memory_mib: int = 512,
               image: Optional[str] = None, **kw: Any) -> _Creating:
        return AsyncVM.create(name, vcpus, memory_mib, image, client=self, **kw)

    async def images(self) -> list[dict[str, Any]]:
        return await _call(self.sync.images)

    async def pools(self) -> list[Pool]:
        return await _call(self.sync.pools)

    async def set_pool(self, vm: str, snapshot: str, size: int) -> Optional[Pool]:
        return await _call(self.sync.set_pool, vm, snapshot, size)

    async def stats(self, name: str, guest: bool = True) -> dict[str, Any]:
        return await _call(self.sync.stats, name, guest)

    async def events(self) -> AsyncEventStream:
        return AsyncEventStream(await _call(self.sync.events))

    async def stop_server(self) -> None:
        await _call(self.sync.stop_server)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop_server()
