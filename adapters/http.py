"""``http.request``: one HTTP call to an external service, exactly once per idempotency key.

Exactly-once here rests on the receiving server: every request carries
``Idempotency-Key: <workflow id>/<step id>``, so a server that honours the header
(Stripe-style APIs, the field cases' services in ``examples/stead-cases``) answers a
retry with the first response instead of acting twice. The adapter cannot ask a generic server
whether an effect happened, so re-sending with the same key *is* the reconcile.

Credentials never travel in step args (they would land in workflow history):
``Authorization``, ``Cookie`` and friends are refused by the schema, and the client
refuses every cookie, so one tenant's session can never ride along on another's call.
A step that needs a credential names it, ``auth: {"secret": "secret://<tenant>/http/<name>",
"scheme": "Bearer"}``, and the worker resolves it into the ``Authorization`` header
(refused for another tenant's reference), then scrubs the value from whatever the
response or an error would carry back into history.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    field_validator,
    model_validator,
)

from adapters.credentials import resolve_secret
from stead.contracts.base import Closed
from stead.egress import Destination, url_destination
from stead.egress.urls import absolute_http_url
from stead.operations.base import AdapterError, Operation, OperationContext
from stead.secrets import SecretRef, SecretRefStr, redact, redact_json

IDEMPOTENCY_HEADER = "Idempotency-Key"
TEXT_LIMIT = 64 * 1024
# Bodies above this are not parsed as JSON: the result goes into workflow history,
# which Temporal caps at a few MB per payload.
BODY_LIMIT = 1024 * 1024
ERROR_EXCERPT = 2048
_NO_COOKIES = DefaultCookiePolicy(allowed_domains=[])

# Header names a step may not set: credentials are resolved on the worker, never
# passed in args, and the idempotency key is the adapter's to send, not the plan's.
FORBIDDEN_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "idempotency-key", "x-api-key"}
)
# Response headers worth keeping in history. An allowlist, because a denylist would
# let the next vendor's session header slip through (Set-Cookie never passes).
SAFE_RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "location",
        "etag",
        "last-modified",
        "retry-after",
        "idempotency-key",
        "idempotent-replayed",
        "x-request-id",
        "request-id",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    }
)


class HttpAuth(Closed):
    """A credential by reference: only the reference is in args, history and OPA input."""

    secret: SecretRefStr = Field(
        description="secret://<tenant>/http/<name>, resolved on the worker for the step's tenant."
    )
    scheme: str | None = Field(
        default="Bearer",
        pattern=r"^[A-Za-z][A-Za-z0-9._~+-]{0,31}$",
        description="Authorization scheme before the value; null sends the value alone.",
    )

    @field_validator("secret")
    @classmethod
    def _http_secret(cls, value: str) -> str:
        adapter = SecretRef.parse(value).adapter
        if adapter != "http":
            raise ValueError(
                f"{value} belongs to the {adapter} adapter; http.request may only use "
                "secret://<tenant>/http/<name>"
            )
        return value


class HttpRequestArgs(BaseModel):
    """One request as a plan states it; checked before OPA sees it and again before it runs."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=False,  # one spelling on the wire: "json"
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    url: str = Field(min_length=8, max_length=4096, description="An absolute http(s) URL.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers; never credentials."
    )
    json_body: JsonValue = Field(default=None, alias="json", description="JSON request body.")
    auth: HttpAuth | None = Field(
        default=None, description="Authorization from a secret reference; never the value."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    expect_status_min: int = Field(default=200, ge=100, le=599)
    expect_status_max: int = Field(default=299, ge=100, le=599)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return absolute_http_url(value, resolver="the adapter resolves them")

    @field_validator("headers")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        refused = sorted(name for name in value if name.strip().lower() in FORBIDDEN_HEADERS)
        if refused:
            raise ValueError(
                f"header(s) {', '.join(refused)} may not be set in step args: credentials "
                "are resolved by the adapter on the worker, and the adapter sends "
                f"{IDEMPOTENCY_HEADER} itself"
            )
        return value

    @model_validator(mode="after")
    def _status_range(self) -> HttpRequestArgs:
        if self.expect_status_min > self.expect_status_max:
            raise ValueError(
                f"expect_status_min {self.expect_status_min} is above "
                f"expect_status_max {self.expect_status_max}"
            )
        return self


class HttpResponse(BaseModel):
    """What history keeps of a response: status, a safe header subset, a bounded body."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    status: int
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: JsonValue = Field(default=None, alias="json")
    text: str = Field(default="", description=f"The body as text, cut at {TEXT_LIMIT} bytes.")
    truncated: bool = Field(default=False, description="True when the body was cut.")


def new_http_client() -> httpx.AsyncClient:
    """The client adapters share: no cookies, no redirects.

    A shared client would otherwise remember a Set-Cookie from one tenant's call and
    replay it on the next tenant's; the cookie policy here accepts and returns none.
    """
    client = httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": "stead-adapter/0.1"})
    _refuse_cookies(client)
    return client


def _refuse_cookies(client: httpx.AsyncClient) -> None:
    # Set on the client's own jar: httpx copies a jar given to its constructor into a
    # default one, which would silently drop the policy.
    client.cookies.jar.set_policy(_NO_COOKIES)


async def request(ctx: OperationContext, args: HttpRequestArgs) -> HttpResponse:
    """Send the request once; Temporal retries it (same key) when the error says so."""
    shared = getattr(ctx.resources, "http", None)
    if isinstance(shared, httpx.AsyncClient):
        # Whoever built the shared client, it must not carry cookies across tenants.
        _refuse_cookies(shared)
        return await _send(shared, ctx, args)
    async with new_http_client() as client:
        return await _send(client, ctx, args)


async def reconcile(ctx: OperationContext, args: HttpRequestArgs) -> HttpResponse | None:
    """Always None: re-sending with the same Idempotency-Key is how this effect reconciles.

    A generic server offers no "did key K happen?" lookup. A server that honours the
    header replays its first answer to a retry, so asking again is safe and returns the
    original outcome; one that ignores the header gets no stronger guarantee than
    at-least-once, which is why this operation is rated ``medium`` risk.
    """
    return None


async def _send(
    client: httpx.AsyncClient, ctx: OperationContext, args: HttpRequestArgs
) -> HttpResponse:
    headers = {**args.headers, IDEMPOTENCY_HEADER: ctx.idempotency_key}
    secret = await _credential(ctx, args.auth, args.url) if args.auth is not None else None
    scrub = (secret,) if secret is not None else ()
    if args.auth is not None and secret is not None:
        value = secret.get_secret_value()
        headers["Authorization"] = f"{args.auth.scheme} {value}" if args.auth.scheme else value
    target = _describe(args)
    try:
        # httpx's timeout is per phase (connect, each read); the step's budget is total.
        async with asyncio.timeout(args.timeout_seconds):
            async with client.stream(
                args.method,
                args.url,
                headers=headers,
                json=args.json_body,
                timeout=args.timeout_seconds,
            ) as response:
                body, truncated = await _read_bounded(response)
    except (TimeoutError, httpx.TimeoutException):
        raise AdapterError(
            f"{target} did not answer within {args.timeout_seconds:g} s; retrying with the "
            "same Idempotency-Key is safe",
            retryable=True,
            details={"url": args.url, "reason": "timeout"},
        ) from None
    except httpx.TransportError as exc:
        raise AdapterError(
            f"{target} failed on the wire ({type(exc).__name__}: {redact(str(exc), *scrub)}); "
            "retrying with the same Idempotency-Key is safe",
            retryable=True,
            details={"url": args.url, "reason": type(exc).__name__},
        ) from None
    except httpx.HTTPError as exc:
        raise AdapterError(
            f"{target} failed: {type(exc).__name__}: {redact(str(exc), *scrub)}",
            retryable=False,
            details={"url": args.url, "reason": type(exc).__name__},
        ) from None

    result = _redacted(_result(response.status_code, response.headers, body, truncated), scrub)
    status = response.status_code
    if args.expect_status_min <= status <= args.expect_status_max:
        return result
    retryable = status == 429 or status >= 500
    advice = (
        "the server may recover; Temporal retries with the same Idempotency-Key"
        if retryable
        else "retrying would get the same answer; fix the request or the expected status range"
    )
    raise AdapterError(
        f"{target} answered {status}, expected "
        f"{args.expect_status_min}..{args.expect_status_max}; {advice}",
        retryable=retryable,
        # A short excerpt only: error details land in history next to the retry record.
        details={
            "url": args.url,
            "status": status,
            "headers": result.headers,
            "text": result.text[:ERROR_EXCERPT],
        },
    )


async def _read_bounded(response: httpx.Response) -> tuple[bytes, bool]:
    """Read at most BODY_LIMIT bytes: a runaway body must not exhaust the worker."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > BODY_LIMIT:
            return b"".join(chunks)[:BODY_LIMIT], True
    return b"".join(chunks), False


def _result(status: int, headers: Mapping[str, str], body: bytes, truncated: bool) -> HttpResponse:
    content_type = headers.get("content-type", "")
    parsed: JsonValue = None
    if body and not truncated and _is_json(content_type):
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            parsed = None
    text = body[:TEXT_LIMIT].decode("utf-8", errors="replace")
    return HttpResponse(
        status=status,
        headers={k.lower(): v for k, v in headers.items() if k.lower() in SAFE_RESPONSE_HEADERS},
        json_body=parsed,
        text=text,
        truncated=truncated or len(body) > TEXT_LIMIT,
    )


async def _credential(ctx: OperationContext, auth: HttpAuth, url: str) -> SecretStr:
    """Resolve ``auth.secret`` for the step's tenant and the request's destination (the
    reference must declare it); every failure is final, not retried."""
    secret = await resolve_secret(
        ctx, auth.secret, adapter="http", destination=url_destination(url)
    )
    # A header value is visible ASCII; anything else would be refused by the HTTP library
    # with an error quoting the value, or split the header (CR/LF).
    if not all(" " <= ch <= "~" or ch == "\t" for ch in secret.get_secret_value()):
        raise AdapterError(
            f"{auth.secret} holds characters an HTTP header cannot carry (control characters, "
            "line breaks or non-ASCII); store the value without them",
            retryable=False,
            details={"secret": auth.secret},
        )
    return secret


def _redacted(result: HttpResponse, scrub: tuple[SecretStr, ...]) -> HttpResponse:
    """The response with the credential removed, should the peer have echoed it."""
    if not scrub:
        return result
    return result.model_copy(
        update={
            "headers": {k: redact(v, *scrub) for k, v in result.headers.items()},
            "json_body": redact_json(result.json_body, *scrub),
            "text": redact(result.text, *scrub),
        }
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def destinations(args: HttpRequestArgs) -> list[Destination]:
    """The request's scheme, host and port, for OPA's egress check."""
    return [url_destination(args.url)]


def _describe(args: HttpRequestArgs) -> str:
    # The query string can carry tokens a careless caller put there; keep it out of errors.
    parts = urlsplit(args.url)
    return f"{args.method} {parts.scheme}://{parts.netloc}{parts.path}"


HTTP_REQUEST: Operation[HttpRequestArgs, HttpResponse] = Operation(
    name="http.request",
    description=(
        "Send one HTTP request to an external service. The adapter adds an "
        "Idempotency-Key header so a retry is deduplicated by servers that honour it; "
        "credentials are never accepted in args."
    ),
    args_model=HttpRequestArgs,
    result_model=HttpResponse,
    run=request,
    side_effect="external",
    risk="medium",
    idempotency="key",
    scopes=("http:request",),
    timeout_seconds=60.0,
    max_attempts=5,
    reconcile=reconcile,
    destinations=destinations,
)
