"""The hello workflow: the smallest proof that a worker, Temporal and an activity are wired."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stead.contracts.hello import Greeting, GreetingRequest


@workflow.defn(name="stead.hello")
class HelloWorkflow:
    @workflow.run
    async def run(self, request: GreetingRequest) -> Greeting:
        greeting: Greeting = await workflow.execute_activity(
            "hello.greet",
            request,
            result_type=Greeting,
            start_to_close_timeout=timedelta(seconds=30),
        )
        return greeting
