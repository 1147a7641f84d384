"""Heartbeats while a step's adapter runs, so a lost completion costs seconds.

The run schedules ``step.run`` and ``adapter.execute`` with a heartbeat timeout
(``workflows/run/stubs.py``). If the worker running one dies, or its completion is
lost, Temporal retries the step once heartbeats stop for that long, instead of after
the step's whole start-to-close timeout. The retry is safe: the effect ledger keeps
one effect per step. Local activities (the express lane) have no heartbeats; there
``activity.info().heartbeat_timeout`` is None and nothing is started. The first beat
comes a second after the start (the server's heartbeat timer already runs from there),
so the usual short step never heartbeats at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from temporalio import activity

P = ParamSpec("P")
R = TypeVar("R")
# Several heartbeats per timeout, so one slow event-loop turn does not time a step out.
BEATS_PER_TIMEOUT = 4
# Seconds before the first beat: a step that ends sooner sends none (see ``_beat``).
FIRST_BEAT_AFTER = 1.0
_beating: contextvars.ContextVar[bool] = contextvars.ContextVar("stead_heartbeating", default=False)


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat in the background while the body runs (once per activity attempt)."""
    timeout = activity.info().heartbeat_timeout if activity.in_activity() else None
    if not timeout or _beating.get():
        yield
        return
    token = _beating.set(True)
    beats = asyncio.create_task(_beat(timeout / BEATS_PER_TIMEOUT), name="stead heartbeat")
    try:
        yield
    finally:
        beats.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beats
        _beating.reset(token)


async def _beat(every: timedelta) -> None:
    """The first beat waits ``FIRST_BEAT_AFTER``: Core sends an attempt's first heartbeat
    at once, a server round trip and a mutable-state write per step, for nothing when the
    step ends within a second (nearly all do). Temporal's heartbeat timer runs from the
    attempt's start either way, so waiting longer would eat into the margin a starved
    event loop needs (a step's heartbeat timed out under load with the first beat a whole
    interval late)."""
    await asyncio.sleep(min(FIRST_BEAT_AFTER, every.total_seconds()))
    while True:
        activity.heartbeat()
        await asyncio.sleep(every.total_seconds())


def heartbeats(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """An activity method that heartbeats while it runs (under ``@activity.defn``)."""

    @functools.wraps(fn)
    async def beating(*args: P.args, **kwargs: P.kwargs) -> R:
        async with heartbeating():
            return await fn(*args, **kwargs)

    return beating
