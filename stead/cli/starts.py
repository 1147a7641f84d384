"""Start tokens on the client side: read a principal token, narrow it to one start.

Shared by ``stead run``, ``stead webhook serve`` and the demos. The bare token never
leaves this process: what goes to Temporal is the copy narrowed to one workflow id
and one request (``stead.identity.starts``), useless for any other start.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biscuit_auth import PublicKey
from temporalio.client import Client, WorkflowHandle

from stead.capability.authority import utcnow
from stead.contracts.run import RunInput, RunRequest, RunStatus, start_digest
from stead.contracts.search_attributes import start_search_attributes
from stead.errors import ConfigError
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.starts import StartScope, scope_to_start
from stead.identity.tokens import PrincipalClaims, read_claims
from stead.keys import IDENTITY, key_store
from stead.runs.fairness import run_priority
from stead.settings import Settings


def read_token_file(path: Path, what: str = "--token-file") -> str:
    if not path.is_file():
        raise ConfigError(
            f"{what} {path} does not exist; write the output of `stead principal token` there"
        )
    token = path.read_text().strip()
    if not token:
        raise ConfigError(
            f"{what} {path} is empty; write the output of `stead principal token` there"
        )
    return token


def start_token_input(cfg: Settings, token_file: Path | None) -> str | None:
    """The starter's principal token: --token-file, else STEAD_TOKEN_FILE, else STEAD_TOKEN."""
    if token_file is not None:
        return read_token_file(token_file)
    if cfg.token_file is not None:
        return read_token_file(cfg.token_file, "STEAD_TOKEN_FILE")
    if cfg.token is not None:
        return cfg.token.get_secret_value().strip() or None
    return None


def identity_public_key(cfg: Settings) -> PublicKey:
    store = key_store(cfg)
    public = store.public(IDENTITY)
    if public is None:
        raise ConfigError(
            f"no identity public key at {store.public_path(IDENTITY)}; copy identity.pub there "
            "(`stead keys show` prints it where the keys were made)"
        )
    return public


def token_claims(cfg: Settings, token: str) -> PrincipalClaims:
    """Who the token says it is (signature checked; the worker checks the rest)."""
    try:
        return read_claims(token, identity_public_key(cfg))
    except PrincipalTokenRefused as exc:
        raise ConfigError(f"the principal token cannot be used: {exc.message}") from None


def starter(cfg: Settings, tenant: str, claimed: str | None, token: str | None) -> str:
    """The principal who starts: the token's, which ``--as`` may repeat but not contradict."""
    if token is None:
        if claimed is None:
            raise ConfigError("say who starts the run: --token-file (or STEAD_TOKEN_FILE), or --as")
        return claimed
    claims = token_claims(cfg, token)
    if claims.expires_at <= utcnow():
        raise ConfigError(
            f"the principal token of {claims.principal} expired at "
            f"{claims.expires_at.isoformat()}; get a new one with `stead principal token "
            f"{claims.principal} --tenant {claims.tenant}`"
        )
    if claims.tenant != tenant:
        raise ConfigError(
            f"the principal token is for tenant {claims.tenant}, not {tenant}; use that "
            "tenant's token or --tenant " + claims.tenant
        )
    if claimed is not None and claimed != claims.principal:
        raise ConfigError(
            f"--as {claimed} does not match the token's principal {claims.principal}; drop --as "
            "or use that principal's token"
        )
    return claims.principal


def narrow_to_start(cfg: Settings, token: str, workflow_id: str, request: RunRequest) -> str:
    """``token`` narrowed to this one start: the only copy that enters history."""
    scope = StartScope(workflow_id=workflow_id, request_digest=start_digest(request))
    try:
        return scope_to_start(token, identity_public_key(cfg), scope)
    except PrincipalTokenRefused as exc:
        raise ConfigError(f"the principal token cannot be used: {exc.message}") from None


@dataclass(frozen=True)
class StartCredential:
    """A principal token held by a long-lived starter (the webhook, the demos).

    The bare token stays in this process; ``narrow`` makes the per-start copy.
    """

    token: str
    public_key: PublicKey
    tenant: str
    principal: str

    @classmethod
    def load(cls, cfg: Settings, token: str) -> StartCredential:
        claims = token_claims(cfg, token)
        return cls(token, identity_public_key(cfg), claims.tenant, claims.principal)

    def narrow(self, workflow_id: str, request: RunRequest) -> str:
        scope = StartScope(workflow_id=workflow_id, request_digest=start_digest(request))
        return scope_to_start(self.token, self.public_key, scope)


async def start_governed(
    client: Client,
    task_queue: str,
    request: RunRequest,
    credential: StartCredential | None,
    *,
    workflow_id: str | None = None,
    fairness_weights: Mapping[str, float] | None = None,
    **options: Any,
) -> WorkflowHandle[Any, RunStatus]:
    """Start ``stead.run`` with the credential narrowed to this start (if one is held).

    The run's tenant is its fairness key (``stead.runs.fairness``); a caller's own
    ``priority=`` option overrides it.
    """
    run_id = workflow_id or f"run-{request.tenant}-{uuid.uuid4().hex[:12]}"
    token = None if credential is None else credential.narrow(run_id, request)
    options.setdefault("priority", run_priority(request.tenant, fairness_weights or {}))
    options.setdefault("search_attributes", start_search_attributes(request))
    return await client.start_workflow(
        "stead.run",
        RunInput(request=request, start_token=token),
        id=run_id,
        task_queue=task_queue,
        result_type=RunStatus,
        **options,
    )
