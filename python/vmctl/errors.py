"""The SDK's exceptions: one class per family of vmctl error codes.

Every error the server returns is the library's error object (docs/errors.md); the SDK raises it
as a :class:`VmctlError` subclass chosen from its ``code`` (see :data:`CODE_CLASSES` and
:data:`FAMILY_CLASSES`). The names follow the SDK reference the project was asked to match.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = [
    "VmctlError",
    "VMAlreadyExistsError",
    "VMNotFoundError",
    "InvalidStateError",
    "ValidationError",
    "NetworkError",
    "NetworkConfigError",
    "HostError",
    "ImageError",
    "SnapshotError",
    "StoreError",
    "AgentError",
    "ProvisionError",
    "APIError",
    "AuthenticationError",
    "NotSupportedError",
    "OperationTimeoutError",
    "CommandExecutionUnavailableError",
    "InternalError",
    "ServerUnavailableError",
    "ServerConnectionLostError",
    "error_from_json",
    "class_for_code",
]


class VmctlError(Exception):
    """Base class of every SDK error.

    Attributes:
        message: what went wrong (lower case, as the library says it).
        code: the stable error code, ``vm_manager::<area>::<kind>``; ``None`` for an error of the
            SDK itself (no server answered, a malformed answer).
        details: structured context (``vm``, ``operation``, ``timeout_seconds``, ``field``, ...).
        help: what to do about it (a sentence naming a command).
        status: the HTTP status the server answered with, when there was one.
        notes: supporting texts (QEMU's stderr tail, the agent's message, ...).
        context: what the server was doing, outermost first.
        errno_name: the system error behind it (``EACCES``), when there is one.
    """

    def __init__(
        self,
        message: str,
        code: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        help: Optional[str] = None,
        status: Optional[int] = None,
        *,
        notes: Optional[list[str]] = None,
        context: Optional[list[str]] = None,
        errno_name: Optional[str] = None,
        cause: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: Optional[str] = code
        self.details: dict[str, Any] = dict(details or {})
        self.help: Optional[str] = help
        self.status: Optional[int] = status
        self.notes: list[str] = list(notes or [])
        self.context: list[str] = list(context or [])
        self.errno_name: Optional[str] = errno_name
        self.cause: Optional[str] = cause

    def __str__(self) -> str:
        text = self.message
        if self.context:
            text += " (" + "; ".join(self.context) + ")"
        if self.cause and (self.code in (None, "vm_manager::io")
                           or self.errno_name not in _QUIET_ERRNOS):
            text += ": " + self.cause
        if self.code:
            text = f"{self.code}: {text}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, status={self.status!r})"


# errnos that tell nothing beyond the message (a lookup, a name taken, a placeholder), left out of
# str() as the CLI leaves them out of its text (docs/errors.md); still in .cause and .errno_name
_QUIET_ERRNOS = {"EINVAL", "EBADMSG", "EIO", "ENOENT", "EEXIST", "ETIMEDOUT", "ENOSYS", None}


class VMAlreadyExistsError(VmctlError):
    """A VM of that name is already in the store (``vm::already_exists``).

    Attributes: ``vm_id`` (and ``vm``): the conflicting name.
    """

    @property
    def vm_id(self) -> Optional[str]:
        return self.details.get("vm")

    vm = vm_id


class VMNotFoundError(VmctlError):
    """No VM of that name in the store (``vm::not_found``).

    Attributes: ``vm_id`` (and ``vm``): the name that was not found.
    """

    @property
    def vm_id(self) -> Optional[str]:
        return self.details.get("vm")

    vm = vm_id


class InvalidStateError(VmctlError):
    """The operation does not fit the VM's state (``vm::invalid_state``, HTTP 409).

    Attributes: ``vm``, ``from_state`` (the state it is in), ``to_state`` (the one asked for).
    """

    @property
    def vm(self) -> Optional[str]:
        return self.details.get("vm")

    @property
    def from_state(self) -> Optional[str]:
        return self.details.get("from")

    @property
    def to_state(self) -> Optional[str]:
        return self.details.get("to")


class ValidationError(VmctlError):
    """Input validation failed: a bad name, size, path, option or request body.

    Attributes: ``field``, ``value``, ``allowed`` (from the details, when the server names them).
    """

    @property
    def field(self) -> Optional[str]:
        return self.details.get("field")

    @property
    def value(self) -> Any:
        return self.details.get("value")

    @property
    def allowed(self) -> Any:
        return self.details.get("allowed")


class NetworkError(VmctlError):
    """Host networking failed: TAP, bridge, firewall, port forwards, address discovery."""


class NetworkConfigError(NetworkError, ValidationError):
    """A network option was malformed (``network::config_invalid``): both a network and a
    validation error."""


class HostError(VmctlError):
    """The host cannot do it: KVM missing, a tool or package missing, the hypervisor failed to
    start, a host I/O error."""


class ImageError(VmctlError):
    """An image operation failed: not found, name taken, in use, unsafe, download, checksum.

    Attributes: ``image``: the image's name, when the server names it.
    """

    @property
    def image(self) -> Optional[str]:
        return self.details.get("image")


class SnapshotError(VmctlError):
    """A snapshot operation failed (``snapshot::*``)."""


class StoreError(VmctlError):
    """The store is busy beyond its lock timeout (retry) or damaged (``store::*``)."""


class AgentError(VmctlError):
    """The guest agent (or SSH) failed, or a copy out of the guest left entries out."""


class ProvisionError(VmctlError):
    """A provisioner step or the cloud-init seed failed."""


class APIError(VmctlError):
    """The server refused the request itself (``api::*``), or the hypervisor's API refused a
    command (``qemu::qmp_*``).

    Attributes: ``status_code``: the HTTP status of the answer.
    """

    @property
    def status_code(self) -> Optional[int]:
        return self.status


class AuthenticationError(APIError):
    """TCP request without the right bearer token (``api::unauthorized``, HTTP 401)."""


class NotSupportedError(APIError):
    """The server does not implement this (``api::not_implemented``, HTTP 501): for example
    snapshots and clones on a server whose library has none."""


class OperationTimeoutError(VmctlError):
    """An operation exceeded its deadline (``timeout``, ``network::ip_discovery_timeout``).

    Attributes: ``operation`` (what timed out), ``timeout_seconds`` (also ``timeout``).
    """

    @property
    def operation(self) -> Optional[str]:
        return self.details.get("operation")

    @property
    def timeout_seconds(self) -> Optional[float]:
        value = self.details.get("timeout_seconds")
        return float(value) if isinstance(value, (int, float)) else None

    timeout = timeout_seconds


class CommandExecutionUnavailableError(VmctlError):
    """Commands cannot run in this VM now (``exec::unavailable``): it is not running, or its
    guest agent does not answer.

    Attributes: ``vm_id`` (and ``vm``), ``reason``, ``remediation`` (a suggested fix, or None).
    """

    @property
    def vm_id(self) -> Optional[str]:
        return self.details.get("vm")

    vm = vm_id

    @property
    def reason(self) -> Optional[str]:
        return self.details.get("reason")

    @property
    def remediation(self) -> Optional[str]:
        return self.details.get("remediation")


class InternalError(VmctlError):
    """A bug in vmctl (``internal``, ``invalid_argument``)."""


class ServerUnavailableError(VmctlError):
    """No vmctl server answered and none could be started (an SDK error: ``code`` is None)."""


class ServerConnectionLostError(VmctlError):
    """The connection to the server broke in the middle of a request (the server may have acted
    on it: the SDK never retries such a request). An SDK error: ``code`` is None."""


#: Backward-compatible alias of the SDK reference (not exported by ``from vmctl import *``: it
#: would shadow the builtin).
TimeoutError = OperationTimeoutError  # noqa: A001

#: Exact codes (without the ``vm_manager::`` prefix) and their classes.
CODE_CLASSES: dict[str, type[VmctlError]] = {
    "vm::already_exists": VMAlreadyExistsError,
    "vm::not_found": VMNotFoundError,
    "vm::invalid_state": InvalidStateError,
    "vm::shutdown_failed": HostError,
    "config::invalid": ValidationError,
    "cli::usage": ValidationError,
    "invalid_argument": ValidationError,
    "api::bad_request": ValidationError,
    "api::too_large": ValidationError,
    "api::unauthorized": AuthenticationError,
    "api::not_implemented": NotSupportedError,
    "network::config_invalid": NetworkConfigError,
    "network::ip_discovery_timeout": OperationTimeoutError,
    "timeout": OperationTimeoutError,
    "exec::unavailable": CommandExecutionUnavailableError,
    "qemu::spawn_failed": HostError,
    "backend::not_available": HostError,
    "jailer::failed": HostError,
    "io": HostError,
    "internal": InternalError,
    "cloudinit::iso_failed": ProvisionError,
    "cp::unsafe_entry": AgentError,
}

#: Code families (the ``<area>`` of ``vm_manager::<area>::<kind>``) and their classes, for
#: codes not in :data:`CODE_CLASSES` (a code added later still lands in its family).
FAMILY_CLASSES: dict[str, type[VmctlError]] = {
    "vm": VmctlError,
    "config": ValidationError,
    "vmfile": ValidationError,
    "network": NetworkError,
    "host": HostError,
    "backend": HostError,
    "jailer": HostError,
    "image": ImageError,
    "snapshot": SnapshotError,
    "store": StoreError,
    "agent": AgentError,
    "ssh": AgentError,
    "cp": AgentError,
    "exec": CommandExecutionUnavailableError,
    "provision": ProvisionError,
    "cloudinit": ProvisionError,
    "api": APIError,
    "qemu": APIError,
    "propolis": APIError,
    "metrics": HostError,
}

_PREFIX = "vm_manager::"


def class_for_code(code: Optional[str], status: Optional[int] = None) -> type[VmctlError]:
    """The exception class for an error ``code`` (``vm_manager::vm::not_found``)."""
    if not code:
        return APIError if status is not None else VmctlError
    short = code[len(_PREFIX):] if code.startswith(_PREFIX) else code
    cls = CODE_CLASSES.get(short)
    if cls is not None:
        return cls
    family = short.split("::", 1)[0]
    if family in FAMILY_CLASSES:
        return FAMILY_CLASSES[family]
    if status == 504:
        return OperationTimeoutError
    return VmctlError


def error_from_json(obj: Any, status: Optional[int] = None) -> VmctlError:
    """Build the exception for an error object: ``{"error": {...}}`` or the inner object.

    Anything that is not an error object gives a :class:`APIError` naming the status.
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("error"), Mapping):
        obj = obj["error"]
    if not isinstance(obj, Mapping) or not isinstance(obj.get("code"), str):
        text = f"the server answered {status}" if status is not None else "malformed error object"
        if obj not in (None, "", b""):
            text += f": {str(obj)[:200]}"
        return APIError(text, None, {}, None, status)
    code = obj["code"]
    details = obj.get("details")
    if not isinstance(details, Mapping):
        details = {}
    cls = class_for_code(code, status)
    message = str(obj.get("message") or code)
    if cls is NotSupportedError and "not supported by this server" not in message:
        message = f"not supported by this server: {message}"
    return cls(
        message,
        code,
        details,
        obj.get("help"),
        status,
        notes=[str(n) for n in obj.get("notes") or []],
        context=[str(c) for c in obj.get("context") or []],
        errno_name=obj.get("errno_name"),
        cause=obj.get("cause"),
    )

