"""Steps heartbeat while their adapter runs: when the worker running one dies, the step
is retried once heartbeats stop (``STEP_HEARTBEAT``), not after its whole timeout.

Real processes: the peer performs the effect and then kills the worker before it can
report back, as in ``test_run_faults.py``; the step's own timeout (the catalog's 60 s
for ``http.request``) is far longer than the heartbeat timeout. What shows which timer
fired is the history: the retried attempt's ``last_failure`` is a heartbeat timeout.
"""

from __future__ import annotations

from temporalio.api.enums.v1 import TimeoutType

from stead.settings import Settings
from stead.temporal import connect
from tests.peers import IdempotentApi, serve
from tests.runs import configure_tenant, new_tenant
from tests.workers import run_whose_worker_dies_after_the_effect


async def test_a_step_whose_worker_died_is_retried_when_its_heartbeats_stop(
    stack: Settings,
) -> None:
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, egress=["127.0.0.1"])
    api = IdempotentApi()
    client = await connect(stack)
    with serve(api) as url:
        handle, status = await run_whose_worker_dies_after_the_effect(
            stack,
            client,
            api,
            tenant=tenant,
            steps=[
                {
                    "id": "charge",
                    "operation": "http.request",
                    "args": {"method": "POST", "url": f"{url}/charges", "json": {"amount": 5}},
                }
            ],
        )
    assert status.status == "completed", status.reasons
    assert len(api.effects) == 1, "the retry must not repeat the effect"
    history = await handle.fetch_history()
    retried = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
    ]
    assert retried, "the step was not retried after its worker died"
    timeouts = [a.last_failure.timeout_failure_info.timeout_type for a in retried]
    assert timeouts == [TimeoutType.TIMEOUT_TYPE_HEARTBEAT], timeouts
