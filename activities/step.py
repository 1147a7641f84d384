"""One governed step in one activity task: decide, and on an immediate allow, execute.

The regular path costs two activity tasks per step (``policy.decide_step``, then
``adapter.execute``), each a round trip through the task queue and two more events in
history. ``step.run`` does both on the run's own task queue, and governs exactly as
they do, because it *is* their code: OPA is asked and the decision recorded and
audited (``PolicyActivities.evaluate_step_in``, ``MadeDecision``), then the step
executes through ``ExecutionActivities.execute_admitted`` (a capability token minted for
the recorded allow, verified and spent with the ledger intent, the effect exactly once
per idempotency key, the completion audited). Where the worker holds the capability
authority the decision and that admission are one transaction: two per step in all
(decision + intent, then completion) instead of three, and a decision is still never
lost when the admission fails (``_decide_and_admit``). Anything but an immediate allow
is returned to the workflow, which continues on the regular approval/decide/execute
path.

A retry (activity attempt > 1) first looks in the effect ledger. An intent there was
written by an earlier attempt, and only ever after a recorded allow, so the effect may
already have happened under that allow: the retry executes under that same decision
(the ledger then replays or reconciles the effect) and audits ``decision_reused``
rather than asking OPA again. Deciding again could answer deny or approve after policy
or a budget changed, and the step would then read "denied" for an effect that did
happen. Without an intent nothing has happened yet, so the retry decides afresh (a new
decision, recorded and audited). The first attempt never looks: it cannot find one.
OPA being unreachable fails the activity at once (non-retryable) with the recorded
type ``PolicyUnavailable``: the workflow then decides on the regular path, whose retry
policy for decisions ends in a ``policy_unavailable`` block (fail closed).

``express.step`` is the same step as a *local* activity, for low-risk reads a run opted
into (``RunOptions.express_reads``): no task-queue round trip at all, and the same
decision, ledger, audit and retry rule.
"""

from __future__ import annotations

import json

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.execution import ExecutionActivities, refusal_event, refused_error
from activities.heartbeat import heartbeats
from activities.policy import MadeDecision, PolicyActivities
from stead.audit.chain import decision_row_verified
from stead.audit.log import AuditEvent, append_event
from stead.capability import CapabilityRefused
from stead.contracts import activity_names as names
from stead.contracts.activities import ExecuteStepInput, ExpressStepInput, ExpressStepOutput
from stead.contracts.run import Decision, sha256_hex
from stead.db.pool import commit_without_waiting_for_disk, tenant_transaction
from stead.ledger import effects
from stead.runs.scope import ScopeClaim, tenant_scoped

POLICY_UNAVAILABLE = "PolicyUnavailable"


def _step_claim(req: ExpressStepInput) -> ScopeClaim:
    return ScopeClaim(req.decide.tenant, (req.decide.run.workflow_id,))


class StepActivities:
    def __init__(
        self, pool: asyncpg.Pool, policy: PolicyActivities, execution: ExecutionActivities
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._execution = execution

    @activity.defn(name=names.STEP_RUN)
    @tenant_scoped(_step_claim)
    @heartbeats
    async def run(self, req: ExpressStepInput) -> ExpressStepOutput:
        try:
            return await decide_and_execute(self._pool, self._policy, self._execution, req)
        except _PolicyOutage as outage:
            # Not retried here: the workflow decides again on the regular path.
            exc = outage.error
            raise ApplicationError(
                exc.message, type=POLICY_UNAVAILABLE, non_retryable=True
            ) from exc

    @activity.defn(name=names.EXPRESS_STEP)
    @tenant_scoped(_step_claim)
    async def run_express(self, req: ExpressStepInput) -> ExpressStepOutput:
        """The local-activity form: a policy outage is retried by the local activity's own
        retry policy, and after it the workflow decides again on the regular path."""
        try:
            return await decide_and_execute(self._pool, self._policy, self._execution, req)
        except _PolicyOutage as outage:
            raise outage.error from outage.error.__cause__


class _PolicyOutage(Exception):
    """OPA could not be asked (``PolicyUnavailable``); each lane says what that means."""

    def __init__(self, error: ApplicationError) -> None:
        super().__init__(error.message)
        self.error = error


def execution_input(req: ExpressStepInput, decision: Decision) -> ExecuteStepInput:
    d = req.decide
    return ExecuteStepInput(
        tenant=d.tenant,
        principal=d.principal,
        run=d.run,
        plan_hash=d.plan_hash,
        step=d.step,
        decision_id=decision.decision_id,
        idempotency_key=req.idempotency_key,
    )


async def execute_if_allowed(
    execution: ExecutionActivities, req: ExpressStepInput, decision: Decision
) -> ExpressStepOutput:
    """Execute under ``decision`` if it is an immediate allow; otherwise hand it back to the
    workflow, which continues on the regular approval/decide/execute path."""
    if decision.outcome != "allow" or decision.blocked is not None:
        return ExpressStepOutput(decision=decision)
    output = await execution.execute(execution_input(req, decision))
    return ExpressStepOutput(decision=decision, executed=True, output=output)


async def decide_and_execute(
    pool: asyncpg.Pool,
    policy: PolicyActivities,
    execution: ExecutionActivities,
    req: ExpressStepInput,
) -> ExpressStepOutput:
    """Decide the step, and on an immediate allow execute it (``step.run``, the express lane).

    Where this worker holds the capability authority, the decision and the admission
    share one transaction (``_decide_and_admit``): one BEGIN/COMMIT fewer per step.
    Elsewhere the decision commits on its own and the execution admits in its own.
    A retry whose effect was already begun reuses the allow that began it
    (``reused_allow``): the step's decision must be the one the effect happened under.
    """
    if activity.info().attempt > 1:
        reused = await reused_allow(pool, req)
        if reused is not None:
            return await execute_if_allowed(execution, req, reused)
    if not execution.mints_inline:
        return await execute_if_allowed(
            execution, req, await decide_for_execution(pool, policy, req)
        )
    decision, admitted = await _decide_and_admit(pool, policy, execution, req)
    if admitted is None:
        return ExpressStepOutput(decision=decision)
    output = await execution.execute_admitted(execution_input(req, decision), admitted)
    return ExpressStepOutput(decision=decision, executed=True, output=output)


async def _decide_and_admit(
    pool: asyncpg.Pool,
    policy: PolicyActivities,
    execution: ExecutionActivities,
    req: ExpressStepInput,
) -> tuple[Decision, effects.LedgerEntry | Exception | None]:
    """Decide, record, and on an allow admit the effect, in one transaction.

    The decision row is written first (the authority reads it back before it mints),
    then the capability is minted, verified and spent and the intent recorded
    (``ExecutionActivities.admit_in``), and the decision's audit event is appended
    last, so the tenant's append lock is held only until the commit. The commit is
    durable unless the intent is a native-idempotent read's, as the admission's own
    transaction was.

    A decision is never lost to a failed admission: if that transaction rolls back
    (a refused capability, a ledger conflict, a lost connection), a fallback
    transaction records the decision row and its audit event (and, for a refusal, the
    ``capability_refused`` event), and the failure is handed to the execution, which
    raises it as the step's outcome. Anything but an immediate allow commits its
    decision and is returned with no admission (None). OPA unreachable writes nothing
    and raises ``_PolicyOutage``.
    """
    d = req.decide
    made: MadeDecision | None = None
    try:
        async with tenant_transaction(pool, d.tenant) as conn:
            try:
                made = await policy.evaluate_step_in(conn, d)
            except ApplicationError as exc:
                if exc.type == POLICY_UNAVAILABLE:
                    raise _PolicyOutage(exc) from exc
                raise
            await made.record_row(conn)
            if not made.allows_now:
                await made.append_event(conn)
                admitted: effects.LedgerEntry | Exception | None = None
            else:
                admitted = await execution.admit_in(conn, execution_input(req, made.decision))
                await made.append_event(conn)
    except Exception as exc:
        if made is None or not made.allows_now:
            raise
        admitted = await _record_after_rollback(pool, req, made, exc)
    made.observe()
    return made.decision, admitted


async def _record_after_rollback(
    pool: asyncpg.Pool, req: ExpressStepInput, made: MadeDecision, exc: Exception
) -> Exception:
    """The fused transaction rolled back after policy allowed the step: record the
    decision (and a refusal) in a transaction of its own; returns what the step fails
    with. If the rolled-back COMMIT did in fact land, the row is there and nothing is
    appended twice."""
    async with tenant_transaction(pool, req.decide.tenant) as conn:
        if await made.record_row(conn):
            await made.append_event(conn)
        if isinstance(exc, CapabilityRefused):
            step = execution_input(req, made.decision)
            await append_event(conn, refusal_event(step, exc))
            return refused_error(exc)
    return exc


async def decide_for_execution(
    pool: asyncpg.Pool, policy: PolicyActivities, req: ExpressStepInput
) -> Decision:
    """Decide and record a step on its own transaction, for a worker that does not mint
    inline (the execution then gets its token and admits in a transaction of its own).
    An allow's transaction does not wait for its fsync: the execution's intent or
    completion commits durably right after and flushes this WAL with it; if the worker
    dies first, the workflow never saw the decision and the retry decides again. Any
    other outcome is returned to the workflow, so it commits durably.
    """
    try:
        async with tenant_transaction(pool, req.decide.tenant) as conn:
            decision = await policy.decide_step_in(conn, req.decide)
            if decision.outcome == "allow" and decision.blocked is None:
                await commit_without_waiting_for_disk(conn)
            return decision
    except ApplicationError as exc:
        if exc.type == POLICY_UNAVAILABLE:
            raise _PolicyOutage(exc) from exc
        raise


async def reused_allow(pool: asyncpg.Pool, req: ExpressStepInput) -> Decision | None:
    """The recorded allow an earlier attempt began this step's effect under, or None.

    One query joins the ledger intent for the idempotency key to the decision it names.
    It is reused only if it is a recorded, unblocked step allow for this very run and
    step, and the intent is for this operation and these arguments; anything else
    (no intent, an intent without a decision, a mismatch) returns None, so the step is
    decided afresh and the execution boundary refuses whatever does not fit (fail
    closed). The reuse is audited in the same transaction, so the trail says why this
    attempt has no decision of its own.
    """
    d = req.decide
    async with tenant_transaction(pool, d.tenant) as conn:
        row = await conn.fetchrow(
            "SELECT d.decision_id, d.reasons::text AS reasons, d.policy_revision,"
            " d.tenant, d.workflow_id, d.step_id, d.kind, d.outcome, d.blocked,"
            " d.input_hash, d.mac, e.status, e.attempts"
            " FROM effects e JOIN decisions d ON d.decision_id = e.decision_id"
            " WHERE e.idempotency_key = $1 AND e.tenant = $2 AND d.tenant = $2"
            " AND d.kind = 'step' AND d.outcome = 'allow' AND d.blocked IS NULL"
            " AND d.workflow_id = $3 AND d.step_id = $4"
            " AND e.workflow_id = $3 AND e.step_id = $4 AND e.operation = $5"
            " AND e.args_hash = $6",
            req.idempotency_key,
            d.tenant,
            d.run.workflow_id,
            d.step.id,
            d.step.operation,
            sha256_hex(d.step.args),
        )
        if row is None or not decision_row_verified(row):
            # A row the app role wrote itself (no MAC under audit.secret) is no allow:
            # decide afresh; the authority would refuse to mint for it anyway.
            return None
        decision = Decision(
            decision_id=row["decision_id"],
            outcome="allow",
            reasons=tuple(json.loads(row["reasons"])),
            policy_revision=row["policy_revision"],
        )
        await append_event(
            conn,
            AuditEvent(
                tenant=d.tenant,
                workflow_id=d.run.workflow_id,
                run_id=d.run.run_id,
                step_id=d.step.id,
                kind="decision_reused",
                actor="system:stead",
                data={
                    "decision_id": decision.decision_id,
                    "idempotency_key": req.idempotency_key,
                    "operation": d.step.operation,
                    "attempt": activity.info().attempt,
                    "effect_status": row["status"],
                    "reason": "an earlier attempt began the effect under this allow",
                },
            ),
        )
        return decision
