"""The field cases' pure building blocks: a playbook's on_reject expansion, structured
memory content, and a reconciliation that reads earlier findings. No services needed;
the end-to-end stories are in test_case_content.py and test_case_commerce.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import JsonValue, ValidationError

from adapters.memory import HistoryItem, RememberArgs, remembered_data
from adapters.registry import default_catalog
from stead.contracts.activities import PlanFailure
from stead.contracts.run import Budget, Step
from stead.operations.base import OperationContext
from stead.planning.playbooks import (
    Failure,
    PlaybookError,
    expand,
    expand_replan,
    failure_of,
    load_playbook,
    parse_playbook,
)
from stead.planning.validate import validate_plan
from stead_cases.commerce import ReconcileArgs, reconcile
from tests.conftest import REPO

INPUTS: dict[str, JsonValue] = {
    "week": "2025-W23",
    "video_title": "A plywood workbench",
    "platform_url": "http://127.0.0.1:8601",
    "subscribers": ["ada@example.com"],
}
DRAFTED = ("brief", "calendar", "draft_x", "draft_linkedin", "draft_newsletter", "package")
COMMENT = "Say the livestream starts Friday at 6pm"


def weekly_replan(
    attempt: int, failed: str, completed: tuple[str, ...], **failure: str
) -> list[Step]:
    playbook = load_playbook("content-weekly", REPO / "playbooks")
    return expand_replan(
        playbook,
        INPUTS,
        attempt=attempt,
        failure=Failure(step=failed, **{"state": "rejected", "comment": COMMENT, **failure}),
        completed=completed,
    )


def test_a_rejected_publish_adds_redrafts_with_the_comment_and_rewires_what_follows() -> None:
    steps = {s.id: s for s in weekly_replan(2, "publish", DRAFTED)}

    assert list(steps) == [
        "redraft_x_2",
        "redraft_linkedin_2",
        "repackage_2",
        "republish_2",
        "newsletter",
        "remember",
    ]
    redraft = steps["redraft_x_2"]
    assert redraft.args["context"]["feedback"] == COMMENT  # type: ignore[index,call-overload]
    assert redraft.args["context"]["previous"] == {"$ref": "steps.draft_x.output.text"}  # type: ignore[index,call-overload]
    assert redraft.rationale == f"redraft after publish was rejected: {COMMENT}"
    assert steps["repackage_2"].depends_on == ("redraft_x_2", "redraft_linkedin_2")
    assert steps["republish_2"].args["posts"] == {"$ref": "steps.repackage_2.output.posts"}
    assert steps["newsletter"].depends_on == ("republish_2", "draft_newsletter")
    assert steps["remember"].depends_on == ("republish_2", "repackage_2")
    reasons = validate_plan(list(steps.values()), default_catalog(), Budget(), completed=DRAFTED)
    assert reasons == []


def test_a_second_rejection_redrafts_from_the_newest_redraft() -> None:
    completed = (*DRAFTED, "redraft_x_2", "redraft_linkedin_2", "repackage_2")
    steps = {s.id: s for s in weekly_replan(3, "republish_2", completed, comment="Shorter")}

    assert "redraft_x_3" in steps and "republish_3" in steps
    context = steps["redraft_x_3"].args["context"]
    assert context["previous"] == {"$ref": "steps.redraft_x_2.output.text"}  # type: ignore[index,call-overload]
    assert context["feedback"] == "Shorter"  # type: ignore[index,call-overload]
    assert steps["redraft_x_3"].depends_on == ("brief", "calendar", "redraft_x_2")
    assert steps["newsletter"].depends_on == ("republish_3", "draft_newsletter")


def test_a_failure_that_is_not_a_rejection_replans_only_what_is_left() -> None:
    steps = weekly_replan(2, "publish", DRAFTED, state="failed")
    assert [s.id for s in steps] == ["publish", "newsletter", "remember"]


def test_the_replan_is_deterministic() -> None:
    first = weekly_replan(2, "publish", DRAFTED)
    assert first == weekly_replan(2, "publish", DRAFTED)


def test_failure_of_reads_the_workflows_structured_failure() -> None:
    detail = PlanFailure(
        step_id="publish",
        operation="platform.publish",
        state="rejected",
        reason=f"rejected by user:creator: {COMMENT}",
        approver="user:creator",
        comment=COMMENT,
    )
    failure = failure_of(detail)
    assert failure is not None and (failure.step, failure.comment) == ("publish", COMMENT)
    assert failure.approver == "user:creator" and failure_of(None) is None


BAD_BLOCKS = """
name: bad
steps:
  - id: a
    operation: records.put
    args: {key: k, value: {}}
    on_reject:
      - {id: b, operation: records.put, replaces: nope, args: {key: k, value: {}}}
      - {id: a, operation: records.put, args: {key: k, value: {}}}
      - {id: c_2, operation: records.put, args: {key: k, value: {}}}
"""


def test_on_reject_blocks_are_checked_when_the_playbook_is_parsed() -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(BAD_BLOCKS, "inline")
    text = " ".join(caught.value.reasons)
    assert "on_reject, which needs on_failure: replan" in text
    assert "replaces 'nope', not a playbook step" in text
    assert "on_reject 'a': the id is already used" in text
    assert "ids ending in _<number> are for the redone steps" in text


def test_failure_placeholders_only_work_in_on_reject_and_are_checked_on_the_first_plan() -> None:
    playbook = parse_playbook(
        """
name: p
steps:
  - id: a
    operation: records.put
    args: {key: "${failure.comment}", value: {}}
    on_failure: replan
    on_reject:
      - {id: b, operation: records.put, args: {key: "${failure.typo}", value: {}}}
""",
        "inline",
    )
    with pytest.raises(PlaybookError) as caught:
        expand(playbook, {})
    assert caught.value.reasons[0] == (
        "step 'a': ${failure.comment} is only available in on_reject steps"
    )
    assert caught.value.reasons[1].startswith("step 'a' on_reject 'b': unknown ${failure.typo}")


def test_structured_memory_is_rendered_once_and_read_back() -> None:
    data = {"week": "2025-W23", "posts": [{"id": "post_1", "text": "a\n```json\nb"}]}
    common = {"namespace": "content", "key": "published", "content": "Week 23", "reason": "r"}
    args = RememberArgs.model_validate({**common, "data": data})
    reordered = {"posts": data["posts"], "week": "2025-W23"}
    again = RememberArgs.model_validate({**common, "data": reordered})
    assert args.text == again.text  # key order does not change what is stored
    assert args.text.startswith("Week 23\n\n```json\n")
    assert remembered_data(args.text) == data
    assert remembered_data("plain words") is None


def test_oversized_or_empty_memory_is_refused_with_what_to_do() -> None:
    with pytest.raises(ValidationError, match="one memory version holds at most 64000"):
        RememberArgs(namespace="n", key="k", reason="r", data=["x" * 1_000] * 70)
    with pytest.raises(ValidationError, match="give content, data, or both"):
        RememberArgs(namespace="n", key="k", reason="r")


async def test_reconcile_names_the_skus_mismatched_again_since_the_last_run() -> None:
    ctx = OperationContext(
        tenant="t", principal="agent:a", workflow_id="w", step_id="compare", idempotency_key="k"
    )
    product = {"title": "Mug", "unit_price": 10.0, "currency": "EUR"}
    last = HistoryItem(
        namespace="commerce",
        key="reconciliation",
        version=3,
        content="...",
        data={"auto_fix": [{"sku": "MUG-01"}], "escalated": [{"sku": "LMP-05"}]},
        written_by="agent:a",
        workflow_id="run-before",
        step_id="remember",
        recorded_at="2025-06-01T02:30:00+00:00",
    )
    args = ReconcileArgs.model_validate(
        {
            "shop": [
                {"sku": "MUG-01", "available": 5, **product},
                {"sku": "CAP-03", "available": 1, **product},
            ],
            "warehouse": [
                {"sku": "MUG-01", "name": "Mug", "sellable": 4, "unit_cost": 2},
                {"sku": "CAP-03", "name": "Cap", "sellable": 2, "unit_cost": 2},
            ],
            "auto_units": 5,
            "auto_value": 100,
            "history": [last.model_dump()],
        }
    )
    result = await reconcile(ctx, args)
    assert result.previous is not None and result.previous.workflow_id == "run-before"
    assert result.previous.mismatched == ["LMP-05", "MUG-01"]
    assert result.recurring == ["MUG-01"]
    assert "mismatched again: MUG-01" in result.summary


def test_the_shipped_playbooks_remember_in_memory() -> None:
    for name, key in (("content-weekly", "published"), ("commerce-reconcile", "reconciliation")):
        playbook = load_playbook(name, Path(REPO / "playbooks"))
        remember = next(s for s in expand(playbook, INPUTS_FOR[name]) if s.id == "remember")
        assert remember.operation == "memory.remember" and remember.args["key"] == key


INPUTS_FOR: dict[str, dict[str, JsonValue]] = {
    "content-weekly": INPUTS,
    "commerce-reconcile": {"shop_url": "http://127.0.0.1:1"},
}
