"""Tenant scope of the run's activities: an input's tenant counts only if the run was
admitted for it.

Activity inputs come from workflow code, and anyone who can reach Temporal can run
workflow code of their own on Stead's task queue and schedule ``step.run`` or
``memory.recall`` with any tenant in the input. What such a caller cannot choose is
the workflow id the server attaches to the activity task (``activity.info()``). So
each activity that takes a tenant declares, with ``@tenant_scoped``, which tenant and
workflow ids its input claims, and before its body runs the claim is checked against
the run's record written by ``runs.open`` (``runs.admitted_run_id``, migration 0008):

* every workflow id the input names must be the server-set one (a lifted input names
  another run);
* ``recorded``: a run record for that workflow id exists under the claimed tenant
  (row-level security hides another tenant's, so a foreign run reads as none);
* ``admitted``: and admission passed for this very run: the record is stamped with the
  run id ``runs.open`` admitted, and a continued run must have it as its chain's first
  run id (asked of Temporal once per run and worker), so a new execution reusing an
  admitted workflow id inherits nothing. A refused run only records and audits its
  refusal, so ``runs.record`` and ``audit.append`` need ``recorded``; everything that
  plans, decides, executes or reads memory needs ``admitted``.

A refusal is a non-retryable ``ApplicationError`` of type ``TenantScopeRefused``: the
body never runs. Positive answers are cached in the worker process per (workflow id,
*run* id, tenant), bounded, so a step pays no Postgres round trip after its run's first
activity on this worker; keying by run id (which changes on continue-as-new and on a
reused workflow id) means a reused id is looked up afresh. Outside an activity (a direct
Python call, as unit tests make) there is no server-set id to check and no attacker on
that path, so the check is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import asyncpg
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from stead.contracts.activities import TENANT_SCOPE_REFUSED
from stead.db.pool import tenant_transaction

SCOPE_REFUSED: Final = TENANT_SCOPE_REFUSED
log = logging.getLogger("stead.scope")
Need = Literal["bound", "recorded", "admitted"]
_RANK: Final[dict[str, int]] = {"bound": 0, "recorded": 1, "admitted": 2}
CACHE_ENTRIES: Final = 16_384
_ADMISSION_LABEL: Final = "stead.run-admission/v1"

S = TypeVar("S")
In = TypeVar("In")
Out = TypeVar("Out")
FirstRun = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True)
class ScopeClaim:
    """What an activity input claims: its tenant, the workflow ids it names, and what
    the run must be for that tenant (``bound``: only the ids are checked)."""

    tenant: str
    workflow_ids: tuple[str, ...] = ()
    need: Need = "admitted"


def scope_refused(message: str) -> ApplicationError:
    return ApplicationError(message, type=SCOPE_REFUSED, non_retryable=True)


class RunScope:
    """Checks claims against one database's run records, with a bounded positive cache."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        integrity: bytes | None = None,
        max_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.pool = pool
        self._integrity = integrity
        self._max = max_entries
        self._known: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self.lookups = 0  # Postgres round trips made, for tests and curiosity

    def admission_mac(self, workflow_id: str, tenant: str, run_id: str) -> str | None:
        """The stamp's HMAC with the workers' integrity secret (None without one).

        The app role can write ``runs`` rows; it cannot compute this, so a stamp it
        forges does not admit anything on a worker that holds the secret.
        """
        if self._integrity is None:
            return None
        message = "\n".join((_ADMISSION_LABEL, workflow_id, tenant, run_id)).encode()
        return hmac.new(self._integrity, message, hashlib.sha256).hexdigest()

    def remember(self, workflow_id: str, run_id: str, tenant: str, need: Need) -> None:
        """Record a positive answer (``runs.open`` tells what it just wrote)."""
        key = (workflow_id, run_id, tenant)
        self._known[key] = max(self._known.get(key, 0), _RANK[need])
        self._known.move_to_end(key)
        while len(self._known) > self._max:
            self._known.popitem(last=False)

    async def check(
        self,
        workflow_id: str,
        run_id: str,
        claim: ScopeClaim,
        first_run: FirstRun | None = None,
    ) -> None:
        """Raise ``TenantScopeRefused`` unless the claim holds for this workflow and run.

        ``first_run`` asks Temporal for the first run id of this run's chain; it is
        called only when the run is a continuation (its id is not the admitted one).
        """
        for named in claim.workflow_ids:
            if named != workflow_id:
                raise scope_refused(
                    f"the input names workflow {named!r} but this activity runs for workflow "
                    f"{workflow_id!r}; an activity acts only for the run that scheduled it"
                )
        rank = _RANK[claim.need]
        if rank == 0:
            return
        key = (workflow_id, run_id, claim.tenant)
        known = self._known.get(key)
        if known is not None and known >= rank:
            self._known.move_to_end(key)
            return
        self.lookups += 1
        try:
            async with tenant_transaction(self.pool, claim.tenant) as conn:
                row = await conn.fetchrow(
                    "SELECT admitted_run_id, admission_mac FROM runs WHERE workflow_id = $1",
                    workflow_id,
                )
        except ValueError:
            raise scope_refused(f"{claim.tenant!r} is not a tenant id") from None
        if row is None:
            raise scope_refused(
                f"workflow {workflow_id!r} has no run recorded for tenant {claim.tenant!r}; "
                "only a run opened by runs.open for that tenant may act for it"
            )
        stamp: str | None = row["admitted_run_id"]
        expected = None if stamp is None else self.admission_mac(workflow_id, claim.tenant, stamp)
        if expected is not None and not hmac.compare_digest(expected, row["admission_mac"] or ""):
            if rank == 2:
                raise scope_refused(
                    f"the admission of workflow {workflow_id!r} for tenant {claim.tenant!r} is "
                    "not sealed with the workers' integrity secret; it was not written by "
                    "runs.open, and admits nothing"
                )
            stamp = None
        admitted = stamp is not None and (
            stamp == run_id or (first_run is not None and await first_run() == stamp)
        )
        if rank == 2 and not admitted:
            raise scope_refused(
                f"run {run_id!r} of workflow {workflow_id!r} was not admitted for tenant "
                f"{claim.tenant!r}; a refused run may only record and audit its refusal"
            )
        self.remember(workflow_id, run_id, claim.tenant, "admitted" if admitted else "recorded")


async def stamp_admission(
    conn: asyncpg.Connection,
    workflow_id: str,
    admitted_run_id: str | None,
    mac: str | None = None,
) -> None:
    """Stamp the run record with the run admitted for it and its MAC, or clear both.

    Called by ``runs.open`` in the transaction that writes the record, so a reused
    workflow id never keeps an earlier run's admission.
    """
    await conn.execute(
        "UPDATE runs SET admitted_run_id = $2, admission_mac = $3 WHERE workflow_id = $1",
        workflow_id,
        admitted_run_id,
        mac,
    )


# By id: asyncpg pools take no weak references. Closed pools are dropped as new ones come.
_SCOPES: dict[int, RunScope] = {}


def configure_scope(pool: asyncpg.Pool, integrity: bytes | None) -> RunScope:
    """Give the worker's scope checker the integrity secret (workers call it at start);
    ``pool`` becomes the one ``worker_pool`` names for activities that hold none."""
    global _WORKER_POOL
    scope = scope_for(pool)
    scope._integrity = integrity
    _WORKER_POOL = pool
    return scope


_WORKER_POOL: asyncpg.Pool | None = None


def worker_pool(owner: object) -> asyncpg.Pool | None:
    """The pool ``configure_scope`` was given: for activity classes without a pool of
    their own (the continuation seal); None, so refused, where no worker configured one."""
    return _WORKER_POOL


def scope_for(pool: asyncpg.Pool) -> RunScope:
    """The process's scope checker for ``pool``'s database: one cache per database, shared
    by every activity class of the worker without threading it through constructors."""
    scope = _SCOPES.get(id(pool))
    if scope is None or scope.pool is not pool:
        for key in [k for k, known in _SCOPES.items() if known.pool.is_closing()]:
            del _SCOPES[key]
        scope = _SCOPES[id(pool)] = RunScope(pool)
    return scope


def _own_pool(owner: Any) -> asyncpg.Pool | None:
    pool: asyncpg.Pool | None = getattr(owner, "_pool", None)
    return pool


async def require_scope(pool: asyncpg.Pool | None, claim: ScopeClaim) -> None:
    """Check ``claim`` for the current activity (no-op outside one)."""
    if not activity.in_activity():
        return
    info = activity.info()
    workflow_id, run_id = info.workflow_id, info.workflow_run_id
    if not workflow_id or not run_id:
        raise scope_refused("this activity was not scheduled by a workflow; it acts for none")
    if pool is None:
        raise scope_refused(
            f"this worker has no Postgres pool to check that workflow {workflow_id!r} "
            f"may act for tenant {claim.tenant!r}; it refuses instead"
        )

    async def first_run() -> str | None:
        return await first_run_id(activity.client(), workflow_id, run_id)

    try:
        await scope_for(pool).check(workflow_id, run_id, claim, first_run)
    except ApplicationError as exc:
        if exc.type == SCOPE_REFUSED:
            # The worker log, not the tenant's audit log: the claimed tenant is exactly
            # what cannot be trusted here, and an attacker must not write to its chain.
            log.warning("refused %s: %s", info.activity_type, exc.message)
        raise


async def first_run_id(client: Client, workflow_id: str, run_id: str) -> str | None:
    """The first run of ``run_id``'s continue-as-new chain, as Temporal records it."""
    try:
        described = await client.workflow_service.describe_workflow_execution(
            DescribeWorkflowExecutionRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            )
        )
    except RPCError as exc:
        # Retryable: Temporal being unreachable says nothing about the run's tenant.
        raise ApplicationError(
            f"could not ask Temporal which run started workflow {workflow_id!r}: {exc}",
            type="RunScopeUnavailable",
        ) from None
    first: str = described.workflow_execution_info.first_run_id
    return first or None


def tenant_scoped(
    claim: Callable[[Any], ScopeClaim],
    *,
    pool: Callable[[Any], asyncpg.Pool | None] = _own_pool,
) -> Callable[[Callable[[S, In], Awaitable[Out]]], Callable[[S, In], Awaitable[Out]]]:
    """Check the input's claim (under ``@activity.defn``) before the activity's body runs.

    ``claim`` reads the input; ``pool`` finds the database on the activity's owner
    (its ``_pool`` by default).
    """

    def wrap(fn: Callable[[S, In], Awaitable[Out]]) -> Callable[[S, In], Awaitable[Out]]:
        @functools.wraps(fn)
        async def scoped(self: S, req: In) -> Out:
            await require_scope(pool(self), claim(req))
            return await fn(self, req)

        return scoped

    return wrap
