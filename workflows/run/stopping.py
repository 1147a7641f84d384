"""Cancels: who asks the run to stop, proven where the tenant's approvals need proof.

The rules mirror the approval desk's (``desk.py``). A cancel by update is checked by
its validator before Temporal writes it: a token not narrowed to exactly this run and
reason, or no token where the tenant needs one, is refused, reported out of band
(``stead.approval_refusals``, as ``cancel_refused``) and never enters history. A
cancel by signal is in history before any handler runs, so such a token is burned,
then refused and audited. A narrowed token is verified by ``identity.verify_cancel``
(signature, tenant, principal, directory) and spent there, so the copy history now
holds cannot be replayed. A refused cancel changes nothing: the run keeps going.

A signal *without* a token still stops the run, as the Temporal UI's cancel button
does, and is audited as ``claimed`` or ``unattributed``: whoever can signal a run can
terminate it through Temporal anyway, so refusing it would protect nothing, and the
audit never calls such a cancel proven. Only ``attribution: token`` is proven.
"""

from __future__ import annotations

import contextlib
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.cancel_input import ReceivedCancel, cancel_history_problem, receive_cancel
from workflows.run import stubs
from workflows.run.desk import RunApprovals
from workflows.run.failures import failure_reasons

with workflow.unsafe.imports_passed_through():
    from stead.approval_refusals import ValidatorRefusal, report
    from stead.contracts.identity import ApprovalCheck, VerifyCancelInput


def _refused(reason: str) -> ApplicationError:
    return ApplicationError(reason, type="CancelRefused", non_retryable=True)


class RunStopping(RunApprovals):
    def _tokens_required(self) -> bool:
        """What the tenant's policy said when the run was admitted (None: require)."""
        return self._run.approval_authentication != "none"

    def _cancel_problem(self, received: ReceivedCancel, *, via: str) -> str | None:
        # A signal without a token still stops the run, recorded as claimed (see above).
        required = self._tokens_required() and (via == "update" or received.token is not None)
        return cancel_history_problem(received, self._ref.workflow_id, required)

    def _validate_cancel(self, args: tuple[Any, ...]) -> None:
        received = receive_cancel(args)
        problem = self._cancel_problem(received, via="update")
        if problem is None:
            return
        if not workflow.unsafe.is_replaying():
            update = workflow.current_update_info()
            report(
                ValidatorRefusal(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    run_id=self._ref.run_id,
                    step_id=None,
                    actor=received.actor,
                    reason=problem,
                    data={"via": "update", "update_id": update.id if update else ""},
                    kind="cancel_refused",
                )
            )
        raise _refused(problem)

    async def _cancel_by_update(self, args: tuple[Any, ...]) -> None:
        received = receive_cancel(args)
        problem = self._cancel_problem(received, via="update")
        if problem is not None:
            # The validator refused it; only a replay without validation gets here.
            raise _refused(problem)
        check = await self._verify_cancel(received)
        if check is not None and not check.accepted:
            await self._cancel_refused(received, check.reason or "cancel refused", via="update")
            raise _refused(check.reason or "cancel refused")
        await self._stop(received, check)

    async def _cancel_by_signal(self, args: tuple[Any, ...]) -> None:
        received = receive_cancel(args)
        problem = self._cancel_problem(received, via="signal")
        if problem is not None:
            burned = await self._burn_exposed(received.token, problem)
            if burned:
                problem += (
                    "; the token is now in this run's history, so it is revoked: get a new "
                    "one with `stead principal token`"
                )
            await self._cancel_refused(received, problem, via="signal", token_burned=burned)
            return
        check = await self._verify_cancel(received)
        if check is not None and not check.accepted:
            await self._cancel_refused(received, check.reason or "cancel refused", via="signal")
            return
        await self._stop(received, check)

    async def _verify_cancel(self, received: ReceivedCancel) -> ApprovalCheck | None:
        """Prove a cancel that carries a token (None: claimed, in a tenant without tokens)."""
        if received.token is None:
            return None
        try:
            return await stubs.verify_cancel(
                VerifyCancelInput(
                    tenant=self._tenant,
                    workflow_id=self._ref.workflow_id,
                    requested_by=received.actor,
                    reason=received.reason,
                    token=received.token,
                )
            )
        except ActivityError as err:
            return ApprovalCheck(
                accepted=False,
                reason="the cancel's token could not be verified, so the run keeps going: "
                + "; ".join(failure_reasons(err)),
            )

    async def _stop(self, received: ReceivedCancel, check: ApprovalCheck | None) -> None:
        """Stop the run; audited as ``cancel_requested`` with who asked, why and the proof.

        The flag is set before the first await, so the run stops as soon as the cancel
        counts, and the first accepted cancel is the one the run's reason names.
        """
        if check is not None and check.authenticated:
            received = received._replace(attribution="token", token=None)
        self._cancel_requested = True
        if self._cancel is None:
            self._cancel = received
        data = received.audit_data()
        if check is not None and check.authenticated:
            data["token_id"] = check.token_id
        # Before the run's record exists the audit is refused (no record to scope it to);
        # the cancel still stands and run_finished names who asked and why.
        with contextlib.suppress(ActivityError):
            await self._audit("cancel_requested", received.actor, None, data)

    async def _cancel_refused(
        self, received: ReceivedCancel, reason: str, *, via: str, token_burned: bool | None = False
    ) -> None:
        data: dict[str, object] = {"reason": reason, "via": via}
        if token_burned is not False:
            data["token_burned"] = token_burned
        with contextlib.suppress(ActivityError):
            await self._audit("cancel_refused", received.actor, None, data)
