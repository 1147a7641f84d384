"""Worker log lines: one JSON object per line, carrying tenant, run and step.

Context comes from three places, most specific first: a :func:`log_context` the
worker's activity interceptor opens around every activity (tenant and step come from
the activity's input, which ``activity.info()`` does not know); the activity or
workflow details Temporal's own loggers attach; and the current trace, when tracing
is on. A record that sets a field explicitly (``extra={"tenant": ...}``) keeps it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from temporalio import activity

CONTEXT_FIELDS = ("tenant", "run_id", "step_id", "activity", "attempt", "trace_id", "span_id")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "temporal_activity",
    "temporal_workflow",
    "temporal_log",
    "activity_info",
    "workflow_info",
}


@dataclass(frozen=True)
class LogContext:
    tenant: str | None = None
    run_id: str | None = None
    step_id: str | None = None


_CONTEXT: ContextVar[LogContext | None] = ContextVar("stead_log_context", default=None)


@contextmanager
def log_context(
    *, tenant: str | None, run_id: str | None, step_id: str | None = None
) -> Iterator[None]:
    """Every line logged inside (in this task and the tasks it starts) carries these ids."""
    token = _CONTEXT.set(LogContext(tenant=tenant, run_id=run_id, step_id=step_id))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Puts tenant, run_id, step_id, activity, attempt and trace ids on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        found: dict[str, Any] = {}
        ctx = _CONTEXT.get()
        if ctx is not None:
            found.update(tenant=ctx.tenant, run_id=ctx.run_id, step_id=ctx.step_id)
        if activity.in_activity():
            info = activity.info()
            found.setdefault("run_id", info.workflow_id)
            found.update(activity=info.activity_type, attempt=info.attempt)
        workflow_details = getattr(record, "temporal_workflow", None)
        if isinstance(workflow_details, dict):
            found.setdefault("run_id", workflow_details.get("workflow_id"))
        found.update(_trace_ids())
        for key, value in found.items():
            if value is not None and getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def _trace_ids() -> dict[str, str]:
    """The current span's ids, if OpenTelemetry is loaded (only when tracing is on)."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", <context>, <extra>, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with the run context appended when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [
            f"{key}={getattr(record, key)}"
            for key in ("tenant", "run_id", "step_id")
            if getattr(record, key, None) is not None
        ]
        return f"{text} [{' '.join(ids)}]" if ids else text


def configure_logging(
    fmt: Literal["json", "text"], level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Replace the root logger's handlers with one that writes ``fmt`` lines to ``stream``.

    Returns the handler so a caller (a test) can remove it again.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
