"""Playbooks expand deterministically, and every plan is checked against the catalog first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue
from temporalio.exceptions import ApplicationError

from activities.planning import PlanningActivities
from stead.contracts.activities import PLAN_REJECTED, PlanInput
from stead.contracts.run import Budget, Plan, PlannerInfo, RunRequest, Step
from stead.errors import ConfigError
from stead.operations.base import Operation, OperationContext
from stead.operations.catalog import Catalog
from stead.planning import (
    PlaybookError,
    PlaybookNotFound,
    build_plan,
    expand,
    load_playbook,
    parse_playbook,
    validate_plan,
)
from stead.planning.preflight import preflight
from stead.settings import Settings

REPO = Path(__file__).resolve().parents[1]


class PutArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    value: dict[str, JsonValue]


class PutResult(BaseModel):
    key: str
    version: int


class GetArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str


class GetResult(BaseModel):
    value: dict[str, JsonValue] | None


class CountArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int
    prefix: str = ""


class CountResult(BaseModel):
    count: int


async def _put(ctx: OperationContext, args: PutArgs) -> PutResult:
    return PutResult(key=args.key, version=1)


async def _get(ctx: OperationContext, args: GetArgs) -> GetResult:
    return GetResult(value=None)


async def _count(ctx: OperationContext, args: CountArgs) -> CountResult:
    return CountResult(count=0)


CATALOG = Catalog(
    [
        Operation(
            name="records.put",
            description="Write a record.",
            args_model=PutArgs,
            result_model=PutResult,
            run=_put,
            side_effect="write",
            risk="medium",
            idempotency="key",
            scopes=("records:write",),
            timeout_seconds=12.0,
            max_attempts=3,
            task_queue="records",
        ),
        Operation(
            name="records.get",
            description="Read a record.",
            args_model=GetArgs,
            result_model=GetResult,
            run=_get,
            side_effect="read",
            risk="low",
            idempotency="native",
            scopes=("records:read",),
        ),
        Operation(
            name="records.count",
            description="Count records.",
            args_model=CountArgs,
            result_model=CountResult,
            run=_count,
            side_effect="read",
            risk="low",
            idempotency="native",
        ),
    ]
)

DEMO = REPO / "playbooks"


def step(step_id: str, operation: str, args: dict[str, JsonValue], *deps: str) -> Step:
    return Step(id=step_id, operation=operation, args=args, depends_on=deps)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"_env_file": None, "home": tmp_path, "playbook_dir": DEMO}
    return Settings(**values, **overrides)


# --- loading and expansion -------------------------------------------------------


def test_records_demo_expands_with_defaults_and_typed_inputs() -> None:
    steps = expand(load_playbook("records-demo", DEMO), {"key": "k1"})
    assert [s.id for s in steps] == ["put", "get"]
    assert steps[0].args == {"key": "k1", "value": {"text": "hello"}}
    assert steps[0].rationale == "store the note under k1"
    assert steps[0].minutes_saved == 2
    assert steps[1].args == {"key": {"$ref": "steps.put.output.key"}}
    assert steps[1].depends_on == ("put",)


def test_a_whole_string_placeholder_keeps_the_json_type() -> None:
    playbook = parse_playbook(
        """
name: typed
inputs:
  limit: {type: integer, required: true}
  tags: {type: array, default: [a, b]}
  flag: {type: boolean, default: false}
steps:
  - id: c
    operation: records.count
    args: {limit: "${inputs.limit}", prefix: "n=${inputs.limit} tags=${inputs.tags} $${raw}"}
  - id: p
    operation: records.put
    args: {key: k, value: {tags: "${inputs.tags}", flag: "${inputs.flag}"}}
""",
        "inline",
    )
    steps = expand(playbook, {"limit": "5"})  # text from a command line is coerced
    assert steps[0].args == {"limit": 5, "prefix": 'n=5 tags=["a", "b"] ${raw}'}
    assert steps[1].args == {"key": "k", "value": {"tags": ["a", "b"], "flag": False}}


def test_expansion_is_deterministic() -> None:
    playbook = load_playbook("records-demo", DEMO)
    first = Plan.hash_steps(tuple(expand(playbook, {"key": "k1", "note": "n"})))
    assert first == Plan.hash_steps(tuple(expand(playbook, {"key": "k1", "note": "n"})))
    assert first != Plan.hash_steps(tuple(expand(playbook, {"key": "k2", "note": "n"})))


def test_missing_required_input_is_an_error() -> None:
    with pytest.raises(PlaybookError) as caught:
        expand(load_playbook("records-demo", DEMO), {})
    assert caught.value.reasons == ["input 'key' is required"]


def test_undeclared_input_is_an_error_naming_the_declared_ones() -> None:
    with pytest.raises(PlaybookError) as caught:
        expand(load_playbook("records-demo", DEMO), {"key": "k", "colour": "red"})
    assert caught.value.reasons == [
        "input 'colour' is not declared by playbook 'records-demo' (declared: key, note)"
    ]


def test_wrong_input_type_is_an_error() -> None:
    playbook = parse_playbook(
        "name: t\ninputs: {n: {type: integer}}\nsteps: [{id: c, operation: records.count,"
        " args: {limit: '${inputs.n}'}}]",
        "inline",
    )
    with pytest.raises(PlaybookError, match=r"input 'n' must be an integer, got \"many\""):
        expand(playbook, {"n": "many"})


def test_placeholders_for_undeclared_or_unset_inputs_are_errors() -> None:
    playbook = parse_playbook(
        """
name: t
inputs: {opt: {type: string}}
steps:
  - {id: a, operation: records.get, args: {key: "${inputs.opt}"}}
  - {id: b, operation: records.get, args: {key: "${inputs.typo}"}}
  - {id: c, operation: records.get, args: {key: "${steps.a.output}"}}
""",
        "inline",
    )
    with pytest.raises(PlaybookError) as caught:
        expand(playbook, {})
    assert caught.value.reasons == [
        "step 'a': input 'opt' is not given and has no default",
        "step 'b': ${inputs.typo} names an undeclared input (declared: opt)",
        "step 'c': unsupported placeholder ${steps.a.output}; only ${inputs.<name>} is allowed"
        " (write $${ for a literal ${)",
    ]


def test_missing_playbook_lists_the_available_ones() -> None:
    available = r"no playbook 'nope' in .* \(available: .*records-demo"
    with pytest.raises(PlaybookNotFound, match=available):
        load_playbook("nope", DEMO)


def test_playbook_names_cannot_escape_the_directory() -> None:
    with pytest.raises(PlaybookNotFound, match="is not a playbook name"):
        load_playbook("../pyproject", DEMO)


def test_playbook_name_must_match_its_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("name: b\nsteps: [{id: x, operation: records.get}]\n")
    with pytest.raises(PlaybookError, match="declares name 'b'; rename it to 'a'"):
        load_playbook("a", tmp_path)


def test_malformed_playbooks_get_located_errors() -> None:
    with pytest.raises(PlaybookError, match="inline: invalid YAML"):
        parse_playbook("steps: [", "inline")
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(
            "name: t\nsteps:\n  - {id: put, operation: records.put, when: always}\n", "inline"
        )
    assert caught.value.reasons == ["inline: steps[0] (put).when: Extra inputs are not permitted"]
    with pytest.raises(PlaybookError, match=r"the default must be an integer, got \"x\""):
        parse_playbook(
            "name: t\ninputs: {n: {type: integer, default: x}}\n"
            "steps: [{id: a, operation: records.get}]",
            "inline",
        )
    with pytest.raises(PlaybookError, match="a required input cannot have a default"):
        parse_playbook(
            "name: t\ninputs: {k: {required: true, default: x}}\n"
            "steps: [{id: a, operation: records.get}]",
            "inline",
        )


# --- validation ----------------------------------------------------------------------


def test_a_valid_plan_has_no_reasons() -> None:
    steps = expand(load_playbook("records-demo", DEMO), {"key": "k1"})
    assert validate_plan(steps, CATALOG, Budget()) == []


def test_zero_steps_and_too_many_steps_are_rejected() -> None:
    assert validate_plan([], CATALOG, Budget()) == ["the plan has no steps"]
    many = [step(f"s{i}", "records.get", {"key": "k"}) for i in range(3)]
    assert validate_plan(many, CATALOG, Budget(max_steps=2)) == [
        "the plan has 3 steps; the budget allows at most 2"
    ]


def test_duplicate_ids_are_rejected() -> None:
    steps = [step("a", "records.get", {"key": "k"}), step("a", "records.get", {"key": "j"})]
    assert validate_plan(steps, CATALOG, Budget()) == ["step id 'a' is used more than once"]


def test_unknown_operation_lists_the_known_ones() -> None:
    reasons = validate_plan([step("a", "records.delete", {})], CATALOG, Budget())
    assert reasons == [
        "step 'a': unknown operation 'records.delete';"
        " known operations: records.count, records.get, records.put"
    ]


def test_arguments_must_fit_the_schema() -> None:
    reasons = validate_plan([step("a", "records.put", {"key": 5, "extra": 1})], CATALOG, Budget())
    assert len(reasons) == 1
    assert reasons[0].startswith("step 'a': arguments for records.put fail its schema: ")
    assert "key: Input should be a valid string" in reasons[0]
    assert "value: Field required" in reasons[0]
    assert "extra: Extra inputs are not permitted" in reasons[0]


def test_a_ref_skips_the_schema_only_where_it_sits() -> None:
    put = step("put", "records.put", {"key": "k", "value": {}})
    ok = step("get", "records.get", {"key": {"$ref": "steps.put.output.key"}}, "put")
    assert validate_plan([put, ok], CATALOG, Budget()) == []
    # The ref stands in for "key", but the unknown argument is still an error.
    bad = step("get", "records.get", {"key": {"$ref": "steps.put.output.key"}, "x": 1}, "put")
    reasons = validate_plan([put, bad], CATALOG, Budget())
    assert len(reasons) == 1 and "x: Extra inputs are not permitted" in reasons[0]
    assert "argument key" not in reasons[0]


def test_a_ref_must_name_a_step_in_depends_on() -> None:
    put = step("put", "records.put", {"key": "k", "value": {}})
    get = step("get", "records.get", {"key": {"$ref": "steps.put.output.key"}})
    assert validate_plan([put, get], CATALOG, Budget()) == [
        "step 'get' refers to the output of 'put' but does not list it in depends_on"
    ]


def test_depends_on_an_unknown_step_is_rejected() -> None:
    reasons = validate_plan([step("a", "records.get", {"key": "k"}, "ghost")], CATALOG, Budget())
    assert reasons == ["step 'a' depends on 'ghost', which is not a step of this plan"]


def test_cycles_are_named() -> None:
    steps = [
        step("a", "records.get", {"key": "k"}, "c"),
        step("b", "records.get", {"key": "k"}, "a"),
        step("c", "records.get", {"key": "k"}, "b"),
        step("d", "records.get", {"key": "k"}, "d"),
    ]
    assert validate_plan(steps, CATALOG, Budget()) == [
        "steps depend on each other in a cycle: a -> c -> b -> a",
        "steps depend on each other in a cycle: d -> d",
    ]


def test_a_long_chain_validates_without_recursion_limits() -> None:
    steps = [step("s0", "records.get", {"key": "k"})] + [
        step(f"s{i}", "records.get", {"key": "k"}, f"s{i - 1}") for i in range(1, 5000)
    ]
    assert validate_plan(steps, CATALOG, Budget(max_steps=5000)) == []


def test_replans_may_depend_on_completed_steps_but_not_reuse_their_ids() -> None:
    get = step("get", "records.get", {"key": {"$ref": "steps.put.output.key"}}, "put")
    assert validate_plan([get], CATALOG, Budget(), completed=("put",)) == []
    again = step("put", "records.put", {"key": "k", "value": {}})
    assert validate_plan([again], CATALOG, Budget(), completed=("put",)) == [
        "step id 'put' already ran in this run; give the new step another id"
    ]


def test_build_plan_hashes_steps_and_copies_execution_from_the_catalog() -> None:
    steps = expand(load_playbook("records-demo", DEMO), {"key": "k1"})
    info = PlannerInfo(kind="playbook", playbook="records-demo")
    plan = build_plan(steps, CATALOG, info, "why", "wf-1/plan-1")
    assert plan.plan_id == "wf-1/plan-1"
    assert plan.plan_hash == Plan.hash_steps(tuple(steps))
    assert plan.rationale == "why" and plan.planner == info
    put = plan.execution["put"]
    assert (put.task_queue, put.timeout_seconds, put.max_attempts) == ("records", 12.0, 3)
    assert (put.side_effect, put.risk, put.scopes) == ("write", "medium", ("records:write",))
    assert plan.execution["get"].side_effect == "read"


# --- the activity and the CLI preflight -------------------------------------------------


def plan_input(request: RunRequest, **extra: Any) -> PlanInput:
    return PlanInput(request=request, workflow_id="wf-7", **extra)


def request(**fields: Any) -> RunRequest:
    return RunRequest(tenant="acme", principal="user:ann", **fields)


async def test_activity_plans_a_named_playbook(tmp_path: Path) -> None:
    activities = PlanningActivities(CATALOG, settings(tmp_path))
    plan = await activities.create_plan(
        plan_input(request(playbook="records-demo", inputs={"key": "k1"}))
    )
    assert plan.plan_id == "wf-7/plan-1"
    assert plan.planner == PlannerInfo(kind="playbook", playbook="records-demo")
    assert plan.rationale == "Put a record, then read it back."
    assert [s.id for s in plan.steps] == ["put", "get"]


async def test_activity_plans_inline_playbook_source(tmp_path: Path) -> None:
    source = (DEMO / "records-demo.yaml").read_text()
    activities = PlanningActivities(CATALOG, settings(tmp_path))
    plan = await activities.create_plan(
        plan_input(request(playbook_source=source, inputs={"key": "k1"}), attempt=2)
    )
    assert plan.plan_id == "wf-7/plan-2"
    assert plan.planner.playbook == "records-demo"


async def test_activity_replan_of_a_playbook_plans_only_the_remaining_steps(
    tmp_path: Path,
) -> None:
    activities = PlanningActivities(CATALOG, settings(tmp_path))
    plan = await activities.create_plan(
        plan_input(
            request(playbook="records-demo", inputs={"key": "k1"}),
            attempt=2,
            completed_steps=("put",),
        )
    )
    assert [s.id for s in plan.steps] == ["get"]


async def test_activity_rejects_a_bad_playbook_with_reasons_and_no_retry(tmp_path: Path) -> None:
    source = "name: bad\nsteps: [{id: a, operation: records.drop, args: {}}]\n"
    activities = PlanningActivities(CATALOG, settings(tmp_path))
    with pytest.raises(ApplicationError) as caught:
        await activities.create_plan(plan_input(request(playbook_source=source)))
    error = caught.value
    assert error.type == PLAN_REJECTED and error.non_retryable
    reasons = error.details[0]
    assert isinstance(reasons, list) and "unknown operation 'records.drop'" in reasons[0]
    assert "unknown operation 'records.drop'" in error.message


async def test_activity_rejects_missing_input_and_unknown_playbook(tmp_path: Path) -> None:
    activities = PlanningActivities(CATALOG, settings(tmp_path))
    with pytest.raises(ApplicationError, match="input 'key' is required") as caught:
        await activities.create_plan(plan_input(request(playbook="records-demo")))
    assert caught.value.type == PLAN_REJECTED and caught.value.non_retryable
    with pytest.raises(ApplicationError, match="no playbook 'ghost'"):
        await activities.create_plan(plan_input(request(playbook="ghost")))


async def test_activity_without_a_planner_model_rejects_goals(tmp_path: Path) -> None:
    activities = PlanningActivities(CATALOG, settings(tmp_path))
    with pytest.raises(ApplicationError, match="no planner model configured") as caught:
        await activities.create_plan(plan_input(request(goal="tidy the records")))
    assert caught.value.type == PLAN_REJECTED and caught.value.non_retryable


async def test_preflight_accepts_what_can_run(tmp_path: Path) -> None:
    runnable = request(playbook="records-demo", inputs={"key": "k"})
    preflight(runnable, settings(tmp_path))  # raises what it refuses
    # What preflight lets through, the worker's planning activity turns into that plan.
    plan = await PlanningActivities(CATALOG, settings(tmp_path)).create_plan(plan_input(runnable))
    assert [(s.id, s.operation) for s in plan.steps] == [
        ("put", "records.put"),
        ("get", "records.get"),
    ]
    assert plan.steps[0].args["key"] == "k"
    # A goal is accepted once a planner model is configured (the model plans in the run).
    preflight(request(goal="tidy"), settings(tmp_path, planner_model="openai/x"))


def test_preflight_rejects_goal_without_model_and_missing_playbook(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="set STEAD_PLANNER_MODEL or use --playbook"):
        preflight(request(goal="tidy"), settings(tmp_path))
    with pytest.raises(ConfigError, match=r"no playbook 'ghost' .*available: .*records-demo"):
        preflight(request(playbook="ghost"), settings(tmp_path))
    with pytest.raises(ConfigError, match="input 'key' is required"):
        preflight(request(playbook="records-demo"), settings(tmp_path))
