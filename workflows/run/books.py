"""The run's fields and its books: status, search attributes, the run record, audit.

The base of the run's layers (books → opening → planning → approvals → lanes →
workflow): each layer may use the ones below it, none the ones above.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows.cancel_input import ReceivedCancel
from workflows.run import stubs
from workflows.run.progress import RunProgress

with workflow.unsafe.imports_passed_through():
    from pydantic import JsonValue

    from stead.contracts.activities import AuditInput, RunRecordInput, RunRef
    from stead.contracts.run import (
        TERMINAL_RUN_STATES,
        ApprovalRecord,
        PendingApproval,
        RunCarry,
        RunInput,
        RunRequest,
        RunState,
        RunStatus,
        StepResult,
        playbook_digest,
    )
    from stead.contracts.search_attributes import SA_PENDING, SA_STATUS, SA_TENANT

# The patch that cut a run's fixed and per-approval Actions: search attributes the starter
# set are not upserted again, a status change and the pending flag share one upsert, and
# the run's memory summary is a local activity in the final record's workflow task.
FEWER_ACTIONS = "fewer-actions"


class RunBooks:
    """What every layer of the run shares: its request, progress, approvals and books."""

    def __init__(self, inp: RunInput) -> None:
        self._request = inp.request
        self._request_principal = inp.request.principal
        self._tenant = inp.request.tenant
        self._pending: dict[str, PendingApproval] = {}
        self._pending_policy: dict[str, tuple[frozenset[str], bool]] = {}
        self._votes: dict[str, list[ApprovalRecord]] = {}
        # Votes accepted whose approval_accepted row is still being written, as
        # (step id, approver): not counted yet, but a repeat of one is refused.
        self._voting: set[tuple[str, str]] = set()
        # Workflow input is not trusted: a carry counts only once its seal is verified
        # (``_continuation_refusal``); until then the run knows nothing.
        self._run = RunProgress(
            RunCarry(status="planning"), clock=workflow.now, votes=self._votes_of
        )
        self._start_token = inp.start_token
        # A run refused at the door writes no memory; one refused because its workflow
        # id belongs to another chain (or whose state was forged) writes no run record.
        self._refused_at_door = False
        self._owns_record = True
        self._ref = RunRef(
            workflow_id=workflow.info().workflow_id,
            run_id=workflow.info().run_id,
            started_by=inp.request.principal,
        )
        self._cancel_requested = False
        # The first cancel received: who asked and why, for the run's reason and record.
        self._cancel: ReceivedCancel | None = None
        self._steps_this_run = 0
        # Results a replan dropped from the carry, for updates still answering about them.
        self._replaced: dict[str, StepResult] = {}
        # The search-attribute values last upserted (see _upsert).
        self._sa_tenant: str | None = None
        self._sa_status: str | None = None
        self._sa_pending: bool | None = None
        # Set by ``_check_patches`` in the run's first workflow task.
        self._fewer_actions = False

    def _votes_of(self, step_id: str) -> tuple[ApprovalRecord, ...]:
        return tuple(self._votes.get(step_id, ()))

    def _input_request(self) -> RunRequest:
        return self._request

    def _check_patches(self) -> None:
        """Which code paths this run takes; called first thing, before any local activity
        (a patch checked after one in the first task can land in another task on replay).

        On the new path the run starts from the search attributes its start (or the run
        it continued) set, so ``_upsert`` sends only what differs from them: a value
        is compared with what the run itself would write, never trusted for anything else.
        """
        self._fewer_actions = workflow.patched(FEWER_ACTIONS)
        if not self._fewer_actions:
            return
        current = workflow.info().typed_search_attributes
        self._sa_tenant = current.get(SA_TENANT)
        self._sa_status = current.get(SA_STATUS)
        self._sa_pending = current.get(SA_PENDING)

    def _set_status(
        self, status: RunState, reasons: tuple[str, ...] = (), *, pending: bool | None = None
    ) -> None:
        """The run's status, and its search attributes in one upsert (with the pending
        flag when given)."""
        self._run.set_status(status, reasons)
        self._upsert(status=status, pending=pending)

    def _upsert(
        self,
        *,
        tenant: str | None = None,
        status: str | None = None,
        pending: bool | None = None,
    ) -> None:
        """Upsert the run's search attributes (what ``stead runs`` and the UI filter on).

        Each upsert is a command, an event in history, a visibility write for the
        Temporal server and a billed Temporal Cloud Action, so only values that changed
        are sent (before ``fewer-actions``, the tenant whenever given).
        """
        updates: list[SearchAttributeUpdate[Any]] = []
        if tenant is not None and not (self._fewer_actions and tenant == self._sa_tenant):
            updates.append(SA_TENANT.value_set(tenant))
            self._sa_tenant = tenant
        if status is not None and status != self._sa_status:
            updates.append(SA_STATUS.value_set(status))
            self._sa_status = status
        if pending is not None and pending != self._sa_pending:
            updates.append(SA_PENDING.value_set(pending))
            self._sa_pending = pending
        if updates:
            workflow.upsert_search_attributes(updates)

    def _snapshot(self) -> RunStatus:
        run = self._run
        stored = run.plan.stored if run.plan is not None else None
        return RunStatus(
            workflow_id=self._ref.workflow_id,
            tenant=self._tenant,
            principal=self._request_principal,
            status=run.status,
            plan=run.plan,
            steps=run.ordered_steps(),
            pending_approvals=tuple(self._pending.values()),
            spent=run.spent,
            reasons=run.reasons,
            replans=run.replans,
            continued=run.continued,
            total_steps=stored.total_steps if stored else None,
            step_counts=run.whole_run_counts() if stored else {},
        )

    async def _audit(
        self, kind: str, actor: str, step_id: str | None, data: dict[str, object]
    ) -> None:
        await stubs.audit(
            AuditInput(
                tenant=self._tenant,
                workflow_id=self._ref.workflow_id,
                run_id=self._ref.run_id,
                step_id=step_id,
                kind=kind,
                actor=actor,
                data=data,
            )
        )

    async def _record_run(self, status: str, *, finished: bool = False) -> None:
        await stubs.record_run(self._record_input(status, finished=finished))

    def _record_input(self, status: str, *, finished: bool = False) -> RunRecordInput:
        req = self._input_request()
        plan = self._run.plan
        return RunRecordInput(
            tenant=req.tenant,
            workflow_id=self._ref.workflow_id,
            principal=req.principal,
            status=status,
            goal=req.goal,
            playbook=req.playbook,
            playbook_sha256=playbook_digest(req) if status == "planning" else None,
            plan_hash=plan.plan_hash if plan else None,
            tokens=self._run.spent.tokens,
            cost_usd=self._run.spent.usd,
            minutes_saved=self._run.minutes_saved(),
            labels=req.labels,
            summary=self._record_summary(),
            finished=finished,
        )

    def _record_summary(self) -> dict[str, JsonValue]:
        """What run_finished carries: the reasons, step counts and, if cancelled, by whom."""
        steps: dict[str, JsonValue] = {**self._run.step_counts()}
        summary: dict[str, JsonValue] = {"reasons": list(self._run.reasons), "steps": steps}
        if self._cancel is not None:
            summary["cancel"] = {
                "requested_by": self._cancel.actor,
                "reason": self._cancel.reason,
                "attribution": self._cancel.attribution,
            }
        return summary

    def _ended(self) -> bool:
        return self._run.status in TERMINAL_RUN_STATES
