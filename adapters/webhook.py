"""``webhook.post``: a signed HTTP POST a receiver can verify, once per idempotency key.

Signing follows the Standard Webhooks scheme (standardwebhooks.com), so receivers
can use an off-the-shelf verifier or :func:`verify` below:

* ``webhook-id``: the step's idempotency key, the same on every retry, so the
  receiver deduplicates (it is also sent as ``Idempotency-Key``);
* ``webhook-timestamp``: Unix seconds when this attempt was signed; receivers reject
  old ones (5 minutes by default), which is why each retry is signed afresh;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``.

The body is ``{"type": <event>, "data": <payload>}`` as compact JSON with sorted
keys, byte-identical across retries. The signing key is the tenant's secret
``secret://<tenant>/webhook/signing_key`` (or the reference the step names), resolved
on the worker: it never appears in args, history or OPA input. A key written
``whsec_<base64>`` is base64-decoded first, as in the standard; any other value is
used as UTF-8 bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx
from pydantic import Field, JsonValue, field_validator

from adapters.credentials import resolve_secret
from adapters.http import new_http_client
from stead.contracts.base import Closed
from stead.egress import Destination, url_destination
from stead.egress.urls import absolute_http_url
from stead.operations.base import AdapterError, Operation, OperationContext
from stead.secrets import SecretRefStr, SecretStr, redact

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_SECRET_NAME = "signing_key"
TOLERANCE_SECONDS = 300
BODY_LIMIT = 512 * 1024
EXCERPT = 2048


class WebhookArgs(Closed):
    url: str = Field(min_length=8, max_length=4096, description="The receiver's http(s) URL.")
    event: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
        description="Event type, e.g. invoice.paid; sent as the body's 'type'.",
    )
    payload: JsonValue = Field(default=None, description="Sent as the body's 'data'.")
    signing_secret: SecretRefStr | None = Field(
        default=None,
        description="secret:// reference of the signing key; default <tenant>/webhook/signing_key.",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return absolute_http_url(value, resolver="the receiver verifies the HMAC")

    def body(self) -> bytes:
        return _canonical({"type": self.event, "data": self.payload})


class WebhookResult(Closed):
    status: int
    webhook_id: str
    timestamp: int = Field(description="The webhook-timestamp of the attempt that landed.")
    response_excerpt: str = Field(default="", description=f"First {EXCERPT} bytes of the answer.")


class SignatureInvalid(ValueError):
    """What a receiver raises (through :func:`verify`) for a delivery it must not trust."""


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery attempt."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signing_key(secret: str) -> bytes:
    """``whsec_<base64>`` decodes to its bytes (the standard's form); anything else is UTF-8."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            raise ValueError("a whsec_ signing key must be base64 after the prefix") from None
    return secret.encode()


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> None:
    """Check a received delivery, as a receiver would; raise ``SignatureInvalid`` if it fails.

    ``headers`` may use any case. Several space-separated signatures are allowed
    (key rotation); one match suffices.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    webhook_id, stamp, signatures = (
        lower.get(ID_HEADER),
        lower.get(TIMESTAMP_HEADER),
        lower.get(SIGNATURE_HEADER),
    )
    if not webhook_id or not stamp or not signatures:
        raise SignatureInvalid(f"missing {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} {stamp!r} is not Unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureInvalid(
            f"{TIMESTAMP_HEADER} is {int(current - timestamp)} s off; "
            f"the tolerance is {tolerance_seconds} s"
        )
    expected = sign(signing_key(secret), webhook_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise SignatureInvalid("no signature matches the body under this key")


async def post(ctx: OperationContext, args: WebhookArgs) -> WebhookResult:
    """Sign and send once; Temporal retries (same id, fresh timestamp) when the error says so."""
    ref = signing_ref(ctx.tenant, args)
    secret = await resolve_secret(
        ctx, ref, adapter="webhook", destination=url_destination(args.url)
    )
    try:
        key = signing_key(secret.get_secret_value())
    except ValueError as exc:
        raise AdapterError(
            f"{ref}: {exc}", retryable=False, details={"reason": "bad_key", "ref": ref}
        ) from None
    body = args.body()
    if len(body) > BODY_LIMIT:
        raise AdapterError(
            f"the webhook body is {len(body)} bytes; the limit is {BODY_LIMIT}",
            retryable=False,
            details={"reason": "too_large"},
        )
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        ID_HEADER: ctx.idempotency_key,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(key, ctx.idempotency_key, timestamp, body),
        IDEMPOTENCY_HEADER: ctx.idempotency_key,
    }
    shared = getattr(ctx.resources, "http", None)
    if isinstance(shared, httpx.AsyncClient):
        status, excerpt = await _send(shared, args, headers, body, secret)
    else:
        async with new_http_client() as client:
            status, excerpt = await _send(client, args, headers, body, secret)
    return WebhookResult(
        status=status,
        webhook_id=ctx.idempotency_key,
        timestamp=timestamp,
        response_excerpt=excerpt,
    )


async def _send(
    client: httpx.AsyncClient,
    args: WebhookArgs,
    headers: dict[str, str],
    body: bytes,
    secret: SecretStr,
) -> tuple[int, str]:
    """POST once; the answer's excerpt is scrubbed of the signing key (a receiver that
    echoes its configuration must not put the key into history)."""
    target = _describe(args.url)
    try:
        async with asyncio.timeout(args.timeout_seconds):
            async with client.stream(
                "POST", args.url, content=body, headers=headers, timeout=args.timeout_seconds
            ) as response:
                excerpt = redact(await _excerpt(response), secret)
    except (TimeoutError, httpx.TimeoutException):
        raise AdapterError(
            f"webhook {target} did not answer within {args.timeout_seconds:g} s; retrying with "
            "the same webhook-id is safe",
            retryable=True,
            details={"url": target, "reason": "timeout"},
        ) from None
    except httpx.TransportError as exc:
        raise AdapterError(
            f"webhook {target} failed on the wire ({type(exc).__name__}: "
            f"{redact(str(exc), secret)}); retrying "
            "with the same webhook-id is safe",
            retryable=True,
            details={"url": target, "reason": type(exc).__name__},
        ) from None
    status = response.status_code
    if 200 <= status < 300:
        return status, excerpt
    retryable = status in (408, 429) or status >= 500
    advice = (
        "the receiver may recover; Temporal retries with the same webhook-id"
        if retryable
        else "the receiver refused the delivery; retrying would get the same answer"
    )
    raise AdapterError(
        f"webhook {target} answered {status}; {advice}",
        retryable=retryable,
        details={"url": target, "status": status, "text": excerpt},
    )


async def _excerpt(response: httpx.Response) -> str:
    """At most EXCERPT bytes of the answer: a receiver's body is not worth a worker's memory."""
    got = b""
    async for chunk in response.aiter_bytes():
        got += chunk
        if len(got) >= EXCERPT:
            break
    return got[:EXCERPT].decode("utf-8", errors="replace")


def signing_ref(tenant: str, args: WebhookArgs) -> str:
    """The step's signing key reference: the one it names, else the tenant's default."""
    return args.signing_secret or f"secret://{tenant}/webhook/{DEFAULT_SECRET_NAME}"


def destinations(args: WebhookArgs) -> list[Destination]:
    return [url_destination(args.url)]


def _describe(url: str) -> str:
    # The query string can carry a receiver's token; keep it out of errors and history.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _canonical(value: JsonValue) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


WEBHOOK_POST: Operation[WebhookArgs, WebhookResult] = Operation(
    name="webhook.post",
    description=(
        "POST an event to a receiver's URL, signed with the tenant's webhook key "
        "(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature) and sent "
        "with an Idempotency-Key so a retry is deduplicated."
    ),
    args_model=WebhookArgs,
    result_model=WebhookResult,
    run=post,
    side_effect="external",
    risk="medium",
    idempotency="key",
    scopes=("webhook:post",),
    timeout_seconds=60.0,
    max_attempts=8,
    rate_limit_per_minute=120,
    destinations=destinations,
    secret_refs=lambda tenant, args: [signing_ref(tenant, args)],
)
