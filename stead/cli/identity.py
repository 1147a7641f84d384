"""``stead tenant``, ``stead principal`` and ``stead keys``: the identity directory and its keys.

``stead principal token`` needs the identity *private* key, so it runs where an
administrator keeps ``identity.key``; approvers only need the token it prints and
``identity.pub`` (to scope the token to one approval before sending it).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.table import Table

from stead.capability.authority import utcnow
from stead.cli._common import console, fails_cleanly, print_json, settings
from stead.contracts.approval_token import ApprovalScope, narrowing_problem
from stead.contracts.cancel_token import cancel_narrowing_problem, cancel_scope
from stead.contracts.run import ApprovalInput, PendingApproval, Verdict
from stead.db.pool import create_pool, tenant_transaction
from stead.errors import ConfigError
from stead.identity import directory
from stead.identity.directory import Principal, Tenant
from stead.identity.errors import TenantUnknown
from stead.identity.tokens import (
    DEFAULT_TTL,
    MAX_TTL,
    PrincipalTokenIssuer,
    scope_to_approval,
    scope_to_cancel,
)
from stead.keys import ALL_KEYS, ALL_SECRETS, IDENTITY, KeyStore, key_store
from stead.settings import Settings

T = TypeVar("T")

tenant_app = typer.Typer(help="Tenants in the identity directory.", no_args_is_help=True)
principal_app = typer.Typer(
    help="Principals (user:, agent:, service:) of a tenant, their groups and their tokens.",
    no_args_is_help=True,
)
keys_app = typer.Typer(help="The capability and identity key pairs.", no_args_is_help=True)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``8h`` or ``7d``."""
    match = _TTL.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"--ttl {text!r} is not a duration like 30m, 8h or 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _with_db(work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def go() -> T:
        pool = await create_pool(settings().postgres_dsn, min_size=1, max_size=2)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(go())


def _in_tenant(tenant: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    directory.check_tenant_id(tenant)

    async def go(pool: asyncpg.Pool) -> T:
        async with tenant_transaction(pool, tenant) as conn:
            if await directory.get_tenant(conn, tenant) is None:
                raise TenantUnknown(
                    f"tenant {tenant} is not in the directory; create it with "
                    f"`stead tenant create {tenant}`"
                )
            return await work(conn)

    return _with_db(go)


# ----------------------------------------------------------------- tenant


@tenant_app.command("create")
@fails_cleanly
def tenant_create(
    tenant: Annotated[str, typer.Argument(help="Tenant id, e.g. acme.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Add a tenant to the directory: from then on only its principals may start runs or approve."""

    directory.check_tenant_id(tenant)

    async def go(pool: asyncpg.Pool) -> Tenant:
        async with tenant_transaction(pool, tenant) as conn:
            return await directory.create_tenant(conn, tenant, name)

    created = _with_db(go)
    if json_out:
        print_json(created.model_dump(mode="json"))
    else:
        console.print(f"created tenant [bold]{created.id}[/]")


@tenant_app.command("list")
@fails_cleanly
def tenant_list(json_out: JsonOption = False) -> None:
    """Tenants in the directory."""

    async def go(pool: asyncpg.Pool) -> list[Tenant]:
        # Ids across tenants, then each row inside its own tenant: the app role never
        # reads another tenant's row as a whole.
        async with pool.acquire() as conn:
            ids = await directory.tenant_ids(conn)
        found = []
        for tenant in ids:
            async with tenant_transaction(pool, tenant) as conn:
                row = await directory.get_tenant(conn, tenant)
            if row is not None:
                found.append(row)
        return found

    tenants = _with_db(go)
    if json_out:
        print_json([t.model_dump(mode="json") for t in tenants])
        return
    table = Table(title="Tenants")
    for col in ("id", "name", "created"):
        table.add_column(col)
    for t in tenants:
        table.add_row(t.id, t.display_name, t.created_at.isoformat())
    console.print(table)


# -------------------------------------------------------------- principal


def _print_principal(principal: Principal, json_out: bool, verb: str) -> None:
    if json_out:
        print_json(principal.model_dump(mode="json"))
        return
    state = "[red]disabled[/]" if principal.disabled else "[green]enabled[/]"
    groups = ", ".join(principal.groups) or "no groups"
    console.print(f"{verb} [bold]{principal.id}[/] in {principal.tenant}: {state}, {groups}")


@principal_app.command("add")
@fails_cleanly
def principal_add(
    principal: Annotated[str, typer.Argument(help="user:<name>, agent:<name> or service:<name>.")],
    tenant: TenantOption,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Add a principal to a tenant's directory."""
    added = _in_tenant(tenant, lambda conn: directory.add_principal(conn, tenant, principal, name))
    _print_principal(added, json_out, "added")


@principal_app.command("list")
@fails_cleanly
def principal_list(tenant: TenantOption, json_out: JsonOption = False) -> None:
    """A tenant's principals, whether they are enabled, and their groups."""
    found = _in_tenant(tenant, lambda conn: directory.list_principals(conn, tenant))
    if json_out:
        print_json([p.model_dump(mode="json") for p in found])
        return
    table = Table(title=f"Principals of {tenant}")
    for col in ("id", "kind", "name", "state", "groups"):
        table.add_column(col)
    for p in found:
        table.add_row(
            p.id,
            p.kind,
            p.display_name,
            "disabled" if p.disabled else "enabled",
            ", ".join(p.groups),
        )
    console.print(table)


@principal_app.command("disable")
@fails_cleanly
def principal_disable(principal: str, tenant: TenantOption, json_out: JsonOption = False) -> None:
    """Stop a principal starting runs or approving, and revoke every token issued to it so far."""
    changed = _in_tenant(tenant, lambda conn: directory.set_disabled(conn, tenant, principal, True))
    _print_principal(changed, json_out, "disabled")


@principal_app.command("enable")
@fails_cleanly
def principal_enable(principal: str, tenant: TenantOption, json_out: JsonOption = False) -> None:
    """Enable a principal again; tokens issued before it was disabled stay revoked."""
    changed = _in_tenant(
        tenant, lambda conn: directory.set_disabled(conn, tenant, principal, False)
    )
    _print_principal(changed, json_out, "enabled")


@principal_app.command("join")
@fails_cleanly
def principal_join(
    principal: str,
    group: Annotated[str, typer.Argument(help="group:<name> (or just <name>).")],
    tenant: TenantOption,
    json_out: JsonOption = False,
) -> None:
    """Add a principal to a group that approval policies can name."""
    changed = _in_tenant(tenant, lambda conn: directory.join_group(conn, tenant, principal, group))
    _print_principal(changed, json_out, "updated")


@principal_app.command("leave")
@fails_cleanly
def principal_leave(
    principal: str,
    group: Annotated[str, typer.Argument(help="group:<name> (or just <name>).")],
    tenant: TenantOption,
    json_out: JsonOption = False,
) -> None:
    """Remove a principal from a group; its pending votes through that group stop counting."""
    changed = _in_tenant(tenant, lambda conn: directory.leave_group(conn, tenant, principal, group))
    _print_principal(changed, json_out, "updated")


@principal_app.command("token")
@fails_cleanly
def principal_token(
    principal: str,
    tenant: TenantOption,
    ttl: Annotated[str, typer.Option(help="Lifetime: 30m, 8h, 7d (at most 30d).")] = "8h",
    json_out: JsonOption = False,
) -> None:
    """Issue a principal token (printed on stdout) to start runs and approve steps with."""
    cfg = settings()
    lifetime = parse_ttl(ttl)
    if not timedelta(seconds=1) <= lifetime <= MAX_TTL:
        raise ConfigError(f"--ttl must be between 1s and {MAX_TTL.days}d")
    store = key_store(cfg)
    private = store.private(IDENTITY)
    if private is None:
        raise ConfigError(
            f"no identity private key at {store.private_path(IDENTITY)}: issue tokens where "
            "`stead keys init` created it (the identity key never goes to workers)"
        )
    found = _in_tenant(tenant, lambda conn: directory.get_principal(conn, tenant, principal))
    if found is None:
        raise ConfigError(f"{principal} is not a principal of tenant {tenant}; add it first")
    if found.disabled:
        raise ConfigError(f"{principal} is disabled in tenant {tenant}; enable it first")
    cutoff = found.tokens_not_before
    if cutoff is not None and (wait := (cutoff - utcnow()).total_seconds()) > 0:
        time.sleep(wait)  # at most a second: a token from before the cut-off is refused
    issued = PrincipalTokenIssuer(private).issue(tenant, principal, lifetime)
    if json_out:
        print_json({"token": issued.token, **issued.claims.model_dump(mode="json")})
    else:
        typer.echo(issued.token)


@principal_app.command("sign-approval")
@fails_cleanly
def principal_sign_approval(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    step_id: Annotated[str, typer.Argument(help="The step awaiting approval.")],
    principal: Annotated[str, typer.Option("--as", help="The approver the token belongs to.")],
    reject: Annotated[bool, typer.Option(help="Reject instead of approve.")] = False,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    token: Annotated[str | None, typer.Option(help="Principal token.")] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the principal token.")
    ] = None,
) -> None:
    """Print the `approve_signal` input to paste into the Temporal UI, with a scoped token.

    The UI is an untrusted path: a signal counts only with a token scoped to this exact
    run, step, plan and verdict, which this command makes without contacting the run
    beyond reading its pending approval.
    """
    from stead.cli._common import with_client

    cfg = settings()
    raw = principal_token_input(cfg, token, token_file)
    if raw is None:
        raise ConfigError("give --token, --token-file or STEAD_PRINCIPAL_TOKEN")

    async def plan_hash(client: Any) -> str:
        waiting: list[PendingApproval] = await client.get_workflow_handle(run_id).query(
            "pending_approvals", result_type=list[PendingApproval]
        )
        for item in waiting:
            if item.step_id == step_id:
                return item.plan_hash
        raise ConfigError(f"step {step_id} of {run_id} is not awaiting approval")

    verdict: Verdict = "reject" if reject else "approve"
    digest = with_client(plan_hash, cfg)
    approval = ApprovalInput(
        step_id=step_id,
        plan_hash=digest,
        approver=principal,
        verdict=verdict,
        comment=comment,
        token=approval_token(
            cfg, raw, run_id=run_id, step_id=step_id, plan_hash=digest, verdict=verdict
        ),
    )
    print_json(approval.model_dump(mode="json"))


# ------------------------------------------------------- shared with runs


def principal_token_input(cfg: Settings, token: str | None, token_file: Path | None) -> str | None:
    """The principal token from --token, else --token-file, else STEAD_PRINCIPAL_TOKEN."""
    if token:
        return token.strip()
    if token_file is not None:
        if not token_file.is_file():
            raise ConfigError(f"--token-file {token_file} does not exist")
        return token_file.read_text().strip()
    if cfg.principal_token is not None:
        return cfg.principal_token.get_secret_value().strip()
    return None


def approval_token(
    cfg: Settings, raw: str, *, run_id: str, step_id: str, plan_hash: str, verdict: Verdict
) -> str:
    """``raw`` attenuated to this one approval, so the copy in history approves nothing else."""
    store = key_store(cfg)
    public = store.public(IDENTITY)
    if public is None:
        raise ConfigError(
            f"no identity public key at {store.public_path(IDENTITY)}; copy identity.pub there "
            "(`stead keys show` prints it where the keys were made)"
        )
    scope = ApprovalScope(workflow_id=run_id, step_id=step_id, plan_hash=plan_hash, verdict=verdict)
    scoped = scope_to_approval(raw, public, scope)
    # Never hand out what the run would refuse to write: a bare token that reaches a
    # run's history (through a signal) is burned for good.
    problem = narrowing_problem(scoped, scope)
    if problem is not None:
        raise ConfigError(f"the token could not be narrowed to this approval: {problem}")
    return scoped


def cancel_token(cfg: Settings, raw: str, *, run_id: str, reason: str) -> str:
    """``raw`` attenuated to cancelling this one run for this reason (single-use)."""
    from stead.cli.starts import identity_public_key

    scope = cancel_scope(run_id, reason)
    scoped = scope_to_cancel(raw, identity_public_key(cfg), scope)
    problem = cancel_narrowing_problem(scoped, scope)
    if problem is not None:
        raise ConfigError(f"the token could not be narrowed to this cancel: {problem}")
    return scoped


# ------------------------------------------------------------------- keys


def _describe_keys(store: KeyStore) -> dict[str, dict[str, object]]:
    report: dict[str, dict[str, object]] = {}
    for name in ALL_KEYS:
        public = store.public(name)
        report[name] = {
            "public_key": None if public is None else str(public),
            "public_file": str(store.public_path(name)),
            "private_file": str(store.private_path(name)),
            "holds_private": store.private_path(name).exists(),
        }
    for secret in ALL_SECRETS:
        # Symmetric: no public half; say only where it is and whether this machine has it.
        report[secret] = {
            "public_key": None,
            "private_file": str(store.secret_path(secret)),
            "holds_private": store.secret_path(secret).exists(),
        }
    return report


@keys_app.command("init")
@fails_cleanly
def keys_init(json_out: JsonOption = False) -> None:
    """Create the missing key pairs in the keys dir ($STEAD_HOME/keys or STEAD_KEYS_DIR)."""
    store = KeyStore(settings().resolved_keys_dir)
    created = store.ensure_all()
    report = _describe_keys(store)
    if json_out:
        print_json({"created": created, "keys": report})
        return
    for name, info in report.items():
        made = "created" if name in created else "kept"
        shown = info["public_key"] or "symmetric secret"
        console.print(f"{made} {name}: {shown} ({info['private_file']})")
    console.print(
        "capability.key stays with workers that mint capabilities; identity.key with whoever "
        "issues principal tokens; integrity.secret and audit.secret with the workers only. "
        "Other machines get the .pub files only."
    )


@keys_app.command("show")
@fails_cleanly
def keys_show(json_out: JsonOption = False) -> None:
    """The public keys (safe to distribute) and which private keys this machine holds."""
    report = _describe_keys(KeyStore(settings().resolved_keys_dir))
    if json_out:
        print_json(report)
        return
    for name, info in report.items():
        holds = "holds private key" if info["holds_private"] else "public key only"
        console.print(f"{name}: {info['public_key'] or 'missing'} ({holds})")


__all__ = [
    "DEFAULT_TTL",
    "approval_token",
    "keys_app",
    "parse_ttl",
    "principal_app",
    "principal_token_input",
    "tenant_app",
]
