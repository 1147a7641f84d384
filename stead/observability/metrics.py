"""Every Stead metric, in the one registry the worker serves on ``/metrics``.

The names are a contract with ``infra/prometheus/alerts.yml`` and
``infra/grafana/dashboards/stead.json``. Labels carry the tenant and the operation
(both bounded: tenants are a team's customers, operations come from the adapter
catalog) and never a run or step id, which would make a series per run.

Record through the helpers below rather than the metric objects, so every call site
uses the same label values. The registry is prometheus_client's default one, so a
module with metrics of its own (``stead.memory.metrics``: degraded recalls, unindexed
writes) is served on the same page without more wiring; two definitions of one name
fail at import.
"""

from __future__ import annotations

from typing import Literal

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from stead.contracts.run import Decision
from stead.observability.approvals import PendingApprovals

StepOutcome = Literal["succeeded", "replayed", "failed", "retrying", "cancelled"]
"""How one execution attempt ended: ``replayed`` answered from the effect ledger;
``retrying`` failed but Temporal tries again; ``failed`` ends the step."""

DecisionOutcome = Literal["allow", "deny", "approve", "blocked", "unavailable"]
"""What policy said: ``blocked`` is an undefined or malformed answer (fail closed);
``unavailable`` is an attempt that could not reach OPA (Temporal retries it)."""

DecisionKind = Literal["plan", "step"]
ApprovalVerdict = Literal["approve", "reject", "timed_out"]

# The default registry: it already holds the process, platform and GC collectors.
REGISTRY: CollectorRegistry = prometheus_client.REGISTRY

# Runs wait on humans for hours; steps and policy calls take milliseconds.
RUN_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
POLICY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
APPROVAL_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 72 * 3600)
RECOVERY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

RUN_DURATION = Histogram(
    "stead_run_duration_seconds",
    "End-to-end run latency: request to last action (runs.started_at to finished_at).",
    ["tenant", "status"],
    buckets=RUN_BUCKETS,
    registry=REGISTRY,
)
MINUTES_SAVED = Counter(
    "stead_minutes_saved_total",
    "Value captured: minutes saved by the succeeded steps of finished runs (from playbooks).",
    ["tenant"],
    registry=REGISTRY,
)
STEPS = Counter(
    "stead_steps_total",
    "Step execution attempts, by how each ended.",
    ["tenant", "operation", "outcome"],
    registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "stead_step_duration_seconds",
    "Time one step execution attempt took in its adapter, by outcome.",
    ["operation", "outcome"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
STEP_FAILURES = Counter(
    "stead_step_failures_total",
    "Step execution attempts that raised, by error type (retried or final).",
    ["tenant", "operation", "error"],
    registry=REGISTRY,
)
STEP_RETRIES = Counter(
    "stead_step_retries_total",
    "Step execution attempts after the first (Temporal retries).",
    ["tenant", "operation"],
    registry=REGISTRY,
)
STEP_RECOVERY = Histogram(
    "stead_step_recovery_seconds",
    "For steps that succeeded after failed attempts: first scheduled to success.",
    ["operation"],
    buckets=RECOVERY_BUCKETS,
    registry=REGISTRY,
)
PLANNER_TOKENS = Counter(
    "stead_planner_tokens_total",
    "Tokens the LLM planner used (litellm usage, every call of a plan).",
    ["tenant", "model"],
    registry=REGISTRY,
)
PLANNER_COST = Counter(
    "stead_planner_cost_usd_total",
    "What the LLM planner cost in USD (litellm's price for every call of a plan).",
    ["tenant", "model"],
    registry=REGISTRY,
)
STEP_TOKENS = Counter(
    "stead_step_tokens_total",
    "Tokens steps consumed as their adapter reported them (e.g. llm.generate drafts).",
    ["tenant", "operation"],
    registry=REGISTRY,
)
STEP_COST = Counter(
    "stead_step_cost_usd_total",
    "What steps cost in USD as their adapter reported it (e.g. llm.generate drafts).",
    ["tenant", "operation"],
    registry=REGISTRY,
)
POLICY_DECISIONS = Counter(
    "stead_policy_decisions_total",
    "Policy decisions by outcome; operation is empty for plan decisions.",
    ["tenant", "kind", "operation", "outcome"],
    registry=REGISTRY,
)
POLICY_EVALUATION = Histogram(
    "stead_policy_evaluation_seconds",
    "Time to evaluate one policy decision (OPA round trip and approver lookup).",
    ["kind"],
    buckets=POLICY_BUCKETS,
    registry=REGISTRY,
)
APPROVAL_WAIT = Histogram(
    "stead_approval_wait_seconds",
    "Time to decision: approval first requested for a step to a human's verdict or timeout.",
    ["tenant", "verdict"],
    buckets=APPROVAL_BUCKETS,
    registry=REGISTRY,
)
HUMAN_OVERRIDES = Counter(
    "stead_human_overrides_total",
    "Times a human overrode what the plan proposed (kind=rejected: an approver said no).",
    ["tenant", "kind"],
    registry=REGISTRY,
)
MEMORY_RECALL = Histogram(
    "stead_memory_recall_seconds",
    "Time to recall memory for a run.",
    ["tenant"],
    buckets=STEP_BUCKETS,
    registry=REGISTRY,
)
APPROVALS_PENDING = PendingApprovals()
REGISTRY.register(APPROVALS_PENDING)


def observe_run_finished(tenant: str, status: str, seconds: float, minutes_saved: float) -> None:
    """A run reached a terminal status (once per run, when ``finished_at`` is first stamped)."""
    RUN_DURATION.labels(tenant, status).observe(max(seconds, 0.0))
    if minutes_saved > 0:
        MINUTES_SAVED.labels(tenant).inc(minutes_saved)


def observe_step(
    tenant: str, operation: str, outcome: StepOutcome, seconds: float, *, error: str | None = None
) -> None:
    """One step execution attempt ended; ``error`` names what it raised, if it did."""
    STEPS.labels(tenant, operation, outcome).inc()
    STEP_DURATION.labels(operation, outcome).observe(seconds)
    if error is not None:
        STEP_FAILURES.labels(tenant, operation, error).inc()


def observe_step_retry(tenant: str, operation: str) -> None:
    STEP_RETRIES.labels(tenant, operation).inc()


def observe_step_recovered(operation: str, seconds: float) -> None:
    STEP_RECOVERY.labels(operation).observe(max(seconds, 0.0))


def observe_planner(tenant: str, model: str, tokens: int, cost_usd: float) -> None:
    PLANNER_TOKENS.labels(tenant, model).inc(max(tokens, 0))
    PLANNER_COST.labels(tenant, model).inc(max(cost_usd, 0.0))


def observe_step_usage(tenant: str, operation: str, tokens: int, cost_usd: float) -> None:
    """An adapter's reported usage, counted once: when the adapter ran, not on replays."""
    STEP_TOKENS.labels(tenant, operation).inc(max(tokens, 0))
    STEP_COST.labels(tenant, operation).inc(max(cost_usd, 0.0))


def observe_decision(
    tenant: str,
    kind: DecisionKind,
    operation: str | None,
    decision: Decision | None,
    seconds: float,
) -> None:
    """Policy answered ``decision``; ``None`` means OPA could not be asked this attempt."""
    outcome: DecisionOutcome
    if decision is None:
        outcome = "unavailable"
    elif decision.blocked is not None:
        outcome = "blocked"
    else:
        outcome = decision.outcome
    POLICY_DECISIONS.labels(tenant, kind, operation or "", outcome).inc()
    POLICY_EVALUATION.labels(kind).observe(seconds)


def observe_approval(tenant: str, verdict: ApprovalVerdict, waited_seconds: float | None) -> None:
    """A human voted (or the wait timed out); a rejection is a human override."""
    if waited_seconds is not None:
        APPROVAL_WAIT.labels(tenant, verdict).observe(max(waited_seconds, 0.0))
    if verdict == "reject":
        HUMAN_OVERRIDES.labels(tenant, "rejected").inc()


def observe_recall(tenant: str, seconds: float) -> None:
    """For the memory service: one recall took ``seconds`` (degraded ones are counted in
    ``stead.memory.metrics``)."""
    MEMORY_RECALL.labels(tenant).observe(seconds)
