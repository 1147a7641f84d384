"""Who may start a run, proven before anything else happens; how its approvers must prove it.

A start is authenticated by default: the starter presents a principal token narrowed
to this workflow id and this request (``stead.identity.starts``), and this module
checks it against the directory (principal exists, enabled, token issued after its
last revocation). Policy data may opt a tenant out
(``data.stead.identity.start_authentication`` = ``"none"``): then a tenant with
principals in the directory (*managed*) still admits only its enabled principals,
by claimed name, and a tenant without principals (*unmanaged*) admits anyone. With
tokens required, an unmanaged tenant is refused: there is nobody to check the token
against.

Both modes are read here from OPA, so nothing about them comes from workflow input;
the approval mode is read again by ``stead.identity.approvals`` on every vote, and that
per-vote answer is the only one that decides an approval. If OPA cannot answer, both
are ``token``: identity fails closed.

Single use: a narrowed start token sits in the run's history. ``claim_workflow_id``
records which run chain first used the workflow id (``run_starts``, insert-only for
the app role); a later chain presenting the same id is refused, so a lifted token
cannot start its request again after the first run closed.
"""

from __future__ import annotations

import asyncpg
from biscuit_auth import PublicKey

from stead.contracts.identity import AdmitRunInput, ApprovalAuthentication, RunAdmission
from stead.db.pool import tenant_transaction
from stead.identity.directory import Principal, get_principal
from stead.identity.errors import PrincipalTokenRefused
from stead.identity.starts import StartScope, verify_start
from stead.policy.opa import OpaClient, PolicyUnavailable, PolicyUndefined

AUTH_MODE_PATH = "stead/identity/approval_authentication"
START_MODE_PATH = "stead/identity/start_authentication"


async def _mode(
    opa: OpaClient, path: str, tenant: str
) -> tuple[ApprovalAuthentication, str | None]:
    """``token`` or ``none``, and why policy could not say (None when it did).

    Anything policy does not say plainly means ``token``; the reason is kept so that a
    refusal caused by an OPA outage says so instead of blaming the starter alone.
    """
    try:
        value = await opa.evaluate(path, {"tenant": tenant})
    except PolicyUnavailable as exc:
        return "token", f"policy_unavailable: {exc}"
    except PolicyUndefined as exc:
        return "token", f"policy_undefined: {exc}"
    return ("none" if value == "none" else "token"), None


async def approval_authentication(opa: OpaClient, tenant: str) -> ApprovalAuthentication:
    mode, _ = await _mode(opa, AUTH_MODE_PATH, tenant)
    return mode


async def approval_authentication_now(opa: OpaClient, tenant: str) -> ApprovalAuthentication:
    """The mode for a vote or cancel arriving without a token, where an OPA outage must
    not read as ``token``: that refuses the vote for lacking a token the tenant may not
    need, and a refusal is final. Raises ``PolicyUnavailable`` instead, so the activity
    is retried and, if OPA stays away, the vote is refused saying so. An undefined
    answer (policy says nothing about the tenant) is still ``token``: fail closed."""
    try:
        value = await opa.evaluate(AUTH_MODE_PATH, {"tenant": tenant})
    except PolicyUndefined:
        return "token"
    return "none" if value == "none" else "token"


async def start_authentication(opa: OpaClient, tenant: str) -> ApprovalAuthentication:
    mode, _ = await _mode(opa, START_MODE_PATH, tenant)
    return mode


async def admit_run(
    pool: asyncpg.Pool,
    opa: OpaClient,
    req: AdmitRunInput,
    identity_key: PublicKey | None = None,
) -> RunAdmission:
    """Admit or refuse the starter; raises only when Postgres is down (retryable)."""
    approvals = await approval_authentication(opa, req.tenant)
    starts, unanswered = await _mode(opa, START_MODE_PATH, req.tenant)

    def refuse(reason: str) -> RunAdmission:
        return RunAdmission(
            admitted=False,
            managed=managed,
            reason=reason,
            approval_authentication=approvals,
            start_authentication=starts,
        )

    async with tenant_transaction(pool, req.tenant) as conn:
        managed = bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM principals WHERE tenant = $1)", req.tenant
            )
        )
        principal = await get_principal(conn, req.tenant, req.principal) if managed else None
    if req.start_token is None:
        if starts == "token":
            required = _token_required(req, managed)
            if unanswered is not None:
                # Fail closed, and say it was policy that could not be asked.
                required = f"{unanswered}; so a start token is required, and {required}"
            return refuse(required)
        if not managed:
            return RunAdmission(
                admitted=True,
                managed=False,
                approval_authentication=approvals,
                start_authentication=starts,
            )
        problem = _directory_problem(req, principal)
        if problem is not None:
            return refuse(problem)
        return RunAdmission(
            admitted=True,
            managed=True,
            approval_authentication=approvals,
            start_authentication=starts,
        )
    # A token presented is checked in either mode: a bad credential is never ignored.
    if not managed:
        return refuse(_unmanaged(req))
    if identity_key is None:
        return refuse(
            "this worker has no identity public key (identity.pub in the keys dir), so it "
            "cannot verify start tokens"
        )
    if req.request_digest is None:
        return refuse("the start token cannot be checked: the run did not say what it starts")
    scope = StartScope(workflow_id=req.workflow_id, request_digest=req.request_digest)
    try:
        claims = verify_start(req.start_token, identity_key, tenant=req.tenant, scope=scope)
    except PrincipalTokenRefused as exc:
        return refuse(f"start token refused: {exc.message}")
    if claims.principal != req.principal:
        return refuse(
            f"the start token belongs to {claims.principal}, but the run claims to be started "
            f"by {req.principal}; start as the token's principal (drop --as, or fix it)"
        )
    problem = _directory_problem(req, principal)
    if problem is not None:
        return refuse(problem)
    assert principal is not None
    revoked = principal.tokens_not_before
    if revoked is not None and claims.issued_at < revoked:
        return refuse(
            f"principal token {claims.token_id} was issued before {claims.principal}'s tokens "
            f"were revoked at {revoked.isoformat()}; get a new one with `stead principal token`"
        )
    return RunAdmission(
        admitted=True,
        managed=True,
        approval_authentication=approvals,
        start_authentication=starts,
        authenticated=True,
        token_id=claims.token_id,
    )


async def claim_workflow_id(
    conn: asyncpg.Connection, req: AdmitRunInput, admission: RunAdmission
) -> bool:
    """Claim the workflow id for this run chain; False when another chain holds it.

    Idempotent for the same chain (a retried ``runs.open``). Expects a connection in
    ``tenant_transaction(req.tenant)``; an id claimed by another tenant is invisible
    under row-level security, and counts as taken.
    """
    if req.chain_id is None:
        return True  # histories from before chains were recorded
    await conn.execute(
        "INSERT INTO run_starts (workflow_id, tenant, chain_id, principal, admitted,"
        " authenticated, token_id) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (workflow_id) DO NOTHING",
        req.workflow_id,
        req.tenant,
        req.chain_id,
        req.principal,
        admission.admitted,
        admission.authenticated,
        admission.token_id,
    )
    holder = await conn.fetchval(
        "SELECT chain_id FROM run_starts WHERE workflow_id = $1", req.workflow_id
    )
    return bool(holder == req.chain_id)


def id_taken(req: AdmitRunInput, admission: RunAdmission) -> RunAdmission:
    return admission.model_copy(
        update={
            "admitted": False,
            "id_taken": True,
            "authenticated": False,
            "reason": (
                f"workflow id {req.workflow_id} was already used by another run; a start "
                "(and its start token) is single-use: start a new run with a new id"
            ),
        }
    )


def _token_required(req: AdmitRunInput, managed: bool) -> str:
    if not managed:
        return _unmanaged(req)
    return (
        f"tenant {req.tenant} requires a start token: `stead run --token-file <file>` with a "
        f"token from `stead principal token {req.principal} --tenant {req.tenant}`"
    )


def _unmanaged(req: AdmitRunInput) -> str:
    return (
        f"tenant {req.tenant} has no principals in its directory, so a start cannot be "
        f"authenticated: create it (`stead tenant create {req.tenant}`), add the starter "
        f"(`stead principal add {req.principal} --tenant {req.tenant}`) and start with "
        "`stead run --token-file`, or opt the tenant out with "
        '"start_authentication": "none" in its policy data'
    )


def _directory_problem(req: AdmitRunInput, principal: Principal | None) -> str | None:
    if principal is None:
        return (
            f"{req.principal} is not a principal of tenant {req.tenant}, so it may not start "
            f"runs; add it with `stead principal add {req.principal} --tenant {req.tenant}`"
        )
    if principal.disabled:
        return f"{req.principal} is disabled in tenant {req.tenant}, so it may not start runs"
    return None
