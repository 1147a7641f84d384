"""``stead codec-server``: Temporal's remote codec protocol, for authorised operators only.

The Temporal UI and CLI (``temporal workflow show --codec-endpoint … --codec-auth …``)
send ``POST /decode`` (or ``/encode``) with ``{"payloads": [...]}`` in proto3 JSON
(every bytes field base64) and an ``X-Namespace`` header, and show what comes back.
Whoever can call ``/decode`` can read every encrypted history, so every call must pass
the ``CodecAuthorizer`` first: missing credentials get 401, wrong ones 403. The bundled
authorizer accepts bearer tokens from settings; one that checks Stead's signed
principal tokens (or the UI's OIDC access token, forwarded with the UI's
"pass access token" option) implements the same protocol.

Browsers call from the UI's origin, so CORS answers only the configured origins and
allows credentials; a preflight never needs a token (browsers send none with it).

The dev stack's UI has no login of its own and so no token to forward. For it, an
operator opens ``/login`` on the codec server (under the same host name as the UI),
enters the token once, and gets an ``HttpOnly``, ``SameSite=Strict`` session cookie
holding an expiry and an HMAC of it under the token (never the token itself); with the
UI's codec setting "Include cross-origin credentials" on, the UI's calls carry it.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Literal, Protocol, runtime_checkable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from stead.codec.errors import CodecError

log = logging.getLogger("stead.codec.server")

MAX_BODY_BYTES = 16 * 1024 * 1024  # a few payloads of Temporal's 2 MB default blob limit
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
Operation = Literal["encode", "decode"]
SESSION_COOKIE = "stead_codec_session"
SESSION_SECONDS = 8 * 3600


class NotAuthenticated(Exception):
    """No usable credentials: answered 401."""


class NotAllowed(Exception):
    """Credentials present but not accepted: answered 403."""


class CodecAuthorizer(Protocol):
    """Decides who may use the codec server."""

    def authorize(self, request: web.Request, operation: Operation) -> str:
        """A label for the caller (logged); raise ``NotAuthenticated`` or ``NotAllowed``."""
        ...


@runtime_checkable
class SessionIssuer(Protocol):
    """An authorizer that can trade a token for a browser session cookie (``/login``)."""

    def issue_session(self, token: str) -> str | None:
        """The cookie value for a valid ``token``, else None."""
        ...


class BearerTokenAuthorizer:
    """Accepts ``Authorization: Bearer <token>``, or a session cookie ``/login`` issued."""

    def __init__(self, tokens: Sequence[SecretStr]) -> None:
        if not tokens:
            raise ValueError("a bearer-token authorizer needs at least one token")
        self._tokens = tuple(t.get_secret_value().encode() for t in tokens)

    def __repr__(self) -> str:
        return f"BearerTokenAuthorizer({len(self._tokens)} tokens)"

    def authorize(self, request: web.Request, operation: Operation) -> str:
        header = request.headers.get("Authorization", "")
        if not header and SESSION_COOKIE in request.cookies:
            return self._session(request.cookies[SESSION_COOKIE])
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise NotAuthenticated(
                "send `Authorization: Bearer <token>` (temporal CLI: --codec-auth "
                "'Bearer <token>'), or sign in at /login for the Temporal UI"
            )
        index = self._match(value.strip())
        if index is None:
            raise NotAllowed("this bearer token may not use the codec server")
        return f"bearer token #{index + 1}"

    def issue_session(self, token: str) -> str | None:
        index = self._match(token.strip())
        if index is None:
            return None
        expires = int(time.time()) + SESSION_SECONDS
        return f"{expires}.{self._sign(self._tokens[index], expires)}"

    def _match(self, presented: str) -> int | None:
        # Compare against every token so the time taken does not say which one matched.
        matches = [hmac.compare_digest(presented.encode(), token) for token in self._tokens]
        return matches.index(True) if any(matches) else None

    def _session(self, cookie: str) -> str:
        expires_text, _, signature = cookie.partition(".")
        if not expires_text.isdigit() or int(expires_text) < time.time():
            raise NotAuthenticated("the codec session expired; sign in again at /login")
        expected = [self._sign(token, int(expires_text)) for token in self._tokens]
        matches = [hmac.compare_digest(signature, candidate) for candidate in expected]
        if not any(matches):
            raise NotAllowed("this codec session was not issued for a current token")
        return f"browser session of token #{matches.index(True) + 1}"

    @staticmethod
    def _sign(token: bytes, expires: int) -> str:
        message = f"stead-codec-session:{expires}".encode()
        return hmac.new(token, message, hashlib.sha256).hexdigest()


def codec_app(
    codec: PayloadCodec, authorizer: CodecAuthorizer, origins: Iterable[str] = ()
) -> web.Application:
    """The application: ``POST /encode`` and ``/decode``, their CORS preflights, ``/health``."""
    allowed = frozenset(o.rstrip("/") for o in origins)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_cors(allowed)])
    endpoint = _Endpoint(codec, authorizer)
    for operation in ("encode", "decode"):
        app.router.add_post(f"/{operation}", endpoint.handler(operation))
        app.router.add_route("OPTIONS", f"/{operation}", _preflight(allowed))
    app.router.add_get("/health", _health)
    if isinstance(authorizer, SessionIssuer):
        app.router.add_get("/login", _login_form)
        app.router.add_post("/login", _login(authorizer))
    return app


@asynccontextmanager
async def serve_codec(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields the base URL (port 0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()


class _Endpoint:
    def __init__(self, codec: PayloadCodec, authorizer: CodecAuthorizer) -> None:
        self._codec = codec
        self._authorizer = authorizer

    def handler(self, operation: Operation) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._transform(request, operation)

        return handle

    async def _transform(self, request: web.Request, operation: Operation) -> web.StreamResponse:
        try:
            caller = self._authorizer.authorize(request, operation)
        except NotAuthenticated as exc:
            return _error(401, str(exc), {"WWW-Authenticate": 'Bearer realm="stead-codec"'})
        except NotAllowed as exc:
            return _error(403, str(exc))
        try:
            payloads = json_format.Parse(await request.read(), Payloads())
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            return _error(400, f'expected {{"payloads": [...]}} in proto3 JSON: {exc}')
        try:
            if operation == "decode":
                result = await self._codec.decode(payloads.payloads)
            else:
                result = await self._codec.encode(payloads.payloads)
        except CodecError as exc:
            return _error(422, exc.message)
        log.info(
            "%s %d payload(s) for %s, namespace %s",
            operation,
            len(payloads.payloads),
            caller,
            request.headers.get("X-Namespace", "(none)"),
        )
        body = json_format.MessageToJson(Payloads(payloads=result))
        return web.Response(text=body, content_type="application/json")


def _cors(allowed: frozenset[str]) -> Middleware:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        origin = request.headers.get("Origin")
        if origin in allowed:
            # Echo the one origin (never "*"): credentials are only allowed that way.
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers.add("Vary", "Origin")
        return response

    return cors


def _preflight(allowed: frozenset[str]) -> Handler:
    async def preflight(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin") not in allowed:
            return _error(403, "this origin may not call the codec server; see --cors-origin")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    return preflight


_LOGIN_FORM = """<!doctype html><title>Stead codec server</title>
<h1>Stead codec server</h1><p>{message}</p>
<form method="post" action="/login"><label>Codec token
<input type="password" name="token" autocomplete="off" autofocus></label>
<button type="submit">Sign in</button></form>
<p>Then, in the Temporal UI's codec server settings, turn on
"Include cross-origin credentials". Open this page under the same host name as the UI.</p>"""


async def _login_form(request: web.Request) -> web.StreamResponse:
    return web.Response(
        text=_LOGIN_FORM.format(message="Sign in to decode payloads in the UI."),
        content_type="text/html",
    )


def _login(issuer: SessionIssuer) -> Handler:
    async def login(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        token = form.get("token")
        cookie = issuer.issue_session(token) if isinstance(token, str) else None
        if cookie is None:
            message = html.escape("That token is not accepted.")
            return web.Response(
                status=403, text=_LOGIN_FORM.format(message=message), content_type="text/html"
            )
        response = web.Response(
            text=_LOGIN_FORM.format(message="Signed in."), content_type="text/html"
        )
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
        )
        log.info("browser session issued to %s", request.remote)
        return response

    return login


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"ok": True})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )
