"""``http.request``: one HTTP call to an external service, exactly once per idempotency key.

Exactly-once here rests on the receiving server: every request carries
``Idempotency-Key: <workflow id>/<step id>``, so a server that honours the header
(Stripe-style APIs, the example services in ``examples/``) answers a retry with the
first response instead of acting twice. The adapter cannot ask a generic server
whether an effect happened, so re-sending with the same key *is* the reconcile.

Credentials never travel in step args (they would land in workflow history):
``Authorization``, ``Cookie`` and friends are refused by the schema, and the client
refuses every cookie, so one tenant's session can never ride along on another's call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from adapters.base import AdapterError, Operation, OperationContext

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
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    expect_status_min: int = Field(default=200, ge=100, le=599)
    expect_status_max: int = Field(default=299, ge=100, le=599)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an absolute http:// or https:// URL, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are refused; the adapter resolves them")
        return value

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
            f"{target} failed on the wire ({type(exc).__name__}: {exc}); "
            "retrying with the same Idempotency-Key is safe",
            retryable=True,
            details={"url": args.url, "reason": type(exc).__name__},
        ) from None
    except httpx.HTTPError as exc:
        raise AdapterError(
            f"{target} failed: {type(exc).__name__}: {exc}",
            retryable=False,
            details={"url": args.url, "reason": type(exc).__name__},
        ) from None

    result = _result(response.status_code, response.headers, body, truncated)
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


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


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
)
