"""The approval desk: steps waiting for humans, their votes, and who may cast them.

Two rules shape this module. Only a token narrowed to exactly this approval may be
written to history (a bare one could be lifted by any reader): the update's validator
refuses anything else before Temporal writes it, and reports that refusal out of band
(stead.approval_refusals), because a rejected update leaves no event and a validator
cannot run activities. Signals are written before any handler runs, so an unnarrowed
token in one is burned instead. And every other refusal is accepted into the handler
and audited there, so each refused approval, by update or signal, malformed or not,
leaves one audit row.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.approval_input import Received, burnable, history_problem, receive
from workflows.run import stubs
from workflows.run.failures import StepStop, failure_reasons
from workflows.run.planning import RunPlanning

with workflow.unsafe.imports_passed_through():
    from stead.approval_refusals import ValidatorRefusal, report
    from stead.contracts.identity import ApprovalCheck, BurnTokenInput, VerifyApprovalInput
    from stead.contracts.run import (
        ApprovalInput,
        ApprovalRecord,
        Decision,
        PendingApproval,
        Plan,
        Step,
        StepResult,
    )


# A vote counts once its approval_accepted row is written (before: as it arrived, so the
# step could run, and its effect be audited, while that row was still being retried).
VOTE_AFTER_AUDIT = "vote-after-audit"


def _refused(reason: str, *, repeat: bool = False) -> ApplicationError:
    """``repeat``: the approver's vote is already in (or on its way into) the run, which
    a client resending after an unknown outcome needs to tell from a refusal."""
    kind = "ApprovalRepeated" if repeat else "ApprovalRefused"
    return ApplicationError(reason, type=kind, non_retryable=True)


class RunApprovals(RunPlanning):
    async def _await_approval(
        self, step: Step, plan: Plan, decision: Decision, escalated: bool
    ) -> bool:
        """Wait for enough votes, a rejection, a cancel or the timeout; True once escalated."""
        policy = decision.approval
        if policy is None:
            raise StepStop(
                "denied", "policy asked for approval without saying who approves", decision
            )
        eligible = policy.escalate_eligible if escalated else policy.eligible
        approvers = policy.escalate_to if escalated else policy.approvers
        now = workflow.now()
        self._pending[step.id] = PendingApproval(
            workflow_id=self._ref.workflow_id,
            tenant=self._tenant,
            step_id=step.id,
            operation=step.operation,
            plan_hash=plan.plan_hash,
            args=step.args,
            reasons=decision.reasons,
            approvers=approvers,
            eligible=eligible,
            requested_by=self._request_principal,
            since=now,
            deadline=now + timedelta(seconds=policy.timeout_seconds),
        )
        self._pending_policy[step.id] = (frozenset(eligible), policy.allow_self_approval)
        self._run.put_result(step, "awaiting_approval", decision=decision)
        self._refresh_pending_flag()
        votes_before = len(self._votes.get(step.id, ()))
        try:
            await workflow.wait_condition(
                lambda: (
                    self._cancel_requested
                    or self._rejection(step.id) is not None
                    or (
                        self._approvals(step.id) >= policy.min_approvals
                        and len(self._votes.get(step.id, ())) > votes_before
                    )
                ),
                timeout=timedelta(seconds=policy.timeout_seconds),
            )
        except TimeoutError:
            self._clear_pending(step.id)
            if policy.on_timeout == "escalate" and not escalated and policy.escalate_to:
                await self._audit(
                    "approval_escalated", "system:stead", step.id, {"to": list(policy.escalate_to)}
                )
                return True
            await self._audit(
                "approval_timed_out", "system:stead", step.id, {"escalated": escalated}
            )
            raise StepStop(
                "rejected",
                "approval timed out" + (" after escalation" if escalated else ""),
                decision,
            ) from None
        self._clear_pending(step.id)
        if self._cancel_requested:
            raise StepStop("cancelled", "cancelled while awaiting approval", decision)
        return escalated

    # ------------------------------------------------------------ the handlers' bodies

    async def _approve_by_update(self, args: tuple[Any, ...]) -> StepResult:
        received = receive(args)
        approval = received.approval
        if approval is None:
            # The validator refused it; only a replay without validation gets here.
            raise _refused(received.problem or "malformed approval")
        problem = self._approval_problem(approval)
        if problem is not None:
            await self._approval_refused(received, problem, via="update")
            raise _refused(problem, repeat=self._has_voted(approval))
        check = await self._authenticate(approval, via="update")
        if not check.accepted:
            raise _refused(check.reason or "approval refused", repeat=self._has_voted(approval))
        await self._accept(approval, check)
        return self._result_for_voter(approval.step_id)

    def _result_for_voter(self, step_id: str) -> StepResult:
        """The step as the approver's vote left it. A rejection can trigger a replan while
        the vote's audit activity is still running, and the replan drops the rejected
        step's result from the carry: the update then answers from ``_replaced``. A step
        still awaiting approval answers with the votes counted so far. (An
        uncaught KeyError here would fail the workflow task on every retry and hang the
        approver's update.)"""
        result = self._run.results.get(step_id) or self._replaced.get(step_id)
        if result is None:
            raise ApplicationError(
                f"step {step_id} is no longer part of this run", type="ApprovalRefused"
            )
        if result.status == "awaiting_approval":
            # Written when the step began to wait: the votes counted since (this one,
            # now counted after its audit row) are the run's, not yet the result's.
            return result.model_copy(update={"approvals": self._votes_of(step_id)})
        return result

    def _validate_approval(self, args: tuple[Any, ...]) -> None:
        """Refuse, before it is written, what must never be in history; report the refusal."""
        received = receive(args)
        approval = received.approval
        problem = received.problem
        if approval is not None:
            problem = history_problem(approval, self._ref.workflow_id)
        if problem is None:
            return
        if not workflow.unsafe.is_replaying():
            update = workflow.current_update_info()
            report(
                ValidatorRefusal(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    run_id=self._ref.run_id,
                    step_id=received.step_id,
                    actor=received.actor,
                    reason=problem,
                    data={
                        "via": "update",
                        "verdict": received.verdict or "",
                        "update_id": update.id if update else "",
                    },
                )
            )
        raise _refused(problem)

    async def _approve_by_signal(self, args: tuple[Any, ...]) -> None:
        received = receive(args)
        approval = received.approval
        problem = received.problem
        if approval is not None:
            problem = history_problem(approval, self._ref.workflow_id)
        if problem is not None:
            burned = await self._burn_exposed(received.token, problem)
            if burned:
                problem += (
                    "; the token is now in this run's history, so it is revoked: get a new "
                    "one with `stead principal token`"
                )
            await self._approval_refused(received, problem, via="signal", token_burned=burned)
            return
        assert approval is not None
        problem = self._approval_problem(approval)
        if problem is not None:
            await self._approval_refused(received, problem, via="signal")
            return
        check = await self._authenticate(approval, via="signal")
        if not check.accepted:
            return
        await self._accept(approval, check)

    # ------------------------------------------------------------------ the checks

    async def _burn_exposed(self, token: str | None, why: str) -> bool | None:
        """Revoke a token this run's history now holds unnarrowed.

        True when burned, False when there was nothing to burn (no token, garbage, not
        signed by us), None when the burn could not be recorded: the audit row then
        says ``token_burned: null`` so an operator revokes the principal's tokens.
        """
        if not burnable(token):
            return False
        assert token is not None
        try:
            burned = await stubs.burn_token(
                BurnTokenInput(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    token=token,
                    reason=why[:1_000],
                )
            )
        except ActivityError:
            return None
        return burned.burned > 0

    async def _approval_refused(
        self, received: Received, reason: str, *, via: str, token_burned: bool | None = False
    ) -> None:
        data: dict[str, object] = {"reason": reason, "verdict": received.verdict, "via": via}
        if token_burned is not False:
            data["token_burned"] = token_burned
        await self._audit("approval_refused", received.actor, received.step_id, data)

    async def _authenticate(self, approval: ApprovalInput, via: str) -> ApprovalCheck:
        """Prove the approver (activity: policy, token and directory), then re-check the vote.

        A refusal is audited here, once. The checks without I/O run again afterwards because the
        step may have moved on, or the same approver's other vote been counted, while
        the activity ran. Whether the tenant needs a token at all is the activity's
        decision, read from policy each time, never this run's state.
        """
        pending = self._pending.get(approval.step_id)
        try:
            check = await stubs.verify_approval(
                VerifyApprovalInput(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    step_id=approval.step_id,
                    plan_hash=approval.plan_hash,
                    approver=approval.approver,
                    verdict=approval.verdict,
                    approvers=pending.approvers if pending is not None else (),
                    token=approval.token,
                )
            )
        except ActivityError as err:
            check = ApprovalCheck(
                accepted=False,
                reason="the approver's identity could not be verified, so the vote is not "
                "counted: " + "; ".join(failure_reasons(err)),
            )
        problem = check.reason if not check.accepted else self._approval_problem(approval)
        if problem is None:
            return check
        await self._audit(
            "approval_refused",
            approval.approver,
            approval.step_id,
            {"reason": problem, "verdict": approval.verdict, "via": via},
        )
        return ApprovalCheck(accepted=False, reason=problem)

    def _approval_problem(self, approval: ApprovalInput) -> str | None:
        """Why this vote cannot count here, from the run's own state (no I/O)."""
        plan = self._run.plan
        if approval.step_id not in self._pending:
            return f"step {approval.step_id} is not awaiting approval"
        if plan is None or approval.plan_hash != plan.plan_hash:
            return "plan hash does not match the plan awaiting approval; re-read `stead status`"
        eligible, self_ok = self._pending_policy[approval.step_id]
        if approval.approver == self._request_principal and not self_ok:
            return f"{approval.approver} started this run and may not approve its steps"
        if approval.approver not in eligible:
            return f"{approval.approver} is not an approver for step {approval.step_id}"
        if self._has_voted(approval):
            return f"{approval.approver} already voted on step {approval.step_id}"
        return None

    def _has_voted(self, approval: ApprovalInput) -> bool:
        """The approver's vote on the step is counted, or its audit row is being written."""
        step_votes = self._votes.get(approval.step_id, ())
        return any(v.approver == approval.approver for v in step_votes) or (
            (approval.step_id, approval.approver) in self._voting
        )

    async def _accept(self, approval: ApprovalInput, check: ApprovalCheck) -> None:
        """Count the vote once its ``approval_accepted`` row is written.

        The step waits on ``_votes``, so a vote counted before its row is written lets
        the step run (and its effect be audited) while the approval's row is still being
        retried, or never written at all. Until the row is written the vote is in
        ``_voting``: a second vote by the same approver meanwhile is refused as a
        repeat, and a vote whose row cannot be written is not counted (the approver's
        update fails, the step still waits). Runs that took the old order replay it.
        """
        record = ApprovalRecord(
            approver=approval.approver,
            verdict=approval.verdict,
            comment=approval.comment,
            at=workflow.now(),
        )
        data: dict[str, object] = {
            "verdict": approval.verdict,
            "comment": approval.comment,
            "plan_hash": approval.plan_hash,
            "authenticated": check.authenticated,
            "token_id": check.token_id,
        }
        if not workflow.patched(VOTE_AFTER_AUDIT):
            self._votes.setdefault(approval.step_id, []).append(record)
            await self._audit("approval_accepted", approval.approver, approval.step_id, data)
            return
        voting = (approval.step_id, approval.approver)
        self._voting.add(voting)
        try:
            await self._audit("approval_accepted", approval.approver, approval.step_id, data)
        finally:
            self._voting.discard(voting)
        self._votes.setdefault(approval.step_id, []).append(record)

    def _approvals(self, step_id: str) -> int:
        return sum(1 for v in self._votes.get(step_id, ()) if v.verdict == "approve")

    def _rejection(self, step_id: str) -> str | None:
        for vote in self._votes.get(step_id, ()):
            if vote.verdict == "reject":
                return f"rejected by {vote.approver}" + (
                    f": {vote.comment}" if vote.comment else ""
                )
        return None

    def _clear_pending(self, step_id: str) -> None:
        self._pending.pop(step_id, None)
        self._pending_policy.pop(step_id, None)
        self._refresh_pending_flag()

    def _refresh_pending_flag(self) -> None:
        """Status and pending flag follow the desk, since ``fewer-actions`` in one upsert
        (before it in two: two Actions more per approval)."""
        waiting = bool(self._pending)
        if self._ended():
            self._upsert(pending=waiting)
        elif self._fewer_actions:
            self._set_status("awaiting_approval" if waiting else "running", pending=waiting)
        else:
            self._set_status("awaiting_approval" if waiting else "running")
            self._upsert(pending=waiting)
