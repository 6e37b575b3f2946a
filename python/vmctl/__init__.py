"""vmctl: drive vm-manager VMs from Python through ``vmctl serve`` (stdlib only).

>>> from vmctl import VM
>>> with VM.create("job", vcpus=2, memory_mib=512) as vm:
...     print(vm.exec(["echo", "hi"]).stdout)
"""

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
    default_home,
)
from .errors import *  # noqa: F401,F403
from .errors import TimeoutError, __all__ as _errors_all  # noqa: A004
from .aio import AsyncClient, AsyncExecStream, AsyncSnapshot, AsyncVM

__version__ = "0.1.0"

__all__ = [
    "VM",
    "Client",
    "Event",
    "EventStream",
    "ExecEvent",
    "ExecResult",
    "ExecStream",
    "Snapshot",
    "Pool",
    "AsyncClient",
    "AsyncVM",
    "AsyncSnapshot",
    "AsyncExecStream",
    "default_home",
    *_errors_all,
]
