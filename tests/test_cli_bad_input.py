"""Wrong input of any kind gives one clear line and a documented exit code, never a traceback.

The walk visits every command of the real CLI tree that takes ``--tenant`` or ``--as``
and gives each a hostile value, against the real stack. A command that lets a
``ValueError``/``ValidationError`` escape shows up as an exception in the runner's
result: in a terminal it would have been a Python traceback.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import typer.main
from typer.testing import CliRunner

from stead.cli.main import app
from stead.settings import Settings
from tests.conftest import settings_for, subprocess_env
from tests.runs import configure_tenant, new_tenant, playbook, start_run, wait_pending
from tests.test_no_secrets_in_history import in_process_worker, private_keyring

# Values a careless or hostile user types; the second looks like Rich markup.
BAD_TENANT = "Bad Tenant [x]"
BAD_PRINCIPAL = "nobody [b]"
# Positional arguments for commands that need them (placeholders that parse).
ARGUMENTS: dict[str, list[str]] = {
    "approve": ["run-x-0", "step"],
    "audit": ["verify"],
    "cancel": ["run-x-0"],
    "memory put": ["notes", "k", "text"],
    "memory get": ["notes", "k"],
    "memory history": ["notes", "k"],
    "memory search": ["anything"],
    "memory erase": ["notes", "k"],
    "memory observe": ["stock.level", "1"],
    "memory series": ["stock.level"],
    "principal add": ["user:x"],
    "principal disable": ["user:x"],
    "principal enable": ["user:x"],
    "principal join": ["user:x", "group:y"],
    "principal leave": ["user:x", "group:y"],
    "principal token": ["user:x"],
    "principal sign-approval": ["run-x-0", "step"],
}
# Options a command needs besides the one under test, so only that one is wrong.
EXTRA: dict[str, list[str]] = {
    "run": ["--playbook", "records-demo", "--input", "key=k"],
    "webhook serve": ["--playbook", "records-demo"],
    "principal sign-approval": ["--plan-hash", "h"],
    "memory retention": ["--raw-days", "7"],
}
GOOD = {"--tenant": "acme", "--as": "user:ann"}


def _commands() -> Iterator[tuple[str, list[str]]]:
    """(``name``, options it takes) for every leaf command of the CLI."""

    def walk(command: Any, prefix: list[str]) -> Iterator[tuple[str, list[str]]]:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*prefix, name])
            return
        options = [
            p.opts[0] for p in command.params if getattr(p, "param_type_name", "") == "option"
        ]
        yield " ".join(prefix), options

    yield from walk(typer.main.get_command(app), [])


CASES = [
    pytest.param(name, option, id=f"{name} {option}")
    for name, options in _commands()
    for option in ("--tenant", "--as")
    if option in options
]


def test_the_walk_covers_the_commands_the_issue_names() -> None:
    walked = {(name, option) for name, option in (c.values for c in CASES)}
    for name in ("memory get", "audit", "slo", "memory reindex", "memory put", "run"):
        assert (name, "--tenant") in walked, name


@pytest.mark.parametrize(("name", "option"), CASES)
def test_a_hostile_option_value_is_one_line_and_exit_1(
    stack: Settings, name: str, option: str
) -> None:
    command = name.split()
    args = [*command, *ARGUMENTS.get(name, []), *EXTRA.get(name, [])]
    options = _options_of(name)
    for other, value in GOOD.items():
        if other != option and other in options:
            args += [other, value]
    args += [option, BAD_TENANT if option == "--tenant" else BAD_PRINCIPAL]
    result = CliRunner().invoke(app, args, env=subprocess_env(stack), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"`stead {' '.join(args)}` raised {result.exception!r}"
    )
    assert result.exit_code in (1, 2), (args, result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, f"`stead {' '.join(args)}` failed without saying why"
    assert "Traceback" not in result.output + result.stderr
    if result.exit_code == 1:
        # Our own refusal: one line, and the user's text or pattern shown whole.
        assert len(lines) == 1, lines
        assert lines[0].startswith("error ("), lines


def test_a_pattern_in_an_error_is_shown_whole_not_as_markup(stack: Settings) -> None:
    result = CliRunner().invoke(
        app,
        ["memory", "put", "no namespace", "k", "text", "--tenant", "acme", "--as", "user:ann"],
        env=subprocess_env(stack),
    )
    assert result.exit_code == 1, result.output
    # The namespace pattern starts with a character class: Rich markup would eat it.
    assert "[A-Za-z0-9]" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        pytest.param(
            "name: x\nsteps:\n  - id: a\n    operation: records.put\n    args: {key: [1, 2}\n",
            "line 5, column",
            id="yaml-syntax",
        ),
        pytest.param(
            "name: x\nsteps:\n  - {id: a, operation: records.get, args: {key: "
            '{"$ref": "steps.ghost.output.key"}}}\n',
            "refers to the output of 'ghost', which is not a step of this plan",
            id="ref-to-unknown-step",
        ),
        pytest.param(
            "name: x\nsteps:\n  - {id: a, operation: records.get, depends_on: [b]}\n"
            "  - {id: b, operation: records.get, depends_on: [a]}\n",
            "in a cycle",
            id="dependency-cycle",
        ),
    ],
)
def test_a_broken_playbook_file_is_refused_before_anything_starts(
    stack: Settings, tmp_path: Path, yaml_text: str, expected: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml_text)
    tenant = f"t{uuid.uuid4().hex[:10]}"
    result = CliRunner().invoke(
        app,
        ["run", "--tenant", tenant, "--as", "user:ann", "--playbook-file", str(path)],
        env=subprocess_env(stack),
    )
    assert result.exit_code == 2, result.output
    assert expected in result.stderr, result.stderr
    if expected.startswith("line"):
        assert str(path) in result.stderr, result.stderr  # the file, not "<unicode string>"
    assert "<unicode string>" not in result.stderr
    # Nothing started: no run record, no audit row for the tenant.
    assert _rows(stack, "runs", tenant) == 0
    assert _rows(stack, "audit_events", tenant) == 0


def _rows(stack: Settings, table: str, tenant: str) -> int:
    async def count() -> int:
        assert stack.postgres_admin_dsn is not None
        conn = await asyncpg.connect(stack.postgres_admin_dsn)
        try:
            value: int = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant = $1", tenant
            )
            return value
        finally:
            await conn.close()

    return asyncio.run(count())


def _options_of(name: str) -> list[str]:
    return next(options for n, options in _commands() if n == name)


async def test_encrypted_runs_read_without_a_keyring_name_the_setting(
    stack: Settings, tmp_path: Path
) -> None:
    keyring = private_keyring(tmp_path / "keys.json", "a")
    encrypted = settings_for(stack.home, codec_keyring=keyring)
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant, approval_risk="low", approvers=["user:bob"])
    task_queue = f"codec-cli-{uuid.uuid4().hex[:8]}"
    async with in_process_worker(encrypted, task_queue) as client:
        handle = await start_run(
            client,
            task_queue,
            tenant=tenant,
            principal="user:ann",
            playbook_source=playbook(
                {"id": "put", "operation": "records.put", "args": {"key": "k", "value": {}}}
            ),
        )
        await wait_pending(handle, "put")
        try:
            for args in (["status", handle.id], ["pending", "--tenant", tenant]):
                child = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "stead.cli",
                    *args,
                    env=subprocess_env(stack),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                out, err = await child.communicate()
                text = err.decode()
                assert child.returncode == 1, (args, out.decode(), text)
                assert "STEAD_CODEC_KEYRING" in text, (args, text)
                assert "Traceback" not in text + out.decode(), (args, text)
        finally:
            await handle.signal("cancel")
            await handle.result()
