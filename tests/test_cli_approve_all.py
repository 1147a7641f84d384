"""``stead approve-all``: one vote per waiting run of one tenant, each proven on its own.

The CLI runs as a child process against a real ``stead worker`` (the ``cli`` fixture of
tests/test_cli_runs.py); assertions are on exit codes, the JSON it prints, the runs'
outcomes and the audit rows each run wrote for its own vote.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest_asyncio
from temporalio.client import WorkflowHandle

from stead.audit.log import list_events
from stead.cli.runs import flagged_runs
from stead.db.pool import create_pool, tenant_transaction
from stead.identity import directory
from stead.identity.tokens import PrincipalTokenIssuer
from stead.keys import IDENTITY, key_store
from stead.temporal import connect
from tests.runs import configure_tenant, new_tenant, start_run, wait_pending
from tests.test_approval_unknown_outcome import until
from tests.test_cli_runs import (  # noqa: F401 (cli is the module's fixture)
    PUT_ONLY,
    Cli,
    approval_tenant,
    cli,
    start_put,
    wait_for_status,
    wait_for_step,
)
from tests.workers import worker_process


@pytest_asyncio.fixture(scope="module")
async def pool(cli: Cli) -> AsyncIterator[asyncpg.Pool]:  # noqa: F811
    pool = await create_pool(cli.settings.postgres_dsn, max_size=2)
    yield pool
    await pool.close()


async def parked(cli: Cli, tenant: str, runs: int) -> list[str]:  # noqa: F811
    started = [await start_put(cli, tenant) for _ in range(runs)]
    for run_id in started:
        await wait_for_step(cli, run_id, "put", "awaiting_approval")
    return started


async def listed(cli: Cli, tenant: str, runs: int) -> dict[str, object]:  # noqa: F811
    """The dry run's JSON once visibility lists all ``runs`` (it lags the workflows)."""
    for _ in range(50):
        result = await cli("approve-all", "--tenant", tenant, "--as", "user:bob", "--dry-run",
                           "--json")  # fmt: skip
        assert result.code == 0, result
        if result.json()["matched"] == runs:
            return dict(result.json())
        await asyncio.sleep(0.1)
    raise AssertionError(f"visibility never listed {runs} waiting runs of {tenant}")


async def test_approve_all_votes_once_on_each_waiting_run_of_the_tenant_only(
    cli: Cli,  # noqa: F811
) -> None:
    tenant, other = await approval_tenant(cli), await approval_tenant(cli)
    mine = await parked(cli, tenant, 2)
    [theirs] = await parked(cli, other, 1)
    dry = await listed(cli, tenant, 2)
    assert sorted(r["run_id"] for r in dry["runs"]) == sorted(mine)  # type: ignore[attr-defined]

    result = await cli("approve-all", "--tenant", tenant, "--as", "user:bob", "--json")
    assert result.code == 0, result
    report = result.json()
    assert (report["matched"], report["accepted"], report["refused"]) == (2, 2, 0), result
    for run_id in mine:
        status = await wait_for_status(cli, run_id, "completed")
        assert status["steps"][0]["status"] == "succeeded"
    # The other tenant's run was never voted on: it still waits.
    status = await cli.status(theirs)
    assert status["status"] == "awaiting_approval" or status["pending_approvals"], status


async def test_a_non_approver_is_refused_by_every_run_and_nothing_runs(
    cli: Cli,  # noqa: F811
) -> None:
    tenant = await approval_tenant(cli)
    runs = await parked(cli, tenant, 2)
    await listed(cli, tenant, 2)
    result = await cli("approve-all", "--tenant", tenant, "--as", "user:eve", "--json")
    assert result.code == 1, result
    report = result.json()
    assert (report["accepted"], report["refused"]) == (0, 2), result
    assert all("not an approver" in r["error"] for r in report["runs"]), result
    for run_id in runs:
        status = await cli.status(run_id)
        assert [s["status"] for s in status["steps"]] == ["awaiting_approval"], status


async def test_with_tokens_each_run_counts_its_own_narrowed_token(
    cli: Cli,  # noqa: F811
    pool: asyncpg.Pool,
) -> None:
    """A tenant that needs tokens: the one principal token given is narrowed to each
    run's approval before it is sent, and every run audits an authenticated vote."""
    tenant = new_tenant()
    async with tenant_transaction(pool, tenant) as conn:
        await directory.create_tenant(conn, tenant)
        for principal in ("user:ann", "user:bob"):
            await directory.add_principal(conn, tenant, principal)
    await configure_tenant(
        cli.settings.opa_url,
        tenant,
        approval_risk="low",
        approvers=["user:bob"],
        approval_authentication="token",
    )
    private = key_store(cli.settings).private(IDENTITY)
    assert private is not None
    issued = PrincipalTokenIssuer(private).issue(tenant, "user:bob")
    runs = await parked(cli, tenant, 2)
    await listed(cli, tenant, 2)

    result = await cli(
        "approve-all", "--tenant", tenant, "--as", "user:bob", "--json", "--token", issued.token
    )
    assert result.code == 0, result
    for run_id in runs:
        await wait_for_status(cli, run_id, "completed")
        async with tenant_transaction(pool, tenant) as conn:
            accepted = [e for e in await list_events(conn, tenant, run_id)
                        if e.kind == "approval_accepted"]  # fmt: skip
        assert [(e.actor, e.data["authenticated"]) for e in accepted] == [("user:bob", True)]


async def test_the_longest_waiting_runs_are_listed_first(cli: Cli) -> None:  # noqa: F811
    """Runs listed for a bulk vote come oldest first, so those nearest their approval
    deadline are voted on first (Temporal's visibility lists newest first)."""
    tenant = await approval_tenant(cli)
    started = await parked(cli, tenant, 3)
    await listed(cli, tenant, 3)

    client = await connect(cli.settings)
    assert [h.id for h in await flagged_runs(client, tenant)] == started


async def orphaned_run(cli: Cli, tenant: str) -> tuple[WorkflowHandle[Any, Any], str]:  # noqa: F811
    """A run parked on a queue whose worker is gone, listed by visibility as waiting:
    Temporal answers its query "no poller seen" (FAILED_PRECONDITION)."""
    client = await connect(cli.settings)
    orphan_queue = f"orphan-{uuid.uuid4().hex[:8]}"
    with worker_process(cli.settings, orphan_queue):
        orphan = await start_run(
            client, orphan_queue, tenant=tenant, principal="user:ann", playbook_source=PUT_ONLY
        )
        await wait_pending(orphan, "put")

    async def orphan_listed() -> bool:
        return orphan.id in {h.id for h in await flagged_runs(client, tenant)}

    await until(orphan_listed, "visibility to list the orphan as waiting")
    return orphan, orphan_queue


async def test_a_run_whose_worker_is_gone_is_unknown_not_closed_and_fails_the_command(
    cli: Cli,  # noqa: F811
) -> None:
    """The bulk vote used to take "no poller seen" for "closed" and skip the run without a
    word. Temporal says the run still runs, so its outcome is unknown (asked again each
    round), named with Temporal's reason, and the command exits 1; the run it could vote
    on is approved."""
    tenant = await approval_tenant(cli)
    [mine] = await parked(cli, tenant, 1)
    await listed(cli, tenant, 1)
    orphan, orphan_queue = await orphaned_run(cli, tenant)

    child = await cli.start("approve-all", "--tenant", tenant, "--as", "user:bob",
                            "--attempts", "1", "--json")  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), timeout=240)
    assert child.returncode == 1, (out, err)
    report = json.loads(out)
    assert (report["accepted"], report["refused"], report["unknown"]) == (1, 0, 1), report
    [unknown] = [run for run in report["runs"] if run["unknown"]]
    assert (unknown["run_id"], unknown["step_id"]) == (orphan.id, ""), report
    assert "no poller" in unknown["error"], report
    assert report["missed_runs"] == [], report
    assert (await wait_for_status(cli, mine, "completed"))["steps"][0]["status"] == "succeeded"
    # The orphan was never voted on: once a worker serves its queue again it still waits.
    with worker_process(cli.settings, orphan_queue):
        assert (await wait_pending(orphan, "put")).step_id == "put"
    await orphan.terminate("test over")


async def test_a_run_whose_worker_comes_back_between_rounds_gets_its_vote(
    cli: Cli,  # noqa: F811
) -> None:
    """Asked again each round, a run whose worker returns is voted on, and the command
    exits 0 with every vote accepted."""
    tenant = await approval_tenant(cli)
    orphan, orphan_queue = await orphaned_run(cli, tenant)

    child = await cli.start("approve-all", "--tenant", tenant, "--as", "user:bob",
                            "--attempts", "20", "--json")  # fmt: skip
    assert child.stderr is not None
    said = b""
    while not said.startswith(b"round 1: 1 run(s) with an unknown outcome"):
        said = await asyncio.wait_for(child.stderr.readline(), timeout=120)
        assert said, "approve-all ended before its first round of unknown outcomes"
    with worker_process(cli.settings, orphan_queue):
        out, err = await asyncio.wait_for(child.communicate(), timeout=300)
        assert child.returncode == 0, (out, err)
        report = json.loads(out)
        assert (report["accepted"], report["unknown"], report["missed"]) == (1, 0, 0), report
        assert [run["run_id"] for run in report["runs"]] == [orphan.id], report
        assert (await wait_for_status(cli, orphan.id, "completed"))["status"] == "completed"


async def test_a_step_the_approver_already_voted_on_is_counted_as_held_not_refused(
    cli: Cli,  # noqa: F811
) -> None:
    """Two approvals needed; bob voted with ``stead approve``. ``approve-all`` as bob gets
    the run's repeat refusal (``ApprovalRepeated``): bob's vote is held, so it is neither
    a refusal nor a missed step, and the command exits 0 with the step still waiting."""
    tenant = new_tenant()
    await configure_tenant(cli.settings.opa_url, tenant, approval_risk="low",
                           approvers=["user:bob", "user:cat"], min_approvals=2)  # fmt: skip
    [run_id] = await parked(cli, tenant, 1)
    await listed(cli, tenant, 1)
    first = await cli("approve", run_id, "put", "--as", "user:bob")
    assert first.code == 0, first
    result = await cli("approve-all", "--tenant", tenant, "--as", "user:bob", "--json")
    assert result.code == 0, result
    report = result.json()
    assert (report["accepted"], report["already_voted"], report["refused"]) == (0, 1, 0), report
    assert (report["missed"], report["runs"][0]["already_voted"]) == (0, True), report
    status = await cli.status(run_id)
    assert [s["status"] for s in status["steps"]] == ["awaiting_approval"], status
