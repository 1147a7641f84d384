"""``stead slo`` on a seeded history: the JSON a child process prints, figure by figure.

Runs, decisions and effects are inserted with fixed timestamps through the admin
DSN; audit events go through ``append_event`` in the tenant's transaction, as the
workers write them, so the chain stays valid and the append-only trigger stays on.
Every figure is fixed by the seed except time-to-decision, whose stamps are the
audit log's own: the test reads them back and checks the report pairs the right
events (first approve decision → first human answer, per step).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from stead.audit.log import AuditEvent, append_event, list_events
from stead.db.pool import create_pool, tenant_transaction
from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.runs import new_tenant


@dataclass(frozen=True)
class Run:
    name: str
    status: str
    started_ago: timedelta
    seconds: int | None  # None: still running
    usd: str = "0"
    tokens: int = 0
    minutes: str = "0"


# Tenant A: 9 runs in the last 7 days (8 finished) and one from 10 days ago.
A_RUNS = (
    Run("a1", "completed", timedelta(hours=10), 60, "0.10", 1000, "5"),
    Run("a2", "completed", timedelta(hours=9), 120, "0.20", 2000, "10"),
    Run("a3", "failed", timedelta(hours=8), 300, "0.30", 500),
    Run("a4", "failed", timedelta(hours=7), 600),
    Run("a5", "failed", timedelta(hours=6), 30),
    Run("a6", "completed", timedelta(hours=5), 240, "0.40", 4000, "15"),
    Run("a8", "denied", timedelta(hours=4), 10),
    Run("a9", "timed_out", timedelta(hours=3), 900),
    Run("a7", "running", timedelta(minutes=10), None),
    Run("old", "completed", timedelta(days=10), 1000, "5", 50000, "100"),
)
B_RUNS = (Run("b1", "completed", timedelta(hours=2), 100, "0.05", 50, "2"),)

# (run, step, status, attempts, seconds from first attempt to the end)
A_EFFECTS = (
    ("a1", "put", "completed", 1, 2),
    ("a2", "fetch", "completed", 3, 45),
    ("a6", "ship", "completed", 2, 15),
    ("a3", "charge", "failed", 2, 5),
    ("old", "x", "completed", 2, 100),
)
B_EFFECTS = (("b1", "sync", "completed", 2, 20),)

# (run, step, kind: plan|step, outcome, blocked)
A_DECISIONS = (
    ("a1", None, "plan", "allow", None),
    ("a1", "put", "step", "allow", None),
    ("a2", "fetch", "step", "allow", None),
    ("a3", "charge", "step", "allow", None),
    ("a4", "pay", "step", "approve", None),
    ("a4", "pay", "step", "approve", None),
    ("a5", "wire", "step", "approve", None),
    ("a6", "ship", "step", "approve", None),
    ("a6", "ship", "step", "allow", None),
    ("a8", "send", "step", "deny", None),
    ("a9", "poll", "step", "deny", "policy_unavailable"),
    ("old", "x", "step", "approve", None),
)
B_DECISIONS = (("b1", "sync", "step", "approve", None), ("b1", "sync", "step", "allow", None))

# Interleaved across runs, so pairing by arrival order alone would get it wrong.
# (run, step, kind, actor, data)
A_AUDIT: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("a6", "ship", "step_decision", "system:opa", {"outcome": "approve"}),
    ("a5", "wire", "step_decision", "system:opa", {"outcome": "approve"}),
    ("a4", "pay", "step_decision", "system:opa", {"outcome": "approve"}),
    ("a1", "put", "step_decision", "system:opa", {"outcome": "allow"}),
    ("a6", "ship", "approval_refused", "user:eve", {"verdict": "approve", "reason": "no"}),
    ("a5", "wire", "approval_accepted", "user:bob", {"verdict": "reject"}),
    ("a4", "pay", "approval_escalated", "system:stead", {"to": ["user:carol"]}),
    ("a4", "pay", "step_decision", "system:opa", {"outcome": "approve"}),
    ("a6", "ship", "approval_accepted", "user:bob", {"verdict": "approve"}),
    ("a6", "ship", "step_decision", "system:opa", {"outcome": "allow"}),
    ("a4", "pay", "approval_timed_out", "system:stead", {"escalated": True}),
    ("old", "x", "step_decision", "system:opa", {"outcome": "approve"}),
    ("old", "x", "approval_accepted", "user:bob", {"verdict": "reject"}),
)
B_AUDIT: tuple[tuple[str, str, str, str, dict[str, Any]], ...] = (
    ("b1", "sync", "step_decision", "system:opa", {"outcome": "approve"}),
    ("b1", "sync", "approval_accepted", "user:bob", {"verdict": "approve"}),
)


@dataclass(frozen=True)
class Seeded:
    a: str
    b: str
    # Seconds from the first approve decision to the first answer, per answered step.
    a_waits: dict[str, float]
    b_waits: dict[str, float]


def wid(tenant: str, run: str) -> str:
    return f"{tenant}-{run}"


async def seed_tenant(
    admin: asyncpg.Connection,
    pool: asyncpg.Pool,
    tenant: str,
    runs: tuple[Run, ...],
    effects: tuple[tuple[str, str, str, int, int], ...],
    decisions: tuple[tuple[str, str | None, str, str, str | None], ...],
    audit: tuple[tuple[str, str, str, str, dict[str, Any]], ...],
) -> dict[str, float]:
    starts = {}
    # Seeded relative to now, not to import time: in a long session the module is
    # imported many minutes before its fixture runs, and "started 10 minutes ago" must
    # still be inside a 30-minute window when the report is asked.
    now = datetime.now(UTC).replace(microsecond=0)
    for run in runs:
        started = now - run.started_ago
        starts[run.name] = started
        await admin.execute(
            "INSERT INTO runs (workflow_id, tenant, principal, goal, status, started_at,"
            " finished_at, tokens, cost_usd, minutes_saved)"
            " VALUES ($1, $2, 'user:ann', 'seeded', $3, $4, $5, $6, $7::numeric, $8::numeric)",
            wid(tenant, run.name),
            tenant,
            run.status,
            started,
            None if run.seconds is None else started + timedelta(seconds=run.seconds),
            run.tokens,
            run.usd,
            run.minutes,
        )
    for run_name, step, status, attempts, seconds in effects:
        created = starts[run_name] + timedelta(seconds=1)
        await admin.execute(
            "INSERT INTO effects (idempotency_key, tenant, workflow_id, step_id, operation,"
            " args_hash, status, attempts, created_at, completed_at, error)"
            " VALUES ($1, $2, $3, $4, 'core.echo', 'h', $5, $6, $7, $8, $9)",
            f"{wid(tenant, run_name)}/{step}",
            tenant,
            wid(tenant, run_name),
            step,
            status,
            attempts,
            created,
            created + timedelta(seconds=seconds),
            "refused" if status == "failed" else None,
        )
    for i, (run_name, step_id, kind, outcome, blocked) in enumerate(decisions):
        await admin.execute(
            "INSERT INTO decisions (decision_id, tenant, workflow_id, step_id, kind, outcome,"
            " input_hash, blocked, evaluated_at) VALUES ($1, $2, $3, $4, $5, $6, 'h', $7, $8)",
            f"{wid(tenant, run_name)}-d{i}",
            tenant,
            wid(tenant, run_name),
            step_id,
            kind,
            outcome,
            blocked,
            starts[run_name],
        )
    for run_name, step, kind, actor, data in audit:
        async with tenant_transaction(pool, tenant) as conn:
            await append_event(
                conn,
                AuditEvent(
                    tenant=tenant,
                    workflow_id=wid(tenant, run_name),
                    step_id=step,
                    kind=kind,
                    actor=actor,
                    data=data,
                ),
            )
    return await answer_waits(pool, tenant)


async def answer_waits(pool: asyncpg.Pool, tenant: str) -> dict[str, float]:
    """Per answered step in the 7-day window: first answer minus first approve decision."""
    async with tenant_transaction(pool, tenant) as conn:
        events = await list_events(conn, tenant)
    asked: dict[str, datetime] = {}
    waits: dict[str, float] = {}
    for e in events:
        key = f"{e.workflow_id}/{e.step_id}"
        if e.workflow_id == wid(tenant, "old"):
            continue
        if e.kind == "step_decision" and e.data["outcome"] == "approve":
            asked.setdefault(key, e.recorded_at)
        if e.kind == "approval_accepted" and key not in waits:
            waits[key] = (e.recorded_at - asked[key]).total_seconds()
    return waits


@pytest.fixture(scope="module")
async def seeded(stack: Settings) -> AsyncIterator[Seeded]:
    assert stack.postgres_admin_dsn is not None
    a, b = new_tenant(), new_tenant()
    admin = await asyncpg.connect(stack.postgres_admin_dsn)
    pool = await create_pool(stack.postgres_dsn, max_size=2)
    try:
        a_waits = await seed_tenant(admin, pool, a, A_RUNS, A_EFFECTS, A_DECISIONS, A_AUDIT)
        b_waits = await seed_tenant(admin, pool, b, B_RUNS, B_EFFECTS, B_DECISIONS, B_AUDIT)
    finally:
        await pool.close()
        await admin.close()
    yield Seeded(a=a, b=b, a_waits=a_waits, b_waits=b_waits)


def stead_slo(stack: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stead.cli", "slo", *args],
        cwd=REPO,
        env=subprocess_env(stack, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def report(stack: Settings, *args: str) -> dict[str, Any]:
    done = stead_slo(stack, *args, "--json")
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def waits(values: dict[str, float]) -> dict[str, Any]:
    """Nearest-rank percentiles, as the report defines them."""
    ordered = sorted(values.values())

    def rank(percent: int) -> float:
        return ordered[-(-len(ordered) * percent // 100) - 1]

    return {
        "count": len(ordered),
        "mean": pytest.approx(sum(ordered) / len(ordered), rel=1e-9),
        "p50": rank(50),
        "p95": rank(95),
    }


def a_figures(seeded: Seeded) -> dict[str, Any]:
    return {
        "runs": {
            "started": 9,
            "finished": 8,
            "in_flight": 1,
            "failed": 4,
            "by_status": {"completed": 3, "denied": 1, "failed": 3, "running": 1, "timed_out": 1},
        },
        # Finished latencies 10 30 60 120 240 300 600 900: nearest rank 4 of 8 and 8 of 8.
        "latency_seconds": {"count": 8, "mean": 282.5, "p50": 120.0, "p95": 900.0},
        "cost": {"total_usd": 1.0, "mean_usd_per_run": 0.125, "total_tokens": 7500},
        "failure_rate": 0.5,
        # a2 recovered in 45 s, a6 in 15 s; a3 never did; a1 needed no recovery.
        "recovery": {"recovered_steps": 2, "failed_steps": 1, "mean_seconds": 30.0},
        # pay (timed out), wire (rejected: an override), ship (approved).
        "approvals": {
            "requested": 3,
            "answered": 2,
            "overridden": 1,
            "timed_out": 1,
            "override_rate": 1 / 3,
        },
        "time_to_decision_seconds": waits(seeded.a_waits),
        "decisions": {"allow": 4, "approve": 4, "deny": 2, "blocked": 1},
        "minutes_saved": 30.0,
    }


def b_figures(seeded: Seeded) -> dict[str, Any]:
    return {
        "runs": {
            "started": 1,
            "finished": 1,
            "in_flight": 0,
            "failed": 0,
            "by_status": {"completed": 1},
        },
        "latency_seconds": {"count": 1, "mean": 100.0, "p50": 100.0, "p95": 100.0},
        "cost": {"total_usd": 0.05, "mean_usd_per_run": 0.05, "total_tokens": 50},
        "failure_rate": 0.0,
        "recovery": {"recovered_steps": 1, "failed_steps": 0, "mean_seconds": 20.0},
        "approvals": {
            "requested": 1,
            "answered": 1,
            "overridden": 0,
            "timed_out": 0,
            "override_rate": 0.0,
        },
        "time_to_decision_seconds": waits(seeded.b_waits),
        "decisions": {"allow": 1, "approve": 1, "deny": 0, "blocked": 0},
        "minutes_saved": 2.0,
    }


def test_tenant_report_gives_the_seeded_figures(stack: Settings, seeded: Seeded) -> None:
    got = report(stack, "--tenant", seeded.a, "--since", "7d")
    assert got["scope"]["tenant"] == seeded.a and got["scope"]["since"] == "7d"
    start = datetime.fromisoformat(got["scope"]["window_start"])
    end = datetime.fromisoformat(got["scope"]["window_end"])
    assert end - start == timedelta(days=7)
    assert set(seeded.a_waits) == {f"{seeded.a}-a5/wire", f"{seeded.a}-a6/ship"}
    assert got["total"] == a_figures(seeded)
    assert got["tenants"] == {seeded.a: got["total"]}


def test_tenant_report_sees_no_other_tenant(stack: Settings, seeded: Seeded) -> None:
    got = report(stack, "--tenant", seeded.b)
    assert list(got["tenants"]) == [seeded.b]
    assert got["total"] == b_figures(seeded)


def test_report_across_tenants_breaks_figures_down_per_tenant(
    stack: Settings, seeded: Seeded
) -> None:
    got = report(stack, "--since", "7d")
    assert got["scope"]["tenant"] is None
    assert got["tenants"][seeded.a] == a_figures(seeded)
    assert got["tenants"][seeded.b] == b_figures(seeded)
    # Other test modules share the stack, so the totals hold at least the seed.
    assert got["total"]["runs"]["started"] >= 10
    assert got["total"]["minutes_saved"] >= 32.0


def test_short_window_holds_only_recent_runs_and_reports_nothing_to_measure(
    stack: Settings, seeded: Seeded
) -> None:
    got = report(stack, "--tenant", seeded.a, "--since", "30m")
    total = got["total"]
    assert total["runs"] == {
        "started": 1,
        "finished": 0,
        "in_flight": 1,
        "failed": 0,
        "by_status": {"running": 1},
    }
    assert total["latency_seconds"] == {"count": 0, "mean": None, "p50": None, "p95": None}
    assert total["failure_rate"] is None
    assert total["cost"] == {"total_usd": 0.0, "mean_usd_per_run": None, "total_tokens": 0}
    assert total["approvals"]["override_rate"] is None


def test_table_output_names_each_tenant(stack: Settings, seeded: Seeded) -> None:
    done = stead_slo(stack, "--since", "24h")
    assert done.returncode == 0, done.stderr
    assert seeded.a in done.stdout and seeded.b in done.stdout
    assert "latency p50 / p95" in done.stdout and "per tenant" in done.stdout


def test_bad_window_is_a_usage_error(stack: Settings) -> None:
    done = stead_slo(stack, "--since", "7x", "--json")
    assert done.returncode == 2
    assert "'7x' is not a window" in done.stderr
    assert done.stdout == ""


def test_all_tenants_without_the_admin_dsn_says_what_to_set(
    stack: Settings, tmp_path: Path
) -> None:
    # A home without the stack file: only the app DSN is known.
    done = stead_slo(
        stack, "--json", STEAD_HOME=str(tmp_path), STEAD_POSTGRES_DSN=stack.postgres_dsn
    )
    assert done.returncode == 1
    assert "STEAD_POSTGRES_ADMIN_DSN" in done.stderr and "--tenant" in done.stderr
