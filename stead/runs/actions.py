"""Temporal Cloud Actions of a run, counted from its event histories.

Actions are what Temporal Cloud bills, so they are what a governed step costs a Cloud
user on top of the work it does. The rules are Temporal Cloud's published ones
(docs.temporal.io/cloud/actions), applied to what a history records:

- a workflow run started (a client start, each continue-as-new, a child start): 1;
- a child workflow started: 2 (the start and the child's execution);
- an activity started or retried: 1 per attempt (the ``ActivityTaskStarted`` event
  carries the attempt number; retries leave no event of their own);
- local activities: all markers a workflow task records count as 1 (Cloud bills the
  ``RecordMarker`` commands of one workflow task as one Action; a patch marker in the
  same task rides on it);
- a timer started, a signal received or sent, an update accepted, a search-attribute
  upsert (not one that only sets ``TemporalChangeVersion``), a Nexus operation
  scheduled or cancel requested, a workflow-options update: 1 each.

What a history cannot show is left out, as Cloud's own history-based estimate leaves
it out: queries, activity heartbeats, rejected updates, schedules, exports. A
signal-with-start is counted 2 here (Cloud bills it 1); Stead does not use one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from pydantic import Field
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory

from stead.contracts.base import Closed

VERSION_ATTRIBUTE = "TemporalChangeVersion"

# One Action per event of these types.
_ONE_EACH: Mapping[int, str] = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED: "workflow_started",
    EventType.EVENT_TYPE_TIMER_STARTED: "timer_started",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED: "signal",
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "signal",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "update",
    EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED: "nexus",
    EventType.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED: "nexus",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED: "options_updated",
}


class ActionCount(Closed):
    """Billable Actions of one or more workflow runs, by kind, and per step when known."""

    total: int
    by_kind: dict[str, int] = Field(default_factory=dict)
    steps: int | None = None

    @property
    def per_step(self) -> float | None:
        return None if not self.steps else self.total / self.steps

    def with_steps(self, steps: int) -> ActionCount:
        return self.model_copy(update={"steps": steps})

    def summary(self) -> dict[str, object]:
        """What ``stead status --json`` prints under ``temporal_actions``."""
        per = self.per_step
        return {
            "total": self.total,
            "per_step": None if per is None else round(per, 2),
            "by_kind": dict(sorted(self.by_kind.items())),
        }


def _only_versioning(event: HistoryEvent) -> bool:
    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
    return set(fields.indexed_fields) <= {VERSION_ATTRIBUTE}


def event_actions(events: Iterable[HistoryEvent]) -> Counter[str]:
    """Actions by kind in one run's events (see the module docstring for the rules)."""
    kinds: Counter[str] = Counter()
    marker_tasks: set[int] = set()
    for event in events:
        kind = event.event_type
        if kind in _ONE_EACH:
            kinds[_ONE_EACH[kind]] += 1
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attempt = event.activity_task_started_event_attributes.attempt
            kinds["activity_attempt"] += max(1, attempt)
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            kinds["child_workflow"] += 2
        elif kind == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            if not _only_versioning(event):
                kinds["search_attribute_upsert"] += 1
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            task = event.marker_recorded_event_attributes.workflow_task_completed_event_id
            if task not in marker_tasks:
                marker_tasks.add(task)
                kinds["marker_task"] += 1
    return kinds


def count_actions(histories: Iterable[WorkflowHistory]) -> ActionCount:
    """Actions of a run: every workflow run of its continue-as-new chain together."""
    kinds: Counter[str] = Counter()
    for history in histories:
        kinds += event_actions(history.events)
    return ActionCount(total=sum(kinds.values()), by_kind=dict(kinds))


async def run_histories(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Every run of ``workflow_id``'s continue-as-new chain, oldest first.

    Walks back from the latest run through each start event's
    ``continued_execution_run_id``, so it needs only the workflow id a user has.
    """
    histories: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        first = history.events[0] if history.events else None
        if first is None or first.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            break
        previous = first.workflow_execution_started_event_attributes.continued_execution_run_id
        if not previous:
            break
        run_id = previous
    histories.reverse()
    return histories
