"""``stead.run``: open → plan → decide → approve → execute → record.

Deterministic: no I/O, clocks or randomness here; every fact about the world comes
from an activity result recorded in history. State lives in one ``RunProgress`` whose
``carry`` continue-as-new passes whole. Policy is the only authority: after a human
approves, the step is decided *again* with the approval in OPA's input, so the
approval counts only if policy says it is enough.

The layers, each using only those before it: ``books`` (fields, status, records,
audit) → ``opening`` (admission, sealed continuation) → ``planning`` → ``desk``
(approvals) → ``stopping`` (cancels) → ``lanes`` (express, fused, governed steps) →
``scheduler`` → this module (the entry point and the handlers Temporal sees).

No ``from __future__ import annotations`` here: the SDK reads the handlers' type hints
when ``@workflow.defn`` runs, once per sandbox (every cache miss), and evaluating
them from strings cost a compile and an eval each (bench/sandbox_cost.py).
"""

from typing import Any

from temporalio import workflow

from workflows.run.scheduler import RunScheduler

with workflow.unsafe.imports_passed_through():
    from stead.contracts.run import PendingApproval, Plan, RunInput, RunStatus, StepResult


@workflow.defn(name="stead.run")
class RunWorkflow(RunScheduler):
    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        super().__init__(inp)

    @workflow.run
    async def run(self, inp: RunInput) -> RunStatus:
        request = inp.request
        self._check_patches()
        if inp.carry is None:
            self._upsert(tenant=request.tenant, status=self._run.status, pending=False)
            refusal = await self._open_run()
            if refusal is not None:
                return await self._refused(refusal)
            plan = await self._make_plan(attempt=1, failure=None)
            if plan is None:
                return await self._finish()
            self._run.plan = plan
            self._set_status("running")
        else:
            refusal = await self._continuation_refusal(inp)
            if refusal is not None:
                self._upsert(tenant=request.tenant)
                self._owns_record = False
                await self._audit_refusal(refusal, continued=True)
                return await self._refused(refusal)
            self._run.resume(inp.carry)
            self._upsert(tenant=request.tenant, status=self._run.status, pending=False)
            if self._run.window_to_load() and not await self._load_window():
                return await self._finish()

        while await self._execute_plan() == "continue":
            await workflow.wait_condition(workflow.all_handlers_finished)
            carry = self._run.next_carry()
            seal = await self._seal(request, carry)
            if seal is None:
                return await self._finish()
            # A cancel that arrived while the seal was made is handled here, not lost.
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._cancel_requested:
                continue
            workflow.continue_as_new(RunInput(request=request, carry=carry, seal=seal))
        return await self._finish()

    async def _refused(self, reason: str) -> RunStatus:
        """End a run refused before it did anything: denied, nothing planned or run."""
        self._refused_at_door = True
        self._set_status("denied", (reason,))
        return await self._finish()

    async def _finish(self) -> RunStatus:
        await workflow.wait_condition(workflow.all_handlers_finished)
        self._run.mark_not_run()
        self._pending.clear()
        if self._fewer_actions:
            self._set_status(self._run.status, pending=False)
        else:
            self._set_status(self._run.status)
            self._upsert(pending=False)
        if self._owns_record:
            await self._record_run(self._run.status, finished=True)
        if not self._refused_at_door:
            await self._remember_summary()
        return self._snapshot()

    # ------------------------------------------------------------------ approvals

    @workflow.update(name="approve")
    async def approve(self, *args: Any) -> StepResult:
        return await self._approve_by_update(args)

    @approve.validator
    def _validate_approve(self, *args: Any) -> None:
        self._validate_approval(args)

    @workflow.signal(name="approve_signal")
    async def approve_signal(self, *args: Any) -> None:
        """The Temporal UI path: same checks as the update; refused attempts are audited.

        Anyone who can reach the UI can send this signal, so the UI proves nothing: the
        signal counts only when it carries a principal token narrowed to this approval
        (``stead principal sign-approval`` prints the input to paste), like the update.
        Temporal has written the signal before this runs, so a token in it that is not
        narrowed to this approval is exposed: it is burned, then the attempt refused.
        """
        await self._approve_by_signal(args)

    # --------------------------------------------------------------------- cancel

    @workflow.update(name="cancel")
    async def cancel_update(self, *args: Any) -> None:
        """Stop the run (``stead cancel``); refused, with the reason, if not proven where
        the tenant needs proof. ``stopping.py`` has the rules."""
        await self._cancel_by_update(args)

    @cancel_update.validator
    def _validate_cancel_update(self, *args: Any) -> None:
        self._validate_cancel(args)

    @workflow.signal(name="cancel")
    async def cancel(self, *args: Any) -> None:
        """Stop the run (the Temporal UI path); same rules as the update, refusals audited.

        ``*args``, not a typed payload: a bare or malformed cancel is still read and
        audited (``workflows/cancel_input.py``) instead of dropped by the SDK.
        """
        await self._cancel_by_signal(args)

    # -------------------------------------------------------------------- queries

    @workflow.query(name="status")
    def status(self) -> RunStatus:
        return self._snapshot()

    @workflow.query(name="plan")
    def plan(self) -> Plan | None:
        return self._run.plan

    @workflow.query(name="pending_approvals")
    def pending_approvals(self) -> list[PendingApproval]:
        return list(self._pending.values())
