"""A finished run tells the truth about every step: what never ran says so, and why."""

from __future__ import annotations

from tests.conftest import WorkerHandle
from tests.runs import configure_tenant, new_tenant, playbook, start_run

ECHO_THEN_PUT = playbook(
    {"id": "echo", "operation": "core.echo", "args": {"value": 1}},
    {
        "id": "put",
        "operation": "records.put",
        "args": {"key": "x", "value": {}},
        "depends_on": ["echo"],
    },
)


async def test_steps_of_a_denied_plan_are_not_run_with_the_reason(worker: WorkerHandle) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, operations=["core.echo"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=ECHO_THEN_PUT,
    )
    status = await handle.result()
    assert status.status == "denied"
    assert [s.status for s in status.steps] == ["not_run", "not_run"]
    for step in status.steps:
        assert step.error is not None and step.error.startswith("not run: the run ended denied")
        assert "records.put" in step.error  # the plan decision's reason, not just "denied"


async def test_steps_after_an_aborting_failure_are_not_run(worker: WorkerHandle) -> None:
    tenant = new_tenant()
    await configure_tenant(worker.settings.opa_url, tenant, operations=["records.*"])
    handle = await start_run(
        worker.client,
        worker.task_queue,
        tenant=tenant,
        principal="user:ann",
        playbook_source=playbook(
            {"id": "get", "operation": "records.get", "args": {"key": "missing"}},
            {
                "id": "put",
                "operation": "records.put",
                "args": {"key": "x", "value": {}},
                "depends_on": ["get"],
            },
        ),
    )
    status = await handle.result()
    assert status.status == "failed", status.reasons
    first, second = status.steps
    assert first.status == "failed"
    assert second.status in ("skipped", "not_run")
    assert second.error is not None
