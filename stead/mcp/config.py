"""Which MCP servers a tenant uses, and the tool definitions an operator pinned.

One JSON file per tenant, ``$STEAD_MCP_DIR/<tenant>.json`` (default ``$STEAD_HOME/mcp``),
written by ``stead mcp add|refresh|remove`` and read by workers on every MCP step. A
file, not workflow input: what a server may run and which tool definitions were
reviewed are operator settings, and workers read them inside activities only.
Credentials are never in it: ``env`` and ``headers`` values that are secrets are
``secret://<tenant>/mcp/<name>`` references, resolved on the worker per call.

A server's name is unique across tenants, because it names catalog operations
(``mcp.<server>.<tool>``) that every worker shares.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, JsonValue, ValidationError, model_validator

from stead.contracts.base import Closed
from stead.contracts.run import sha256_hex
from stead.errors import ConfigError

SERVER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TOOL_SEGMENT = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class PinnedTool(Closed):
    """One tool as ``tools/list`` described it when an operator accepted it."""

    definition: dict[str, JsonValue]
    hash: str

    @classmethod
    def of(cls, definition: dict[str, JsonValue]) -> PinnedTool:
        return cls(definition=definition, hash=tool_hash(definition))

    @property
    def name(self) -> str:
        return str(self.definition["name"])

    @property
    def description(self) -> str:
        return str(self.definition.get("description") or self.definition.get("title") or "")

    @property
    def input_schema(self) -> dict[str, JsonValue]:
        schema = self.definition.get("inputSchema")
        return schema if isinstance(schema, dict) else {"type": "object"}

    @property
    def output_schema(self) -> dict[str, JsonValue] | None:
        schema = self.definition.get("outputSchema")
        return schema if isinstance(schema, dict) else None


class McpServerConfig(Closed):
    """How to reach one server: a stdio command run on the worker, or a Streamable HTTP URL."""

    transport: Literal["stdio", "http"]
    command: tuple[str, ...] = ()
    url: str | None = None
    # Environment of a stdio server (only these, plus PATH/HOME-like basics the SDK
    # passes) and headers of an HTTP server; a value may be a secret:// reference.
    env: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # The server honours _meta["io.stead/idempotency_key"], so a call repeated after a
    # worker died mid-call has no second effect. Without it such a step fails instead.
    dedupes_by_key: bool = False
    tools: dict[str, PinnedTool] = Field(default_factory=dict)
    # Definitions the server now lists that differ from (or add to) the pins: refused
    # until `stead mcp refresh --accept` moves them into ``tools``.
    pending: dict[str, PinnedTool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _reachable(self) -> McpServerConfig:
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio server needs a command")
        if self.transport == "http" and not (self.url or "").startswith(("http://", "https://")):
            raise ValueError("an http server needs an http(s):// url")
        return self

    def identity(self) -> dict[str, JsonValue]:
        """What policy sees of the server: where it runs, never a credential value."""
        if self.transport == "http":
            return {"transport": "http", "url": self.url}
        return {"transport": "stdio", "command": list(self.command)}


class McpTenantConfig(Closed):
    servers: dict[str, McpServerConfig] = Field(default_factory=dict)


def tool_hash(definition: dict[str, JsonValue]) -> str:
    """The pin: every field the server sent (name, description, schemas, annotations)."""
    return sha256_hex(definition)


def tool_segment(tool_name: str) -> str | None:
    """``get-current_Time`` -> ``get_current_time``; None when no operation name fits."""
    segment = tool_name.replace("-", "_").lower()
    return segment if TOOL_SEGMENT.match(segment) else None


def operation_name(server: str, tool_name: str) -> str | None:
    segment = tool_segment(tool_name)
    return f"mcp.{server}.{segment}" if segment is not None else None


class McpConfigStore:
    """The per-tenant files under one directory; every write is atomic (rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, tenant: str) -> Path:
        if not _TENANT.match(tenant):
            raise ConfigError(f"tenant {tenant!r} is not a valid tenant name")
        return self.root / f"{tenant}.json"

    def tenants(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.json"))

    def load(self, tenant: str) -> McpTenantConfig:
        path = self.path(tenant)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return McpTenantConfig()
        try:
            return McpTenantConfig.model_validate_json(text)
        except ValidationError as exc:
            raise ConfigError(
                f"{path} is not a valid MCP configuration ({exc.error_count()} errors: "
                f"{exc.errors()[0]['msg']}); fix it or remove it with `stead mcp remove`"
            ) from None

    def server(self, tenant: str, name: str) -> McpServerConfig | None:
        return self.load(tenant).servers.get(name)

    def owner(self, name: str) -> str | None:
        """The tenant that configured server ``name``, if any."""
        for tenant in self.tenants():
            if name in self.load(tenant).servers:
                return tenant
        return None

    def save(self, tenant: str, config: McpTenantConfig) -> None:
        path = self.path(tenant)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{tenant}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(config.model_dump(mode="json"), out, indent=2, sort_keys=True)
                out.write("\n")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
