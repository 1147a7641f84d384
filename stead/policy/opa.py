"""The OPA client Stead asks before every plan and every step. It fails closed.

Every way a question to OPA can go wrong ends in one of two typed errors, never in
an answer: ``PolicyUnavailable`` (OPA did not give a usable answer: down, slow,
5xx, garbage; worth retrying) and ``PolicyUndefined`` (OPA answered, but with no
decision or one that breaks the contract in ``policies/README.md``; retrying the
same question gives the same answer). A malformed result is never read as allow.

There are no retry loops here: Temporal owns retries, so one call is one HTTP request.

Why not ``opa-python-client``: its ``OpaClient`` is synchronous (``requests``) and
would block the worker's event loop; its ``AsyncOpaClient`` (2.0) pulls in ``aiohttp``
and ``aiofiles``, has a single total timeout, is untyped, and its ``query_rule``
returns the raw body after ``raise_for_status``, so "no decision" (a 200 without
``result``) looks like any other answer.

Why not ``httpx`` (which this client used until the decision-latency benchmark):
every step pays one decision on its critical path, and against a loopback OPA most
of that round trip was httpx's own per-request work, not OPA's (evaluation is
~0.2 ms). The wire is now ``stead.policy.http1``, a small keep-alive pool speaking
HTTP/1.1 through h11 that does only what OPA's data API needs; it cut ``decide_step``
p50 from 0.94-1.00 to 0.44-0.48 ms against the same OPAs in the same runs
(bench/README.md, section 4; http1's docstring).
Pass ``client=`` to go through your own ``httpx.AsyncClient`` instead (a
Unix-socket or HTTP/2 transport, say). Either way ``evaluate`` bounds every call by
one deadline, and each failure maps to exactly one error a caller can branch on.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Annotated, Any, Final, Literal, Protocol, Self, TypeVar

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from stead.contracts.run import ApprovalPolicy, Decision
from stead.errors import ErrorCode, SteadError
from stead.policy.http1 import ConnectFailed, ConnectionDropped, Http1Pool, Response

STEP_DECISION: Final = "stead/step/decision"
PLAN_DECISION: Final = "stead/plan/decision"
REVISION: Final = "stead/system/health/revision"
REVISION_TTL_SECONDS: Final = 5.0
UNKNOWN_REVISION: Final = "unknown"
NOT_RUNNING_HINT: Final = "Is `stead dev up` running?"
TOKEN_HINT: Final = (
    "Set STEAD_OPA_TOKEN to OPA's decision token (the dev stack keeps it in "
    "$STEAD_HOME/opa/tokens.json; compose: the token `stead policy tokens` made)."
)
SERVER_ERROR_HINT: Final = "See the OPA log: the policy may fail to evaluate for this input."

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_-]*)*$")
# A proxy or load balancer in front of OPA may answer these while OPA itself is
# fine a moment later: transient, like a 5xx.
_TRANSIENT_4XX = frozenset({408, 425, 429})


class PolicyUnavailable(SteadError):
    """OPA gave no usable answer (unreachable, timed out, 5xx, not JSON): retryable, never allow."""

    code = ErrorCode.SERVICE_NOT_READY

    def __init__(
        self, url: str, detail: str, *, subject: str = "the step", hint: str = NOT_RUNNING_HINT
    ) -> None:
        self.url = url
        self.detail = detail
        self.subject = subject
        self.hint = hint
        super().__init__(f"OPA at {_where(url)} {detail}; {subject} stays blocked. {hint}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle by re-calling __init__ with .args; ours take other arguments.
        kwargs = {"subject": self.subject, "hint": self.hint}
        return (_rebuild, (type(self), (self.url, self.detail), kwargs))


class PolicyUnauthorized(PolicyUnavailable):
    """OPA refused our credential (401/403): a deployment mistake an operator fixes, never allow.

    A ``PolicyUnavailable`` so every caller fails closed the same way (retried, then a
    ``policy_unavailable`` block); the message names the setting to fix.
    """

    def __init__(
        self, url: str, detail: str, *, subject: str = "the step", hint: str = TOKEN_HINT
    ) -> None:
        super().__init__(url, detail, subject=subject, hint=hint)


class PolicyUndefined(SteadError):
    """OPA answered without a valid decision (undefined path, malformed result): not retryable."""

    code = ErrorCode.CONFIG

    def __init__(self, path: str, detail: str | None = None, *, subject: str = "the step") -> None:
        self.path = path
        self.detail = detail
        self.subject = subject
        rule = "data." + path.replace("/", ".")
        why = detail or (
            "it is undefined (check that its package loads with `opa check policies/` "
            "and that the rule name is right)"
        )
        super().__init__(f"OPA has no valid decision at {rule}: {why}; {subject} stays blocked.")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.path, self.detail), {"subject": self.subject}))


def _rebuild(cls: type[SteadError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> SteadError:
    return cls(*args, **kwargs)


def _where(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host or url


# What OPA returns, closed and strict: a policy bug that yields "1" for a number,
# "false" for a bool or an extra key is refused, not coerced into something that runs.
Reason = Annotated[StrictStr, Field(min_length=1)]
Reasons = Annotated[tuple[Reason, ...], Field(min_length=1)]


class _OpaDocument(BaseModel):
    # Scalars are Strict* below; containers stay lax so JSON arrays become tuples.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovalTerms(_OpaDocument):
    """Who may approve a held step, how many, how long, and what a timeout does."""

    approvers: tuple[StrictStr, ...] = Field(min_length=1)
    min_approvals: StrictInt = Field(ge=1)
    timeout_seconds: StrictInt = Field(ge=1)
    on_timeout: Literal["reject", "escalate"]
    escalate_to: tuple[StrictStr, ...]
    allow_self_approval: StrictBool


class StepPolicy(_OpaDocument):
    """The document ``data.stead.step.decision`` must evaluate to."""

    outcome: Literal["allow", "deny", "approve"]
    reasons: Reasons
    approval: ApprovalTerms | None = None

    @model_validator(mode="after")
    def _approval_only_on_approve(self) -> Self:
        # The contract sets approval on approve and only there: an approve without
        # terms could not be granted by anyone, an allow with terms is ambiguous.
        if (self.outcome == "approve") != (self.approval is not None):
            raise ValueError(
                "approval must be an object when outcome is approve, and null otherwise "
                f"(got outcome {self.outcome} with approval {'set' if self.approval else 'null'})"
            )
        return self


class PlanPolicy(_OpaDocument):
    """The document ``data.stead.plan.decision`` must evaluate to."""

    outcome: Literal["allow", "deny"]
    reasons: Reasons


_Document = TypeVar("_Document", StepPolicy, PlanPolicy)


class StepPolicyResult(StepPolicy):
    """A validated step decision plus how long OPA took to give it (client-side, ms)."""

    eval_ms: float = Field(ge=0)

    def to_decision(self, decision_id: str, *, policy_revision: str) -> Decision:
        """The workflow contract; ``eligible`` stays empty until groups are expanded."""
        approval = None
        if self.approval is not None:
            approval = ApprovalPolicy(**self.approval.model_dump())
        return Decision(
            decision_id=decision_id,
            outcome=self.outcome,
            reasons=self.reasons,
            approval=approval,
            policy_revision=policy_revision,
        )


class PlanPolicyResult(PlanPolicy):
    """A validated plan decision plus how long OPA took to give it (client-side, ms)."""

    eval_ms: float = Field(ge=0)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "result"
        got = json.dumps(error["input"], default=str)
        if len(got) > 80:
            got = got[:77] + "..."
        problems.append(f"{where}: {error['msg']} (got {got})")
    return "the result does not follow the decision contract: " + "; ".join(problems)


class _Wire(Protocol):
    async def post(self, path: str, body: bytes, content_type: bytes) -> Response: ...

    async def aclose(self) -> None: ...


class _HttpxWire:
    """A caller's own ``httpx.AsyncClient`` behind the same two errors as ``Http1Pool``."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self._client = client
        self._url = url
        self._headers = headers

    async def post(self, path: str, body: bytes, content_type: bytes) -> Response:
        try:
            answer = await self._client.post(
                self._url + path,
                content=body,
                headers={**self._headers, "Content-Type": content_type.decode()},
            )
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.ConnectError as exc:
            raise ConnectFailed(str(exc)) from None
        except httpx.TransportError as exc:
            raise ConnectionDropped(f"{type(exc).__name__}: {exc}") from None
        return Response(answer.status_code, answer.content, keep_alive=True)

    async def aclose(self) -> None:
        """The caller owns the client: leave it open."""


class OpaClient:
    """Asks OPA's REST data API, over one pool of keep-alive connections.

    Pass ``client`` to supply your own ``httpx.AsyncClient`` (a Unix-socket or
    HTTP/2 transport, say); the caller then owns it and ``aclose`` leaves it open.
    ``timeout`` bounds each call end to end: connect, send, evaluate and read.
    ``token`` is OPA's decision token (``STEAD_OPA_TOKEN``), sent as a bearer token on
    every request; without it an OPA behind token auth refuses every question.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | SecretStr | None = None,
        timeout: float = 1.5,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        auth = {"Authorization": f"Bearer {secret}"} if secret else {}
        # No proxy, ever: a HTTP(S)_PROXY exported for model APIs must not route policy
        # inputs through a proxy, nor add its latency to every step.
        self._wire: _Wire = (
            _HttpxWire(client, self.url, auth)
            if client is not None
            else Http1Pool(
                self.url,
                max_connections=64,
                max_idle=16,
                idle_expiry=30.0,
                headers=[(k.encode(), v.encode("ascii")) for k, v in auth.items()],
            )
        )
        self._revision: tuple[float, str] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()

    async def evaluate(self, path: str, input: Mapping[str, Any]) -> Any:
        """``POST /v1/data/<path>`` with ``{"input": input}``; return the defined ``result``."""
        return await self._evaluate(path, input, subject="the step")

    async def decide_step(self, input: Mapping[str, Any]) -> StepPolicyResult:
        """Allow, deny or hold one step (``data.stead.step.decision``)."""
        parsed, elapsed_ms = await self._decide(STEP_DECISION, input, StepPolicy, "the step")
        return StepPolicyResult(**dict(parsed), eval_ms=elapsed_ms)

    async def decide_plan(self, input: Mapping[str, Any]) -> PlanPolicyResult:
        """Allow or deny a whole plan before any step runs (``data.stead.plan.decision``)."""
        parsed, elapsed_ms = await self._decide(PLAN_DECISION, input, PlanPolicy, "the plan")
        return PlanPolicyResult(**dict(parsed), eval_ms=elapsed_ms)

    async def _decide(
        self, path: str, input: Mapping[str, Any], document: type[_Document], subject: str
    ) -> tuple[_Document, float]:
        """The decision at ``path`` as ``document``, and how long OPA took (ms); a result
        that does not fit is undefined, so the caller fails closed."""
        started = time.perf_counter()
        result = await self._evaluate(path, input, subject=subject)
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            return document.model_validate(result), elapsed_ms
        except ValidationError as exc:
            raise PolicyUndefined(path, _describe(exc), subject=subject) from None

    async def revision(self) -> str:
        """The loaded policy set's revision, for the audit trail; ``"unknown"`` if OPA can't say.

        Cached for a few seconds because it is recorded with every decision and only
        changes on a bundle reload. Failures are not cached, so recovery shows at once.
        """
        now = time.monotonic()
        if self._revision is not None and now - self._revision[0] < REVISION_TTL_SECONDS:
            return self._revision[1]
        try:
            value = await self._evaluate(REVISION, {}, subject="the revision lookup")
        except (PolicyUnavailable, PolicyUndefined):
            return UNKNOWN_REVISION
        if not isinstance(value, str) or not value:
            return UNKNOWN_REVISION
        self._revision = (now, value)
        return value

    async def _evaluate(self, path: str, input: Mapping[str, Any], *, subject: str) -> Any:
        path = path.strip("/")
        if not _PATH.match(path):
            raise ValueError(f"not an OPA data path: {path!r} (expected e.g. stead/step/decision)")
        try:
            body = json.dumps(
                {"input": dict(input)}, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
        except ValueError as exc:
            raise ValueError(f"the policy input is not JSON: {exc}") from None
        try:
            # One deadline for the whole exchange, connecting included.
            async with asyncio.timeout(self.timeout):
                response = await self._wire.post(f"/v1/data/{path}", body, b"application/json")
        except TimeoutError:
            raise PolicyUnavailable(
                self.url, f"did not answer in {self.timeout:g} s", subject=subject
            ) from None
        except ConnectFailed as exc:
            raise PolicyUnavailable(
                self.url, f"could not be reached ({exc})", subject=subject
            ) from None
        except ConnectionDropped as exc:
            raise PolicyUnavailable(
                self.url, f"dropped the connection ({exc})", subject=subject
            ) from None

        if response.status >= 500 or response.status in _TRANSIENT_4XX:
            raise PolicyUnavailable(
                self.url,
                f"answered HTTP {response.status}{_opa_error(response)}",
                subject=subject,
                hint=SERVER_ERROR_HINT if response.status >= 500 else NOT_RUNNING_HINT,
            )
        if response.status in (401, 403):
            # Our credential, not the question: missing, wrong, or not allowed this path.
            raise PolicyUnauthorized(
                self.url,
                f"refused Stead's token with HTTP {response.status}{_opa_error(response)}",
                subject=subject,
            )
        if response.status != 200:
            # OPA (or whatever listens at this URL) refuses this exact request; asking
            # again gives the same answer, so this is a missing decision, not an outage.
            raise PolicyUndefined(
                path,
                f"OPA at {_where(self.url)} refused the query with HTTP "
                f"{response.status}{_opa_error(response)}",
                subject=subject,
            )
        try:
            answer = json.loads(response.body)
        except ValueError:
            raise PolicyUnavailable(
                self.url,
                "answered with a body that is not JSON (is this URL really OPA?)",
                subject=subject,
            ) from None
        if not isinstance(answer, dict):
            raise PolicyUnavailable(
                self.url,
                f"answered JSON {type(answer).__name__}, not an OPA response object",
                subject=subject,
            )
        if "result" not in answer:
            raise PolicyUndefined(path, subject=subject)
        return answer["result"]


def _opa_error(response: Response) -> str:
    """OPA's own error body (``code``, ``message`` and the first of ``errors``), if any."""
    try:
        body = json.loads(response.body)
    except ValueError:
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return ""
    parts = [
        f"{body['code']}: {body['message']}"
        if isinstance(body.get("code"), str)
        else body["message"]
    ]
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        parts.append(f"{first.get('code', 'error')}: {first.get('message', '')}")
    return " (" + "; ".join(parts) + ")"
