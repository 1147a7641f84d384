"""A minimal HTTP/1.1 keep-alive client: the wire under ``OpaClient``.

Why not httpx (or aiohttp) here: a policy decision is one small POST to a loopback OPA
on every step, so the client's own per-request cost is most of the round trip.
``bench/opa_latency.py`` measured ``decide_step`` through the same ``OpaClient`` on
each wire, OPAs started alike (GOGC=400), five same-run comparisons: httpx p50
0.94-1.00 ms, aiohttp 0.44-0.49, this module 0.35-0.40 (OPA's own handler: ~0.3 of
it). The saving is httpx's layers (request and response models, header
normalisation, the pool's locks, an ``anyio`` stream per read) and aiohttp's (its
connector and stream reader); here a response wakes the waiting task once, from
``data_received``.

Why not h11 (the sans-IO HTTP/1.1 state machine httpx is built on) behind this same
pool: tried, and it cost p50 0.44-0.48 ms against this parser's 0.35-0.40 in five
same-run comparisons (aiohttp 0.44-0.49), about 0.1 ms of pure-Python state machine
per exchange; p99 was no different. So the parser stays, small and pinned by
tests/test_opa_client.py (framings, 1xx, bytes after a response, broken responses).

Scope is exactly what OPA's REST API needs, and no more: POST with a body; a response
framed by ``Content-Length``, chunked transfer coding, or the connection closing;
``http://`` and ``https://``. No pipelining: a connection carries one exchange at a
time and returns to the idle pool only after its response was read in full and the
server did not ask to close, so a late or partial answer is never read as the answer
to the next question. Any failure, timeout or cancellation closes the connection.
No retries: a request that fails raises, and the caller (Temporal) decides.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
_NO_BODY_STATUS: Final = frozenset({204, 304})


class ConnectFailed(Exception):
    """No connection could be opened (refused, unreachable, name not resolved, TLS)."""


class ConnectionDropped(Exception):
    """The connection broke, or the server broke HTTP, before a whole response arrived."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


class _Malformed(Exception):
    pass


class ResponseParser:
    """Incremental parser for one HTTP/1.1 response; ``feed`` returns it once complete."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "head"
        self._status = 0
        self._keep_alive = True
        self._remaining = 0  # body bytes left (length framing) or in the current chunk
        self._body = bytearray()
        self.leftover = False  # bytes beyond the response: the connection can't be trusted

    def feed(self, data: bytes) -> Response | None:
        self._buf += data
        while True:
            if self._state == "head":
                if not self._parse_head():
                    return None
            elif self._state == "length":
                take = min(self._remaining, len(self._buf))
                self._append(self._buf[:take])
                del self._buf[:take]
                self._remaining -= take
                if self._remaining:
                    return None
                return self._done()
            elif self._state == "chunk-size":
                end = self._buf.find(b"\r\n")
                if end < 0:
                    if len(self._buf) > 1024:
                        raise _Malformed("chunk size line too long")
                    return None
                size_text = bytes(self._buf[:end]).split(b";", 1)[0].strip()
                del self._buf[: end + 2]
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise _Malformed(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise _Malformed("negative chunk size")
                self._state, self._remaining = ("trailer", 0) if size == 0 else ("chunk", size)
            elif self._state == "chunk":
                if len(self._buf) < self._remaining + 2:
                    return None
                if self._buf[self._remaining : self._remaining + 2] != b"\r\n":
                    raise _Malformed("chunk not followed by CRLF")
                self._append(self._buf[: self._remaining])
                del self._buf[: self._remaining + 2]
                self._state = "chunk-size"
            elif self._state == "trailer":
                if self._buf.startswith(b"\r\n"):
                    del self._buf[:2]
                    return self._done()
                end = self._buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buf) > MAX_HEAD_BYTES:
                        raise _Malformed("trailer too long")
                    return None
                del self._buf[: end + 4]
                return self._done()
            else:  # "close": the body runs until the server closes the connection
                self._append(self._buf)
                self._buf.clear()
                return None

    def feed_eof(self) -> Response:
        """The server closed the connection: a complete response only if framed by close."""
        if self._state != "close":
            raise _Malformed("the connection closed in the middle of the response")
        return self._done()

    @property
    def started(self) -> bool:
        return self._state != "head" or bool(self._buf)

    def _parse_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise _Malformed("response head too long")
            return False
        lines = bytes(self._buf[:end]).split(b"\r\n")
        del self._buf[: end + 4]
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _Malformed(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            return True  # an interim response (100 Continue); the real one follows
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise _Malformed(f"bad header line {line[:40]!r}")
            key = name.strip().lower()
            value = value.strip()
            framing = key in (b"content-length", b"transfer-encoding")
            if framing and key in headers and headers[key] != value:
                raise _Malformed(f"conflicting {key.decode()} headers")
            headers[key] = value
        tokens = {t.strip() for t in headers.get(b"connection", b"").lower().split(b",")}
        if parts[0] == b"HTTP/1.0":
            self._keep_alive = b"keep-alive" in tokens
        else:
            self._keep_alive = b"close" not in tokens
        self._status = status
        if status in _NO_BODY_STATUS:
            self._state, self._remaining = "length", 0
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            self._state = "chunk-size"
        elif b"content-length" in headers:
            length = headers[b"content-length"]
            if not length.isdigit():
                raise _Malformed(f"bad Content-Length {length[:20]!r}")
            self._remaining = int(length)
            if self._remaining > MAX_BODY_BYTES:
                raise _Malformed(f"body of {self._remaining} bytes is over the limit")
            self._state = "length"
        else:
            self._state, self._keep_alive = "close", False
        return True

    def _append(self, data: bytes | bytearray) -> None:
        if len(self._body) + len(data) > MAX_BODY_BYTES:
            raise _Malformed(f"body over the {MAX_BODY_BYTES}-byte limit")
        self._body += data

    def _done(self) -> Response:
        self.leftover = bool(self._buf)
        return Response(self._status, bytes(self._body), self._keep_alive and not self.leftover)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            self._fail(ConnectionDropped("the server sent data nobody asked for"))
            return
        try:
            response = self._parser.feed(data)
        except _Malformed as exc:
            self._fail(ConnectionDropped(f"the server broke HTTP/1.1: {exc}"))
            return
        if response is not None:
            self._finish(response)

    def eof_received(self) -> bool:
        if self._parser is not None:
            try:
                response = self._parser.feed_eof()
            except _Malformed as exc:
                self._fail(ConnectionDropped(str(exc)))
            else:
                self._finish(response)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._lost.done():
            self._lost.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            why = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            self._waiter.set_exception(ConnectionDropped(why))

    async def exchange(self, request: bytes) -> Response:
        assert self._transport is not None and self._parser is None
        self._parser = ResponseParser()
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            # abort, not close: nothing we still want to send, and no lingering FIN_WAIT.
            self._transport.abort()

    async def wait_closed(self) -> None:
        await self._lost

    def _finish(self, response: Response) -> None:
        self._parser = None
        if not response.keep_alive:
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        self._parser = None
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()


class Http1Pool:
    """Keep-alive connections to one origin; ``post`` is one request on one connection.

    Idle connections are reused newest first and dropped after ``idle_expiry`` seconds
    (shorter than the usual proxy idle timeouts, so a pooled connection is rarely one
    the other side has already given up on). ``max_connections`` bounds concurrency:
    callers beyond it wait for a free connection, inside their own deadline.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 64,
        max_idle: int = 16,
        idle_expiry: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s):// URL, got {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = self._port == (443 if self._ssl else 80)
        self._host_header = (host if default_port else f"{host}:{self._port}").encode("ascii")
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry
        self._closed = False

    async def post(self, path: str, body: bytes, content_type: bytes) -> Response:
        """POST ``body`` to ``path`` (below the URL's own path); the whole response, read."""
        request = b"".join((
            b"POST ", self._prefix.encode("ascii"), path.encode("ascii"), b" HTTP/1.1\r\n",
            b"Host: ", self._host_header, b"\r\nUser-Agent: stead\r\nAccept: application/json",
            b"\r\nContent-Type: ", content_type,
            b"\r\nContent-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body,
        ))  # fmt: skip
        async with self._slots:
            connection = self._checkout() or await self._connect()
            try:
                response = await connection.exchange(request)
            except BaseException:
                # Timed out, cancelled or broken: a reply may still be on its way, so
                # this connection can never carry another question.
                connection.close()
                raise
            self._checkin(connection)
            return response

    async def aclose(self) -> None:
        """Close the idle connections and wait until their sockets are gone."""
        self._closed = True
        closing, self._idle = self._idle, []
        for connection in closing:
            connection.close()
        for connection in closing:
            await connection.wait_closed()

    def _checkout(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._idle_expiry:
                return connection
            connection.close()
        return None

    def _checkin(self, connection: _Connection) -> None:
        if connection.closed or self._closed or len(self._idle) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection,
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise ConnectFailed(str(exc) or type(exc).__name__) from None
        return connection
