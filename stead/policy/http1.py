"""The wire under ``OpaClient``: a small asyncio keep-alive pool that speaks HTTP/1.1 via h11.

Why not httpx or aiohttp: a policy decision is one small POST to a loopback OPA on
every step, so the client's own per-request cost is most of the round trip.
``bench/opa_latency.py`` measured ``decide_step`` through the same ``OpaClient`` on
each wire, five same-run comparisons, OPAs started alike (GOGC=400), load 6-9: p50
httpx 0.94-1.00 ms, aiohttp 0.44-0.49, this pool 0.44-0.48 (a hand-written parser
0.35-0.40); p99 was set by the machine's load, not the wire. httpx pays for its
request and response models, header normalisation, the pool's locks and an ``anyio``
stream per read. A hand-written parser was ~0.08 ms faster at p50 but is HTTP code we
would have to keep correct ourselves; the goal is the p99, where it made no difference,
so the parsing is h11's.

HTTP/1.1 itself is h11's (the sans-IO state machine httpx is built on): response
framing by ``Content-Length``, chunked coding or the connection closing, 1xx interim
responses, ``Connection: close`` and HTTP/1.0, and rejecting what is not HTTP. This
module owns only sockets, the pool and the one-exchange-at-a-time rule.

Scope is what OPA's REST API needs: POST with a body, ``http://`` and ``https://``.
No pipelining: a connection carries one exchange at a time and returns to the idle
pool only after its response was read in full, with nothing after it, and the server
did not ask to close, so a late or partial answer is never read as the answer to the
next question. Any failure, timeout or cancellation closes the connection. No
retries: a request that fails raises, and the caller (Temporal) decides.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import h11

MAX_HEAD_BYTES: Final = 64 * 1024
MAX_BODY_BYTES: Final = 64 * 1024 * 1024


class ConnectFailed(Exception):
    """No connection could be opened (refused, unreachable, name not resolved, TLS)."""


class ConnectionDropped(Exception):
    """The connection broke, or the server broke HTTP, before a whole response arrived."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one exchange in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._waiter: asyncio.Future[Response] | None = None
        self._status = 0
        self._body = bytearray()
        self.closed = False
        self.idle_since = 0.0
        self._lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self._fail(ConnectionDropped("the server sent data nobody asked for"))
            return
        self._http.receive_data(data)
        self._read()

    def eof_received(self) -> bool:
        if self._waiter is not None:
            self._http.receive_data(b"")
            self._read()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._lost.done():
            self._lost.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            why = f"{type(exc).__name__}: {exc}" if exc else "the server closed the connection"
            self._waiter.set_exception(ConnectionDropped(why))

    async def exchange(self, request: h11.Request, body: bytes) -> Response:
        assert self._transport is not None and self._waiter is None
        self._status, self._body = 0, bytearray()
        self._waiter = asyncio.get_running_loop().create_future()
        events = (request, h11.Data(body), h11.EndOfMessage())
        self._transport.write(b"".join(self._http.send(e) or b"" for e in events))
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

    def _read(self) -> None:
        try:
            while (event := self._http.next_event()) is not h11.NEED_DATA:
                if isinstance(event, h11.Response):
                    self._status = event.status_code
                elif isinstance(event, h11.Data):
                    if len(self._body) + len(event.data) > MAX_BODY_BYTES:
                        raise h11.RemoteProtocolError(f"body over {MAX_BODY_BYTES} bytes")
                    self._body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self._finish()
                    return
                # else an interim 1xx response (InformationalResponse): the real one follows
        except h11.RemoteProtocolError as exc:
            if self._http.trailing_data[1]:  # the server closed before the response ended
                self._fail(ConnectionDropped("the connection closed in the middle of the response"))
            else:
                self._fail(ConnectionDropped(f"the server broke HTTP/1.1: {exc}"))

    def _finish(self) -> None:
        http = self._http
        leftover = bool(http.trailing_data[0])  # bytes beyond the response: don't trust it
        keep_alive = http.our_state is h11.DONE and http.their_state is h11.DONE and not leftover
        if keep_alive:
            http.start_next_cycle()
        else:
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(Response(self._status, bytes(self._body), keep_alive))

    def _fail(self, exc: Exception) -> None:
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
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s):// URL, got {url!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/").encode("ascii")
        host = f"[{self._host}]" if ":" in self._host else self._host
        default_port = self._port == (443 if self._ssl else 80)
        self._host_header = (host if default_port else f"{host}:{self._port}").encode("ascii")
        # Built once (the Authorization header, say): every request sends the same ones.
        self._headers = [
            (b"Host", self._host_header),
            (b"User-Agent", b"stead"),
            (b"Accept", b"application/json"),
            *headers,
        ]
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry
        self._closed = False

    async def post(self, path: str, body: bytes, content_type: bytes) -> Response:
        """POST ``body`` to ``path`` (below the URL's own path); the whole response, read."""
        request = h11.Request(
            method=b"POST",
            target=self._prefix + path.encode("ascii"),
            headers=[
                *self._headers,
                (b"Content-Type", content_type),
                (b"Content-Length", b"%d" % len(body)),
            ],
        )
        async with self._slots:
            connection = self._checkout() or await self._connect()
            try:
                response = await connection.exchange(request, body)
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
