"""The worker interceptor that gives every activity its log context.

Around each activity it opens a :func:`log_context` with the tenant, run and step
taken from the activity's input: ``activity.info()`` knows the run but not the
tenant or the step, which every Stead activity input carries (directly, or in the
``request`` or ``decide`` it wraps).
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from stead.observability.logs import log_context


class ObservabilityInterceptor(Interceptor):
    """Pass in ``Worker(interceptors=[...])``; it holds no state of its own."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityContext(next)


class _ActivityContext(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        arg = input.args[0] if input.args else None
        tenant, step_id = _ids(arg)
        with log_context(tenant=tenant, run_id=activity.info().workflow_id, step_id=step_id):
            return await self.next.execute_activity(input)


def _ids(arg: object) -> tuple[str | None, str | None]:
    """(tenant, step id) from an activity input, its ``request`` or its ``decide``."""
    tenant: str | None = None
    step_id: str | None = None
    for part in (arg, getattr(arg, "request", None), getattr(arg, "decide", None)):
        found = getattr(part, "tenant", None)
        if tenant is None and isinstance(found, str):
            tenant = found
        found = getattr(getattr(part, "step", None), "id", None) or getattr(part, "step_id", None)
        if step_id is None and isinstance(found, str):
            step_id = found
    return tenant, step_id
