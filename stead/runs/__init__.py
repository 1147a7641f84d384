"""Run records, policy decisions and group membership: the queryable shadow of each run."""

from stead.runs.store import (
    DecisionIdTaken,
    DecisionKind,
    DecisionRecord,
    RunNotRecorded,
    RunRecord,
    add_group_member,
    get_run,
    group_members,
    list_decisions,
    list_runs,
    record_decision,
    record_run_started,
    record_run_status,
)

__all__ = [
    "DecisionIdTaken",
    "DecisionKind",
    "DecisionRecord",
    "RunNotRecorded",
    "RunRecord",
    "add_group_member",
    "get_run",
    "group_members",
    "list_decisions",
    "list_runs",
    "record_decision",
    "record_run_started",
    "record_run_status",
]
