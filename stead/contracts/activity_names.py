"""The names of the activities the run workflow calls, in one place.

A name is part of every history that scheduled it: renaming one breaks each parked
run that will call it again. The ``@activity.defn``s and the workflow's typed stubs
(``workflows/run/stubs.py``) both use these constants, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Final

RUNS_OPEN: Final = "runs.open"
RUNS_RECORD: Final = "runs.record"
RUNS_SEAL: Final = "runs.seal"
RUNS_VERIFY_SEAL: Final = "runs.verify_seal"
AUDIT_APPEND: Final = "audit.append"
PLAN_CREATE_DECIDED: Final = "plan.create_decided"
PLAN_WINDOW: Final = "plan.window"
POLICY_DECIDE_PLAN: Final = "policy.decide_plan"
POLICY_DECIDE_STEP: Final = "policy.decide_step"
STEP_RUN: Final = "step.run"
EXPRESS_STEP: Final = "express.step"
ADAPTER_EXECUTE: Final = "adapter.execute"
CAPABILITY_ISSUE: Final = "capability.issue"
MEMORY_RECALL: Final = "memory.recall"
MEMORY_REMEMBER_RUN_SUMMARY: Final = "memory.remember_run_summary"
IDENTITY_VERIFY_APPROVAL: Final = "identity.verify_approval"
IDENTITY_VERIFY_CANCEL: Final = "identity.verify_cancel"
IDENTITY_BURN_TOKEN: Final = "identity.burn_token"
