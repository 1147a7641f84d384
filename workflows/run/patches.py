"""Patch ids: histories recorded before these checks existed replay without them."""

from __future__ import annotations

from temporalio import workflow

MEMORY_RECALL_PATCH = "memory-recall-before-planning"
MEMORY_SUMMARY_PATCH = "memory-remember-run-summary"
RUN_ADMISSION_PATCH = "identity-run-admission"
VERIFIED_APPROVALS_PATCH = "identity-verified-approvals"
CAPABILITY_GRANTS_PATCH = "capability-grants-for-routed-steps"
STORED_PLANS_PATCH = "plans-stored-by-reference"
FUSED_STEP_PATCH = "fused-decide-execute"
LOCAL_BOOKKEEPING_PATCH = "local-run-bookkeeping"
# Per-run fixed cost: the start record and admission in one local activity (runs.open),
# the plan and its decision in one activity, search attributes upserted only on change.
RUN_FIXED_COST_PATCH = "run-fixed-cost"
# Cancels are audited (``cancel_requested``); asked in the handler, so only runs that
# get a cancel pay for the marker.
CANCEL_AUDIT_PATCH = "cancel-attributed"


def lean() -> bool:
    """Whether this run started on code with the run-fixed-cost patch (see ``since``)."""
    return workflow.patched(RUN_FIXED_COST_PATCH)


def since(patch: str) -> bool:
    """``workflow.patched(patch)`` for the patches older than run-fixed-cost.

    Each patch a new run meets costs it a marker event and a ``TemporalChangeVersion``
    search-attribute upsert (SDK core adds one per patch): five or six pairs per run,
    more history and visibility writes than the run's own upserts. A run with the
    run-fixed-cost marker was started by code in which every older patch is in force,
    so it asks only that one (the first thing ``run`` does, memoized by the SDK);
    histories without it ask each patch where they always did and replay unchanged.
    """
    return lean() or workflow.patched(patch)
