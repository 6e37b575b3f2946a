"""HTTP/1.1 over a unix socket (or TCP) with http.client, and NDJSON stream parsing."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any, Iterator, Mapping, Optional, Union

from .errors import (
    APIError,
    ServerConnectionLostError,
    ServerUnavailableError,
    VmctlError,
    error_from_json,
)

__all__ = ["UnixHTTPConnection", "Transport", "Response", "parse_ndjson_line", "iter_ndjson"]

Body = Union[None, bytes, Any]


class UnixHTTPConnection(http.client.HTTPConnection):
    """An :class:`http.client.HTTPConnection` whose socket is ``AF_UNIX`` at ``path``."""

    def __init__(self, path: str, timeout: Optional[float] = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if self.timeout is not None:
                sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def parse_ndjson_line(line: Union[bytes, str]) -> Optional[dict[str, Any]]:
    """One line of an NDJSON stream as a dict; ``None`` for a blank line.

    Raises :class:`APIError` for a line that is not a JSON object.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise APIError(f"malformed stream line from the server: {line[:200]!r} ({e})") from None
    if not isinstance(obj, dict):
        raise APIError(f"stream line is not a JSON object: {line[:200]!r}")
    return obj


class Response:
    """An answer of the server: status, headers, and the body read as a whole or as a stream."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self.conn = conn
        self.raw = resp
        self.status: int = resp.status
        self.headers = resp.headers

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()

    def read(self) -> bytes:
        try:
            return self.raw.read()
        finally:
            self.close()

    def json(self) -> Any:
        data = self.read()
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError as e:
            raise APIError(f"malformed JSON from the server ({e})", status=self.status) from None

    def iter_lines(self) -> Iterator[dict[str, Any]]:
        """The NDJSON objects of a streamed body, each as soon as its line arrives."""
        try:
            while True:
                line = self.raw.readline()
                if not line:
                    return
                obj = parse_ndjson_line(line)
                if obj is not None:
                    yield obj
        finally:
            self.close()

    def iter_chunks(self, size: int = 1 << 16) -> Iterator[bytes]:
        try:
            while True:
                data = self.raw.read1(size) if hasattr(self.raw, "read1") else self.raw.read(size)
                if not data:
                    return
                yield data
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.raw.close()
        finally:
            self.conn.close()


def iter_ndjson(resp: Response) -> Iterator[dict[str, Any]]:
    """Shorthand for ``resp.iter_lines()``."""
    return resp.iter_lines()


class Transport:
    """Sends requests to one server: a unix socket path, or an ``http://HOST:PORT`` URL (then
    with ``Authorization: Bearer TOKEN`` when a token is given). One connection per request, so a
    Transport may be shared between threads."""

    def __init__(
        self,
        socket_path: Optional[str] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = 600.0,
    ) -> None:
        if (socket_path is None) == (url is None):
            raise ValueError("give exactly one of socket_path and url")
        self.socket_path = socket_path
        self.url = url
        self.token = token
        self.timeout = timeout
        self._host = self._port = None
        self._prefix = ""
        if url is not None:
            u = urllib.parse.urlsplit(url)
            if u.scheme != "http" or not u.hostname:
                raise ValueError(f"url must be http://HOST:PORT, not {url!r}")
            self._host, self._port = u.hostname, u.port or 80
            self._prefix = u.path.rstrip("/")

    @property
    def where(self) -> str:
        return self.socket_path if self.socket_path is not None else str(self.url)

    def connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return UnixHTTPConnection(self.socket_path, timeout=timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Body = None,
        *,
        query: Optional[Mapping[str, Any]] = None,
        headers: Optional[Mapping[str, str]] = None,
        raw: bool = False,
        stream: bool = False,
        timeout: Optional[float] = -1.0,
    ) -> Response:
        """Send a request; return the :class:`Response` of a 2xx answer, raise the error of any
        other. ``body`` is JSON-encoded unless ``raw`` (then bytes or a readable file).
        ``stream``: no read timeout (exec, events, downloads)."""
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                path += "?" + urllib.parse.urlencode(q)
        hdrs = {"Accept": "application/json"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data: Any = None
        if body is not None and not raw:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif body is not None:
            data = body
        if headers:
            hdrs.update(headers)
        if timeout == -1.0:
            timeout = None if stream else self.timeout
        conn = self.connection(timeout)
        try:
            conn.connect()
        except OSError as e:
            conn.close()
            raise ServerUnavailableError(
                f"no vmctl server answers at '{self.where}'", None, {"where": self.where},
                "Start one with `vmctl serve`, or let the Client start it (autostart=True)",
                cause=e.strerror or str(e)) from e
        try:
            conn.request(method, self._prefix + path, body=data, headers=hdrs)
            resp = conn.getresponse()
        except socket.timeout as e:
            conn.close()
            raise VmctlError(f"the server at '{self.where}' did not answer {method} {path} in time",
                             None, {"where": self.where}) from e
        except (OSError, http.client.HTTPException) as e:
            # the request may have been acted on: never retried
            conn.close()
            raise ServerConnectionLostError(
                f"the connection to the vmctl server at '{self.where}' broke during {method} "
                f"{path}", None, {"where": self.where},
                "The server may have crashed: look at its log (stderr, or $VMCTL_HOME/serve.log)",
                cause=str(e) or type(e).__name__) from e
        r = Response(conn, resp)
        if 200 <= r.status < 300:
            return r
        try:
            payload = r.read()
            obj: Any = json.loads(payload) if payload else None
        except ValueError:
            obj = payload.decode("utf-8", "replace")
        raise error_from_json(obj, r.status)
