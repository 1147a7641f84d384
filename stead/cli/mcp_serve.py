"""``stead mcp serve``: Stead as an MCP server (Streamable HTTP), for MCP clients and agents.

Every request carries a principal token (``Authorization: Bearer``, from ``stead
principal token``), verified with the identity public key like the CLI's
``--token-file``: the run a client starts is attributed to the token's principal and
tenant, the bare token never reaches Temporal (each start and each approval gets a copy
narrowed to it, as ``stead run`` and ``stead approve`` do), and a client sees only its
own tenant's runs and approvals. Tools: ``start_playbook``, ``run_status``,
``pending_approvals``, ``approve``, and one ``playbook_<name>`` per playbook with the
playbook's inputs as its schema. The SDK's MCP server has no task support, so a long
run is followed by polling ``run_status`` with the id a start returns.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, JsonValue
from temporalio.client import Client

from stead.capability.authority import utcnow
from stead.contracts.run import RunRequest, RunStatus
from stead.contracts.search_attributes import start_search_attributes
from stead.errors import SteadError
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.tokens import read_claims
from stead.planning.playbooks import PlaybookInput, available_playbooks, load_playbook
from stead.settings import Settings

_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
    "array": list[Any],
}


class PrincipalTokenVerifier:
    """The SDK's bearer check, with Stead's principal tokens (signature and expiry)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def verify_token(self, token: str) -> AccessToken | None:
        from stead.cli.starts import identity_public_key

        try:
            claims = read_claims(token, identity_public_key(self._settings))
        except (PrincipalTokenRefused, SteadError):
            return None
        if claims.expires_at <= utcnow():
            return None
        return AccessToken(
            token=token,
            client_id=claims.principal,
            scopes=[],
            expires_at=int(claims.expires_at.timestamp()),
            subject=claims.principal,
            claims={"tenant": claims.tenant},
        )


class SteadMcp:
    """The tools, bound to one settings object and one (lazily connected) Temporal client."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self._client: Client | None = None
        self.server: MCPServer[Any] = MCPServer(
            "stead",
            instructions="Start governed Stead runs, follow them, and approve their steps.",
            token_verifier=PrincipalTokenVerifier(settings),
            auth=AuthSettings(issuer_url=url, resource_server_url=None),
        )
        self.server.add_tool(self.start_playbook, name="start_playbook")
        self.server.add_tool(self.run_status, name="run_status")
        self.server.add_tool(self.pending_approvals, name="pending_approvals")
        self.server.add_tool(self.approve, name="approve")
        for name in available_playbooks(settings.playbook_dir):
            self._add_playbook_tool(name)

    async def client(self) -> Client:
        if self._client is None:
            from stead.cli._common import cli_client

            self._client = await cli_client(self.settings)
        return self._client

    async def start_playbook(
        self,
        playbook: Annotated[str, Field(description="The playbook's name.")],
        inputs: Annotated[dict[str, Any] | None, Field(description="Its inputs.")] = None,
    ) -> dict[str, Any]:
        """Start a governed run of a playbook as the authenticated principal; returns its id.

        Follow it with run_status (there is no MCP task: poll)."""
        return await self._start(playbook, inputs or {})

    async def run_status(
        self, run_id: Annotated[str, Field(description="The id start_playbook returned.")]
    ) -> dict[str, Any]:
        """Where a run is: its status, steps and pending approvals (your tenant's runs only)."""
        from stead.cli.runs import _status, summarize

        tenant, _, _ = _caller()
        status = await _guard(_status(await self.client(), run_id))
        if status.tenant != tenant:
            raise ToolError(f"run {run_id} not found")
        return summarize(status)

    async def pending_approvals(self) -> list[dict[str, Any]]:
        """Steps of your tenant's runs that wait for a human."""
        from stead.cli.runs import list_pending

        tenant, _, _ = _caller()
        items = await _guard(list_pending(await self.client(), tenant))
        return [p.model_dump(mode="json") for p in items]

    async def approve(
        self,
        run_id: str,
        step_id: str,
        verdict: Literal["approve", "reject"] = "approve",
        comment: str = "",
    ) -> dict[str, Any]:
        """Approve or reject a pending step as the authenticated principal, with the same
        checks as `stead approve` (the token is narrowed to this one approval)."""
        from stead.cli.runs import submit_approval

        tenant, principal, token = _caller()
        status = await self.run_status(run_id)
        if status.get("tenant") != tenant:
            raise ToolError(f"run {run_id} not found")
        outcome: dict[str, Any] = await _guard(
            submit_approval(
                await self.client(),
                self.settings,
                run_id=run_id,
                step_id=step_id,
                principal=principal,
                verdict=verdict,
                comment=comment,
                raw_token=token,
            )
        )
        return outcome

    async def _start(self, playbook: str, inputs: dict[str, JsonValue]) -> dict[str, Any]:
        from adapters.registry import worker_catalog
        from stead.cli.starts import narrow_to_start
        from stead.planning.preflight import preflight

        tenant, principal, token = _caller()
        workflow_id = f"run-{tenant}-{uuid.uuid4().hex[:12]}"
        try:
            request = RunRequest(
                tenant=tenant, principal=principal, playbook=playbook, inputs=inputs
            )
            preflight(request, self.settings, catalog=worker_catalog(self.settings))
            start_token = narrow_to_start(self.settings, token, workflow_id, request)
        except (SteadError, ValueError) as exc:
            raise ToolError(str(exc)) from None
        from stead.contracts.run import RunInput

        await (await self.client()).start_workflow(
            "stead.run",
            RunInput(request=request, start_token=start_token),
            id=workflow_id,
            task_queue=self.settings.task_queue,
            result_type=RunStatus,
            search_attributes=start_search_attributes(request),
        )
        return {"run_id": workflow_id, "tenant": tenant, "principal": principal}

    def _add_playbook_tool(self, name: str) -> None:
        playbook = load_playbook(name, self.settings.playbook_dir)
        fn = _playbook_function(playbook.inputs, lambda inputs: self._start(name, inputs))
        tool = "playbook_" + name.replace("-", "_")
        self.server.add_tool(
            fn, name=tool, description=playbook.description or f"Start playbook {name}."
        )


def _playbook_function(
    inputs: dict[str, PlaybookInput], start: Callable[[dict[str, JsonValue]], Any]
) -> Callable[..., Any]:
    """A function whose signature is the playbook's inputs, so the SDK derives the schema."""

    async def run_playbook(**kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = await start({k: v for k, v in kwargs.items() if v is not None})
        return result

    params = []
    for key, spec in inputs.items():
        kind = _TYPES.get(spec.type, Any)
        annotation = Annotated[kind, Field(description=spec.description)]  # type: ignore[valid-type]
        if spec.required:
            params.append(
                inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
            )
        else:
            params.append(
                inspect.Parameter(
                    key,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Annotated[kind | None, Field(description=spec.description)],
                    default=spec.default,
                )
            )
    run_playbook.__signature__ = inspect.Signature(params, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    return run_playbook


def _caller() -> tuple[str, str, str]:
    """(tenant, principal, bare token) of the request; the SDK refused it if absent."""
    access = get_access_token()
    if access is None or not access.claims or "tenant" not in access.claims:
        raise ToolError("unauthenticated: send a principal token as a bearer token")
    return str(access.claims["tenant"]), access.client_id, access.token


async def _guard(awaitable: Any) -> Any:
    """A Stead error becomes the tool's error (isError), one line saying why."""
    try:
        return await awaitable
    except SteadError as exc:
        raise ToolError(exc.message) from None
