"""Who may start a run, and how the run's approvers must prove who they are.

A tenant with principals in the directory is *managed*: only its enabled principals
may start runs. A bare ``tenants`` row is not enough, because memory lists every tenant
it stores for so that scheduled jobs can visit them. A tenant without principals is
*unmanaged*: Stead has nobody to check the starter against, so the run is admitted and
records the principal the client named. Approvals are stricter: they need a principal
token unless the tenant's policy data opts out, and a token can only be checked
against a directory, so an unmanaged tenant's approvals fail closed by default.

The approval policy (``data.stead.identity.approval_authentication``) is read from
OPA here for the run's record, and again by ``stead.identity.approvals`` on every
vote: that per-vote answer is the only one that decides, so no workflow input or
state can weaken it. If OPA cannot answer, the answer is ``token``.
"""

from __future__ import annotations

import asyncpg

from stead.contracts.identity import AdmitRunInput, ApprovalAuthentication, RunAdmission
from stead.db.pool import tenant_transaction
from stead.identity.directory import get_principal
from stead.policy.opa import OpaClient, PolicyUnavailable, PolicyUndefined

AUTH_MODE_PATH = "stead/identity/approval_authentication"


async def approval_authentication(opa: OpaClient, tenant: str) -> ApprovalAuthentication:
    """``token`` or ``none``; anything policy does not say plainly means ``token``."""
    try:
        value = await opa.evaluate(AUTH_MODE_PATH, {"tenant": tenant})
    except (PolicyUnavailable, PolicyUndefined):
        return "token"
    return "none" if value == "none" else "token"


async def admit_run(pool: asyncpg.Pool, opa: OpaClient, req: AdmitRunInput) -> RunAdmission:
    mode = await approval_authentication(opa, req.tenant)
    async with tenant_transaction(pool, req.tenant) as conn:
        managed = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM principals WHERE tenant = $1)", req.tenant
        )
        if not managed:
            return RunAdmission(admitted=True, managed=False, approval_authentication=mode)
        principal = await get_principal(conn, req.tenant, req.principal)
    if principal is None:
        reason = (
            f"{req.principal} is not a principal of tenant {req.tenant}, so it may not start "
            f"runs; add it with `stead principal add {req.principal} --tenant {req.tenant}`"
        )
    elif principal.disabled:
        reason = f"{req.principal} is disabled in tenant {req.tenant}, so it may not start runs"
    else:
        return RunAdmission(admitted=True, managed=True, approval_authentication=mode)
    return RunAdmission(admitted=False, managed=True, reason=reason, approval_authentication=mode)
