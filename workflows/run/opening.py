"""Opening a run: admit a fresh start, or verify a continued run's sealed state."""

from __future__ import annotations

import contextlib

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.run import stubs
from workflows.run.books import RunBooks
from workflows.run.failures import failure_reasons

with workflow.unsafe.imports_passed_through():
    from stead.contracts.activities import OpenRunInput
    from stead.contracts.continuation import SealInput, VerifySealInput
    from stead.contracts.identity import AdmitRunInput, RunAdmission
    from stead.contracts.run import RunCarry, RunInput, RunRequest, start_digest


class RunOpening(RunBooks):
    async def _continuation_refusal(self, inp: RunInput) -> str | None:
        """Why this run's continuation state may not be used, or None.

        A carry is accepted only from a real continue-as-new of this chain (the server
        sets ``continued_run_id``; a client start cannot) and only with the seal the
        continuing run got from a worker for exactly that run id and that state.
        """
        assert inp.carry is not None
        continued = workflow.info().continued_run_id
        if continued is None:
            return (
                "continuation state was not sealed by this Stead's workers: a run carries "
                "state only when it continues as new from its own chain, and this one was "
                "started directly; start runs with `stead run`"
            )
        sealed = SealInput(
            workflow_id=self._ref.workflow_id,
            run_id=continued,
            request=inp.request,
            carry=inp.carry,
        )
        try:
            check = await stubs.verify_seal(VerifySealInput(sealed=sealed, seal=inp.seal))
        except ActivityError as err:
            return "continuation state could not be verified, so it is refused: " + "; ".join(
                failure_reasons(err)
            )
        return None if check.valid else (check.reason or "continuation state was refused")

    async def _seal(self, request: RunRequest, carry: RunCarry) -> str | None:
        """The worker's seal over the next run's input; None (run failed) if none is given."""
        try:
            return await stubs.seal(
                SealInput(
                    workflow_id=self._ref.workflow_id,
                    run_id=workflow.info().run_id,
                    request=request,
                    carry=carry,
                )
            )
        except ActivityError as err:
            self._set_status(
                "failed",
                ("the run could not continue as new: " + "; ".join(failure_reasons(err)),),
            )
            return None

    async def _audit_refusal(self, reason: str, **data: object) -> None:
        """``run_refused`` in the claimed tenant's audit log. If even that fails the run
        still ends denied: an audit outage never lets a refused run in."""
        with contextlib.suppress(ActivityError):
            await self._audit(
                "run_refused", self._request_principal, None, {"reason": reason, **data}
            )

    async def _open_run(self) -> str | None:
        """Record the run's start and admit its starter; why it may not run, or None.

        Both are one local activity (``runs.open``), which also verifies the start
        token and claims the workflow id for this run chain. If it fails the run is
        refused (a starter nobody could check runs nothing) and writes no record (it
        could be another run's).
        """
        try:
            admission = await stubs.open_run(
                OpenRunInput(admit=self._admit_input(), record=self._record_input("planning"))
            )
        except ActivityError as err:
            # Fail closed: a starter nobody could check runs nothing, and a record
            # that may not exist (or be another run's) is not written.
            self._owns_record = False
            reason = "the run could not be admitted: " + "; ".join(failure_reasons(err))
            await self._audit_refusal(reason)
            return reason
        if admission.id_taken:
            self._owns_record = False
        return await self._admission_refusal(admission)

    def _admit_input(self) -> AdmitRunInput:
        req = self._input_request()
        return AdmitRunInput(
            tenant=req.tenant,
            principal=req.principal,
            workflow_id=self._ref.workflow_id,
            chain_id=workflow.info().first_execution_run_id,
            request_digest=start_digest(req),
            start_token=self._start_token,
        )

    async def _admission_refusal(self, admission: RunAdmission) -> str | None:
        """Keep the run's approval policy; a refusal is audited and returned."""
        req = self._input_request()
        self._run.approval_authentication = admission.approval_authentication
        if admission.admitted:
            return None
        reason = admission.reason or f"{req.principal} may not start runs in {req.tenant}"
        await self._audit_refusal(reason)
        return reason
