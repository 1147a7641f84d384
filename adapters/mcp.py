"""``mcp.<server>.<tool>``: every pinned tool of a tenant's MCP server as a governed operation.

Built from the pinned definitions in ``stead.mcp.config`` (never from a live listing):
the argument schema is the tool's ``inputSchema``, checked with ``jsonschema``; the
result is the tool's content, its structured content checked against the pinned
``outputSchema``. Risk and side effect are the strictest (``high``, ``external``) and
policy data lowers them per tool (``policies/stead/mcp.rego``); the server's
annotations (``readOnlyHint``, ``destructiveHint``) are never read.

Each call re-reads the tenant's configuration and lists the server's tools first: a
definition whose hash differs from the pin is refused, audited as ``mcp_tool_changed``,
until an operator runs ``stead mcp refresh --accept``. The step's idempotency key
travels in the call's ``_meta`` (``io.stead/idempotency_key``) so a server can
deduplicate; after a worker died mid-call the step is repeated only for a server
configured ``dedupes_by_key``, and otherwise fails as "effect unknown" (at most once).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import jsonschema
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT, RequestParamsMeta
from pydantic import BaseModel, ConfigDict, JsonValue, SecretStr, model_validator

from adapters.credentials import resolve_secret
from stead.audit.log import AuditEvent, append_event
from stead.contracts.base import Closed
from stead.db.pool import tenant_transaction
from stead.egress import Destination, url_destination
from stead.mcp.config import McpConfigStore, McpServerConfig, PinnedTool, operation_name, tool_hash
from stead.mcp.session import McpUnreachable, connected, list_tool_definitions, resolved_values
from stead.operations.base import AdapterError, Operation, OperationContext
from stead.secrets.redact import redact, redact_json

IDEMPOTENCY_META = "io.stead/idempotency_key"
# A result larger than this (its JSON) is stored in the tenant's records, not carried
# in workflow history; the step's output names where.
MAX_INLINE_BYTES = 16_384
_ERROR_TEXT = 500


class McpArguments(BaseModel):
    """A tool's arguments: any JSON object its pinned ``inputSchema`` accepts.

    Subclassed once per tool (``__tool_schema__``); the planner and OPA read the tool's
    own schema through ``model_json_schema``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    __tool_schema__: ClassVar[dict[str, JsonValue]] = {"type": "object"}

    @model_validator(mode="before")
    @classmethod
    def _matches_tool_schema(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("arguments must be a JSON object")
        errors = sorted(
            jsonschema.Draft202012Validator(cls.__tool_schema__).iter_errors(data),
            key=lambda e: list(e.absolute_path),
        )
        if errors:
            raise ValueError(
                "; ".join(
                    f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                    for e in errors[:5]
                )
            )
        return data

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return dict(cls.__tool_schema__)

    def arguments(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class McpResult(Closed):
    """What the tool answered, secrets masked; ``stored`` when it was too large to inline."""

    content: list[JsonValue] = []
    structured: JsonValue = None
    stored: dict[str, JsonValue] | None = None


def mcp_operations(store: McpConfigStore) -> list[Operation[Any, Any]]:
    """One operation per pinned tool of every tenant's servers (server names are unique)."""
    ops: list[Operation[Any, Any]] = []
    for tenant in store.tenants():
        for server_name, server in sorted(store.load(tenant).servers.items()):
            for tool_name, pin in sorted(server.tools.items()):
                op = _operation(store, tenant, server_name, server, tool_name, pin)
                if op is not None:
                    ops.append(op)
    return ops


def _operation(
    store: McpConfigStore,
    tenant: str,
    server_name: str,
    server: McpServerConfig,
    tool_name: str,
    pin: PinnedTool,
) -> Operation[Any, Any] | None:
    name = operation_name(server_name, tool_name)
    if name is None:
        return None
    args_model = type(
        f"McpArgs_{server_name}_{name.rsplit('.', 1)[1]}",
        (McpArguments,),
        {"__tool_schema__": pin.input_schema, "__module__": __name__},
    )

    async def run(ctx: OperationContext, args: McpArguments) -> McpResult:
        return await call_tool(ctx, store, server_name, tool_name, args.arguments())

    async def reconcile(ctx: OperationContext, args: McpArguments) -> McpResult | None:
        current = store.server(ctx.tenant, server_name)
        if current is not None and current.dedupes_by_key:
            return None  # call again: the server deduplicates on the key in _meta
        raise AdapterError(
            f"the worker stopped during {name} for {ctx.idempotency_key}; whether the tool "
            f"acted is unknown and server {server_name!r} does not deduplicate by key, so the "
            "step is not repeated (set dedupes_by_key only for servers that honour "
            f"_meta[{IDEMPOTENCY_META!r}])",
            retryable=False,
            details={"reason": "effect_unknown"},
        )

    def destinations(args: McpArguments) -> Sequence[Destination]:
        found = [url_destination(server.url)] if server.url else []
        found.extend(url_destination(u) for u in _urls(args.arguments()))
        return found

    def facts(tenant: str) -> Mapping[str, JsonValue]:
        return {"mcp": server_facts(store, tenant, server_name, tool_name)}

    return Operation(
        name=name,
        description=f"[MCP {server_name}] {pin.description}"[:2000],
        args_model=args_model,
        result_model=McpResult,
        run=run,
        side_effect="external",
        risk="high",
        idempotency="key",
        scopes=(f"mcp:{server_name}",),
        timeout_seconds=server.timeout_seconds + 15.0,
        max_attempts=3,
        reconcile=reconcile,
        tags=("mcp", f"tenant:{tenant}"),
        destinations=destinations,
        step_facts=facts,
    )


def server_facts(store: McpConfigStore, tenant: str, server_name: str, tool_name: str) -> JsonValue:
    """``input.step.mcp``: the server as this tenant configured it, and the pinned hash.

    None when the tenant has no such server (the policy denies). Read fresh for each
    decision, so a refresh or removal counts at once.
    """
    server = store.server(tenant, server_name)
    if server is None:
        return None
    pin = server.tools.get(tool_name)
    return {
        "server": server_name,
        "tool": tool_name,
        **server.identity(),
        "tool_hash": pin.hash if pin is not None else None,
        "pending_change": tool_name in server.pending or pin is None,
    }


async def call_tool(
    ctx: OperationContext,
    store: McpConfigStore,
    server_name: str,
    tool_name: str,
    arguments: dict[str, Any],
) -> McpResult:
    server = store.server(ctx.tenant, server_name)
    pin = server.tools.get(tool_name) if server is not None else None
    if server is None or pin is None or tool_name in server.pending:
        raise AdapterError(
            f"MCP tool {tool_name!r} of server {server_name!r} is not pinned for tenant "
            f"{ctx.tenant}; review it with `stead mcp refresh {server_name} --accept`",
            retryable=False,
            details={"reason": "mcp_tool_not_pinned"},
        )

    async def resolve(ref: str, destination: Destination | None) -> SecretStr:
        return await resolve_secret(ctx, ref, adapter="mcp", destination=destination)

    env, headers, secrets = await resolved_values(server, resolve)
    try:
        async with connected(server, env, headers) as client:
            live = {str(t["name"]): t for t in await list_tool_definitions(client)}
            current = live.get(tool_name)
            if current is None or tool_hash(current) != pin.hash:
                await _audit_change(ctx, server_name, tool_name, pin, current)
                raise AdapterError(
                    f"MCP tool {tool_name!r} of server {server_name!r} changed since it was "
                    f"pinned; nothing was called. Review it with `stead mcp refresh "
                    f"{server_name} --accept`",
                    retryable=False,
                    details={"reason": "mcp_tool_changed", "pinned": pin.hash},
                )
            meta = cast(RequestParamsMeta, {IDEMPOTENCY_META: ctx.idempotency_key})
            result = await client.call_tool(tool_name, arguments, meta=meta)
    except (TimeoutError, MCPError) as exc:
        if isinstance(exc, MCPError) and exc.code != REQUEST_TIMEOUT:
            raise AdapterError(
                f"MCP server {server_name!r} refused {tool_name}: "
                f"{redact(str(exc), *secrets)[:_ERROR_TEXT]}",
                retryable=False,
                details={"reason": "mcp_error"},
            ) from None
        raise AdapterError(
            f"MCP server {server_name!r} did not answer {tool_name} in "
            f"{server.timeout_seconds:g} s; whether it acted is unknown, so the step is not "
            "repeated",
            retryable=False,
            details={"reason": "mcp_timeout"},
        ) from None
    except McpUnreachable as exc:
        raise AdapterError(
            f"MCP server {server_name!r} could not be reached: {redact(str(exc), *secrets)}",
            retryable=True,
            details={"reason": "mcp_unreachable"},
        ) from None
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    content = redact_json(dumped.get("content", []), *secrets)
    structured = redact_json(dumped.get("structuredContent"), *secrets)
    if result.is_error:
        raise AdapterError(
            f"MCP tool {tool_name} reported an error: {_text(content)[:_ERROR_TEXT]}",
            retryable=False,
            details={"reason": "mcp_is_error"},
        )
    if pin.output_schema is not None:
        _check_output(tool_name, pin.output_schema, structured)
    out = McpResult(
        content=content if isinstance(content, list) else [],
        structured=structured,
    )
    return await _inline_or_stored(ctx, out)


def _check_output(tool: str, schema: dict[str, JsonValue], structured: JsonValue) -> None:
    if structured is None:
        raise AdapterError(
            f"MCP tool {tool} declares an output schema but returned no structured content",
            retryable=False,
            details={"reason": "mcp_output_invalid"},
        )
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(structured)
    )
    if error is not None:
        raise AdapterError(
            f"MCP tool {tool} returned structured content outside its pinned output schema: "
            f"{error.message[:_ERROR_TEXT]}",
            retryable=False,
            details={"reason": "mcp_output_invalid"},
        )


async def _inline_or_stored(ctx: OperationContext, out: McpResult) -> McpResult:
    """A large result goes to the tenant's ``records`` (``records.get`` reads it back)."""
    body = json.dumps(out.model_dump(mode="json"), separators=(",", ":"), sort_keys=True)
    if len(body.encode()) <= MAX_INLINE_BYTES:
        return out
    pool = getattr(ctx.resources, "pool", None)
    if pool is None:
        raise AdapterError(
            f"the MCP result is {len(body)} bytes, too large for history, and this worker "
            "has no database pool to store it",
            retryable=False,
            details={"reason": "mcp_result_too_large"},
        )
    key = "mcp-result/" + hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()
    async with tenant_transaction(pool, ctx.tenant) as conn:
        await conn.execute(
            "INSERT INTO records (tenant, key, value, version, idempotency_key)"
            " VALUES ($1, $2, $3::text::jsonb, 1, $4) ON CONFLICT DO NOTHING",
            ctx.tenant,
            key,
            body,
            f"{ctx.idempotency_key}#mcp-result",
        )
    digest = hashlib.sha256(body.encode()).hexdigest()
    return McpResult(stored={"record": key, "sha256": digest, "bytes": len(body.encode())})


async def _audit_change(
    ctx: OperationContext,
    server_name: str,
    tool_name: str,
    pin: PinnedTool,
    current: dict[str, JsonValue] | None,
) -> None:
    pool = getattr(ctx.resources, "pool", None)
    if pool is None:
        return
    async with tenant_transaction(pool, ctx.tenant) as conn:
        await append_event(
            conn,
            AuditEvent(
                tenant=ctx.tenant,
                workflow_id=ctx.workflow_id,
                step_id=ctx.step_id,
                kind="mcp_tool_changed",
                actor="system:stead",
                data={
                    "server": server_name,
                    "tool": tool_name,
                    "pinned": pin.hash,
                    "listed": tool_hash(current) if current is not None else None,
                },
            ),
        )


def _urls(value: object) -> list[str]:
    """Every http(s) URL among the argument values: where a fetch-like tool will go."""
    if isinstance(value, str):
        text = value.strip()
        return [text] if urlsplit(text).scheme.lower() in ("http", "https") else []
    if isinstance(value, dict):
        return [u for item in value.values() for u in _urls(item)]
    if isinstance(value, list):
        return [u for item in value for u in _urls(item)]
    return []


def _text(content: JsonValue) -> str:
    if not isinstance(content, list):
        return ""
    return " ".join(
        str(block.get("text", "")) for block in content if isinstance(block, dict)
    ).strip()
