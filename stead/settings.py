"""Stead's one settings class.

Nothing else in Stead reads ``os.environ``: every component takes a ``Settings``.
Values come from ``STEAD_*`` environment variables, an optional ``.env`` file and,
for the embedded stack, ``$STEAD_HOME/stack.json`` (written by ``stead dev up``),
in that order of precedence: an explicit variable always wins over the stack file,
so the same worker binary runs against the embedded stack or a real cluster.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stead.contracts.base import Closed
from stead.errors import ConfigError

STACK_FILE = "stack.json"


class RateLimitSetting(Closed):
    """An operator's per-tenant limit for an operation, overriding what it declares."""

    per_minute: int = Field(gt=0)
    burst: int | None = Field(default=None, gt=0, description="Bucket size; default per_minute.")


class Settings(BaseSettings):
    """Where Stead finds Temporal, Postgres, OPA and Qdrant, and where it keeps its data."""

    model_config = SettingsConfigDict(
        env_prefix="STEAD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(default=Path(".stead"), description="Data dir for the embedded stack.")
    temporal_address: str = Field(
        default="localhost:7233", description="Temporal frontend host:port."
    )
    temporal_namespace: str = Field(default="default", description="Temporal namespace.")
    task_queue: str = Field(default="stead", description="Task queue the worker polls.")
    # Worker Versioning (stead/temporal/versioning.py). Off until a build id is set: a
    # versioned worker gets no task until its build is made current, which a single
    # `stead dev up` worker or a test worker has no reason to wait for.
    worker_deployment: str = Field(
        default="stead",
        pattern=r"^[A-Za-z0-9_-]{1,200}$",
        description="Worker Deployment the worker's build belongs to (versioning on with a "
        "build id).",
    )
    worker_build_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.+-]{1,200}$",
        description="This worker's build id (e.g. the image tag or git sha); set: Worker "
        "Versioning on.",
    )
    # Each cached run holds its state and sandbox in the worker (~0.45 MB measured in
    # bench/parked.py); runs beyond the cache, e.g. thousands parked on approval, cost
    # the worker nothing and replay from history when they wake. Bounds worker RSS.
    max_cached_workflows: int = Field(
        default=1000,
        ge=0,
        description="Workflow runs a worker keeps in memory (0: none, no sticky queue).",
    )
    postgres_dsn: str = Field(
        default="postgresql://stead_app@127.0.0.1:5432/stead",
        description="DSN of the app role (not the table owner).",
    )
    postgres_admin_dsn: str | None = Field(
        default=None, description="DSN of the owner role, used to apply migrations."
    )
    opa_url: str = Field(default="http://127.0.0.1:8181", description="OPA REST API base URL.")
    opa_bin: Path | None = Field(default=None, description="Path to the opa binary.")
    opa_token: SecretStr | None = Field(
        default=None,
        description="OPA decision token workers and the CLI present (dev: $STEAD_HOME/opa).",
    )
    opa_admin_token: SecretStr | None = Field(
        default=None,
        description="OPA admin token for data and policy changes (stead policy push, demos).",
    )
    temporal_api_key: SecretStr | None = Field(
        default=None,
        description="API key or JWT presented to Temporal as a bearer token; or TEMPORAL_API_KEY.",
    )
    temporal_tls_cert: Path | None = Field(
        default=None,
        description="Client certificate (PEM) for mTLS to Temporal; or "
        "TEMPORAL_TLS_CLIENT_CERT_PATH.",
    )
    temporal_tls_key: Path | None = Field(
        default=None,
        description="Its private key (PEM); or TEMPORAL_TLS_CLIENT_KEY_PATH.",
    )
    temporal_tls_ca: Path | None = Field(
        default=None,
        description="CA (PEM) that signed Temporal's server certificate; or "
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH.",
    )
    temporal_tls_cert_data: SecretStr | None = Field(
        default=None, description="The client certificate inline (PEM); or *_CLIENT_CERT_DATA."
    )
    temporal_tls_key_data: SecretStr | None = Field(
        default=None, description="The client key inline (PEM); or TEMPORAL_TLS_CLIENT_KEY_DATA."
    )
    temporal_tls_ca_data: SecretStr | None = Field(
        default=None, description="The server CA inline (PEM); or *_SERVER_CA_CERT_DATA."
    )
    temporal_tls_server_name: str | None = Field(
        default=None,
        description="Server name (SNI) to verify Temporal's certificate against; or "
        "TEMPORAL_TLS_SERVER_NAME.",
    )
    temporal_tls: bool | None = Field(
        default=None,
        description="TLS to Temporal; unset: on with an API key or the TLS files, else off; or "
        "TEMPORAL_TLS.",
    )
    temporal_grpc_meta: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="gRPC headers sent with every Temporal call; or TEMPORAL_GRPC_META_<NAME>.",
    )
    temporal_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to wait for Temporal to answer a connect before giving up.",
    )
    temporal_outage_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Seconds `stead run --wait` keeps reconnecting while Temporal is down.",
    )
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server URL; unset means the embedded engine."
    )
    qdrant_api_key: SecretStr | None = Field(
        default=None, description="API key of the Qdrant server (its QDRANT__SERVICE__API_KEY)."
    )
    qdrant_path: Path | None = Field(
        default=None, description="Embedded Qdrant shard dir (default $STEAD_HOME/qdrant)."
    )
    policy_dir: Path = Field(default=Path("policies"), description="Rego policies OPA loads.")
    playbook_dir: Path = Field(default=Path("playbooks"), description="Playbook YAML files.")
    planner_model: str | None = Field(default=None, description="litellm model for the planner.")
    planner_api_base: str | None = Field(default=None, description="Planner API base URL.")
    planner_api_key: SecretStr | None = Field(default=None, description="Planner API key.")
    planner_timeout_seconds: float = Field(default=60.0, gt=0, description="One planner call.")
    embedding_model: str | None = Field(
        default=None, description="litellm embedding model; unset means the bundled MiniLM."
    )
    embedding_dim: int | None = Field(default=None, ge=1, description="Its vector size.")
    embedding_api_base: str | None = Field(default=None, description="Embedding API base URL.")
    embedding_api_key: SecretStr | None = Field(default=None, description="Embedding API key.")
    memory_schedules: bool = Field(
        default=False,
        description="Run memory's reindex and purge on Temporal Schedules (one per namespace).",
    )
    memory_reindex_every_seconds: int = Field(default=600, ge=10, description="Reindex schedule.")
    memory_purge_every_seconds: int = Field(default=3600, ge=60, description="TTL purge schedule.")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Worker /metrics port; 0 off.")
    temporal_dev_dynamic_config: dict[str, str] = Field(
        default_factory=dict,
        description="Dynamic config of the embedded dev server (`stead dev up`), key to value,"
        " over Stead's (stead.devstack.temporal.DYNAMIC_CONFIG); JSON.",
    )
    temporal_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Temporal SDK metrics port; unset: metrics_port + 1 when that is on; 0 off.",
    )
    log_format: Literal["json", "text"] = Field(default="json", description="Worker log lines.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Worker log level."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector base URL for traces (e.g. http://otel:4318); unset: off.",
    )
    secret_backends: tuple[Literal["env", "files"], ...] = Field(
        default=("env", "files"), description="Where workers resolve secret:// refs, in order."
    )
    secret_dir: Path | None = Field(
        default=None, description="Secret files <tenant>/<adapter>/<name> ($STEAD_HOME/secrets)."
    )
    codec_keyring: Path | None = Field(
        default=None, description="AES-GCM keyring JSON file; when set, payloads are encrypted."
    )
    codec_active_key: str | None = Field(
        default=None, description="Key id to encrypt with, overriding the keyring's (rollouts)."
    )
    codec_server_url: str | None = Field(
        default=None, description="Codec server the Temporal UI decodes payloads with."
    )
    codec_server_token: SecretStr | None = Field(
        default=None, description="Bearer token operators present to `stead codec-server`."
    )
    codec_cors_origins: tuple[str, ...] = Field(
        default=(), description="Browser origins (the Temporal UI) the codec server answers."
    )
    # Adapters (adapters/README.md). Maps are JSON in the environment, e.g.
    # STEAD_ADAPTER_QUEUES='{"email": "edge-email"}'.
    adapter_queues: dict[str, str] = Field(
        default_factory=dict,
        description="Adapter -> task queue of the edge worker that runs it (routing).",
    )
    rate_limits: dict[str, RateLimitSetting] = Field(
        default_factory=dict,
        description='Per-tenant limit overrides by "<operation>" or "<tenant>/<operation>".',
    )
    files_root: Path | None = Field(
        default=None, description="files.* sandbox root, one dir per tenant ($STEAD_HOME/files)."
    )
    mcp_dir: Path | None = Field(
        default=None,
        description="MCP servers per tenant, <tenant>.json with pinned tools ($STEAD_HOME/mcp).",
    )
    sql_databases: dict[str, dict[str, SecretStr]] = Field(
        default_factory=dict,
        description="sql.*: tenant -> database name -> DSN or secret:// reference to one.",
    )
    smtp_host: str | None = Field(default=None, description="email.send: SMTP relay host.")
    smtp_port: int = Field(default=587, ge=1, le=65535, description="email.send: SMTP port.")
    smtp_security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="email.send: STARTTLS, implicit TLS, or plain."
    )
    smtp_username: str | None = Field(default=None, description="email.send: SMTP login.")
    smtp_password: SecretStr | None = Field(default=None, description="email.send: SMTP password.")
    email_senders: dict[str, str] = Field(
        default_factory=dict, description="email.send: tenant -> From address."
    )
    email_default_sender: str | None = Field(
        default=None, description="email.send: From address for tenants without their own."
    )
    keys_dir: Path | None = Field(
        default=None,
        description="Capability and identity key pairs ($STEAD_HOME/keys); edges hold *.pub only.",
    )
    audit_anchor_dir: Path | None = Field(
        default=None,
        description="Where audit appenders write each tenant's keyed chain head"
        " ($STEAD_HOME/audit-anchors); every worker and `stead audit verify` must share it.",
    )
    principal_token: SecretStr | None = Field(
        default=None, description="Principal token `stead approve` presents for the approver."
    )
    token_file: Path | None = Field(
        default=None,
        description="File with the principal token `stead run` narrows to each start.",
    )
    token: SecretStr | None = Field(
        default=None, description="Principal token `stead run` narrows to each start."
    )
    webhook_token_file: Path | None = Field(
        default=None,
        description="File with the service principal's token `stead webhook serve` starts "
        "runs with.",
    )
    fairness_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Tenant -> fairness weight of its runs on the task queue (JSON; default 1).",
    )
    worker_max_activities: int | None = Field(
        default=None, ge=1, description="Activity tasks one worker runs at once; unset: SDK's."
    )
    # Workflow activations share one interpreter (one GIL): taking on the SDK's 100 tasks
    # at once, 50 new runs' sandboxes starve the event loop (steps, local activities,
    # heartbeats) until tasks overrun their 10 s timeout and are replayed, doubling the
    # worker's CPU per step; bounded, the backlog waits in Temporal, outside any timeout
    # (bench/README.md, "Worker CPU per step", issue 16).
    worker_max_workflow_tasks: int | None = Field(
        default=4, ge=1, description="Workflow tasks one worker runs at once (None: SDK's)."
    )
    plan_inline_max_steps: int = Field(
        default=500,
        ge=1,
        description="Plans with more steps are stored in Postgres and run window by window.",
    )

    @field_validator("temporal_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @field_validator("opa_token", "opa_admin_token", "temporal_api_key")
    @classmethod
    def _bearer(cls, value: SecretStr | None) -> SecretStr | None:
        # Sent in an HTTP/gRPC header: printable ASCII, no spaces. The value is never echoed.
        if value is not None:
            token = value.get_secret_value()
            if not token or not all("!" <= c <= "~" for c in token):
                raise ValueError("expected a bearer token: printable ASCII without spaces")
        return value

    @field_validator("fairness_weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        # Temporal clamps weights to [0.001, 1000]; refuse what it would silently change.
        for tenant, weight in value.items():
            if not 0.001 <= weight <= 1000:
                raise ValueError(f"fairness weight of {tenant} must be in [0.001, 1000]")
        return value

    @field_validator("postgres_dsn", "postgres_admin_dsn")
    @classmethod
    def _postgres_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"expected a postgresql:// DSN, got {value!r}")
        return value

    @field_validator("opa_url", "qdrant_url", "codec_server_url", "otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @cached_property
    def resolved_qdrant_path(self) -> Path:
        return self.qdrant_path or self.home / "qdrant"

    @property
    def resolved_temporal_metrics_port(self) -> int:
        """Where the Temporal SDK serves its own metrics; 0 when off."""
        if self.temporal_metrics_port is not None:
            return self.temporal_metrics_port
        return self.metrics_port + 1 if 0 < self.metrics_port < 65535 else 0

    @property
    def stack_file(self) -> Path:
        return self.home / STACK_FILE

    @property
    def resolved_keys_dir(self) -> Path:
        return self.keys_dir or self.home / "keys"

    @property
    def resolved_audit_anchor_dir(self) -> Path:
        return self.audit_anchor_dir or self.home / "audit-anchors"

    @property
    def resolved_mcp_dir(self) -> Path:
        return self.mcp_dir or self.home / "mcp"


SECRET_ENV_PREFIX = "STEAD_SECRET__"


def secret_environment() -> dict[str, SecretStr]:
    """The ``STEAD_SECRET__<TENANT>__<ADAPTER>__<NAME>`` variables, masked from the start.

    Not Settings fields: their names are data (which tenant, adapter, secret). The
    worker hands this snapshot to the environment secret backend, so this module stays
    the only reader of ``os.environ``.
    """
    return {k: SecretStr(v) for k, v in os.environ.items() if k.startswith(SECRET_ENV_PREFIX)}


def _stack_overrides(home: Path) -> dict[str, Any]:
    """Endpoints and OPA tokens of ``stead dev up``; empty when no embedded stack was started."""
    path = home / STACK_FILE
    if not path.exists():
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); run `stead dev down` then `stead dev up`"
        ) from None
    endpoints = recorded.get("endpoints", {})
    found = {key: value for key, value in endpoints.items() if value is not None}
    return {**found, **_stack_opa_tokens(home)}


def _stack_opa_tokens(home: Path) -> dict[str, str]:
    """The dev OPA's tokens from ``$STEAD_HOME/opa/tokens.json`` (stead.policy.authz)."""
    path = home / "opa" / "tokens.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); delete it and run `stead dev up` to make new tokens"
        ) from None
    pairs = (("opa_token", "decision"), ("opa_admin_token", "admin"))
    return {key: raw[role] for key, role in pairs if isinstance(raw.get(role), str)}


def temporal_environment() -> dict[str, str]:
    """The ``TEMPORAL_*`` variables: Temporal's own environment configuration.

    Handed to ``temporalio.envconfig`` explicitly (stead.temporal_profile) so this
    module stays the only reader of ``os.environ`` and tests can pass their own.
    """
    return {k: v for k, v in os.environ.items() if k.startswith("TEMPORAL_")}


def load_settings(**overrides: Any) -> Settings:
    """Build settings: explicit overrides > STEAD_* env/.env > Temporal's environment
    configuration (TEMPORAL_* over the temporal.toml profile) > stack.json > defaults.

    A bad value fails here, at start, with a message that names the variable.
    """
    # Imported here, not at the top: only load_settings needs temporalio.envconfig.
    from stead.temporal_profile import profile_settings

    try:
        base = Settings(**overrides)
        recorded = {
            **_stack_overrides(base.home),
            **profile_settings(temporal_environment()),
        }
        explicit = set(base.model_fields_set)
        fill = {key: value for key, value in recorded.items() if key not in explicit}
        if not fill:
            return base
        return Settings(**{**fill, **overrides})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        lines.append(f"STEAD_{field.upper()}: {error['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)
