"""Approval refusals that the ``approve`` update's validator reports out of band.

Why this exists: every refused approval must leave an audit row, but a validator
cannot run activities, and an update it rejects leaves no event in history. So the
validator rejects only what must never be *written* (a token not narrowed to this
approval, garbage or oversized input) and hands each such refusal to this module;
every other refusal is accepted into the update handler and audited there through
the ``audit.append`` activity.

This module is deterministic to import and holds no I/O: the workflow imports it
passed through the sandbox, so the worker process and every workflow share one
instance. ``report`` hands a refusal to the newest subscriber, which is the worker's
drain task (``workers.refusals``) appending it to the audit log. The workflow calls
``report`` only when not replaying: a rejected update is never replayed, so each
attempt is reported once per delivery (the update id makes redeliveries visible).

Workflow tasks run on the SDK's worker threads, so subscribers must be thread-safe
(the drain task's sink hops onto its event loop with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("stead.approvals")


@dataclass(frozen=True)
class ValidatorRefusal:
    """One refused ``approve`` update, as its ``approval_refused`` audit row will say."""

    tenant: str
    workflow_id: str
    run_id: str
    step_id: str | None
    actor: str
    reason: str
    data: dict[str, str] = field(default_factory=dict)
    # A refused ``cancel`` update is reported the same way, as ``cancel_refused``.
    kind: str = "approval_refused"


Sink = Callable[[ValidatorRefusal], None]

_lock = threading.Lock()
_sinks: list[Sink] = []
_unaudited = 0


def report(refusal: ValidatorRefusal) -> None:
    """Hand ``refusal`` to the audit drain; never raises (a validator must not fail on it)."""
    global _unaudited
    with _lock:
        sink = _sinks[-1] if _sinks else None
    try:
        if sink is None:
            raise RuntimeError("no audit drain is running in this process")
        sink(refusal)
    except Exception as exc:
        with _lock:
            _unaudited += 1
        # The refusal itself stands; only its audit row is missing, so say so loudly.
        log.error(
            "approval refusal on %s could not be queued for the audit log: %s (%s)",
            refusal.workflow_id,
            refusal.reason,
            exc,
        )


def subscribe(sink: Sink) -> Callable[[], None]:
    """Route reports to ``sink`` until the returned function is called."""
    with _lock:
        _sinks.append(sink)

    def unsubscribe() -> None:
        with _lock:
            if sink in _sinks:
                _sinks.remove(sink)

    return unsubscribe


def unaudited() -> int:
    """How many refusals this process could not queue for the audit log (for tests, metrics)."""
    with _lock:
        return _unaudited
