"""Helpers for tests that call tenant-scoped activities or sealed memory workflows
from their own workflows, as the run workflow and the CLI do."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from stead.db.pool import tenant_transaction
from stead.keys import INTEGRITY, key_store
from stead.memory.sealing import MAINTENANCE_TTL, Sealable, seal
from stead.runs.scope import RunScope, stamp_admission
from stead.runs.store import record_run_started
from stead.settings import Settings


def integrity_secret(settings: Settings) -> bytes:
    """The stack's integrity secret (the dev stack creates it beside the other keys)."""
    secret = key_store(settings).secret(INTEGRITY)
    assert secret is not None, "the test stack has no integrity.secret"
    return secret


def sealed(settings: Settings, purpose: str, body: Sealable, workflow_id: str) -> Sealable:
    """``body`` sealed for ``workflow_id`` as the CLI would seal it."""
    return seal(
        integrity_secret(settings),
        purpose,
        body,
        workflow_id,
        now=datetime.now(UTC),
        ttl=MAINTENANCE_TTL,
    )


async def admit_run(
    pool: asyncpg.Pool,
    tenant: str,
    workflow_id: str,
    run_id: str | None,
    principal: str = "user:test",
    integrity: bytes | None = None,
) -> None:
    """Write the run record ``runs.open`` would write; ``run_id`` None: recorded, refused.

    With ``integrity`` the stamp carries its MAC, as a worker holding the secret writes it.
    """
    async with tenant_transaction(pool, tenant) as conn:
        await record_run_started(
            conn,
            tenant=tenant,
            workflow_id=workflow_id,
            principal=principal,
            goal=None,
            playbook="test",
            labels={},
        )
        mac = None
        if run_id is not None:
            mac = RunScope(pool, integrity=integrity).admission_mac(workflow_id, tenant, run_id)
        await stamp_admission(conn, workflow_id, run_id, mac)
