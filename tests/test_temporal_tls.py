"""Stead against a Temporal frontend that demands mTLS or API keys: a real server, real TLS.

Temporal's own server binary (tests/tls_temporal.py) serves the frontend over TLS. With
client certificates required, a worker configured only through ``TEMPORAL_TLS_*`` and a
CLI configured only through a ``temporal.toml`` profile complete a governed run; a
client without a certificate is refused in one line. With the default JWT authorizer
and a JWKS served by the test, a JWT minted here as ``TEMPORAL_API_KEY`` runs the same
way and a JWT from another key is refused in one line. Postgres and OPA are the session
stack's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from stead.settings import Settings
from tests.conftest import REPO, subprocess_env
from tests.peers import serve_handler
from tests.runs import configure_tenant, new_tenant, playbook
from tests.tls_temporal import SERVER_NAME, Issuer, TlsServer, tls_temporal
from tests.workers import worker_process

PUT_ONLY = playbook(
    {"id": "put", "operation": "records.put", "args": {"key": "a", "value": {"n": 1}}}
)
NAMESPACE = "stead-tls"


def stead(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stead.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=180,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


async def completes_a_run(
    stack: Settings, tmp_path: Path, worker_env: dict[str, str], cli_env: dict[str, str]
) -> None:
    """Namespace setup, a worker and ``stead run --wait`` over the configured credential."""
    setup = stead(cli_env, "temporal", "setup")
    assert setup.returncode == 0, setup.stderr
    tenant = new_tenant()
    await configure_tenant(stack.opa_url, tenant)
    source = tmp_path / "put-only.yaml"
    source.write_text(PUT_ONLY)
    queue = f"tls-{uuid.uuid4().hex[:8]}"
    with worker_process(stack, queue, env=worker_env):
        done = stead(
            {**cli_env, "STEAD_TASK_QUEUE": queue},
            *("run", "--tenant", tenant, "--as", "user:ann"),
            *("--playbook-file", str(source), "--wait", "--json"),
        )
    assert done.returncode == 0, (done.stdout, done.stderr)
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed"
    assert [s["status"] for s in summary["steps"]] == ["succeeded"]


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    with tls_temporal(tmp_path_factory.mktemp("mtls"), mtls=True) as server:
        yield server


def tls_variables(server: TlsServer) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_NAMESPACE": NAMESPACE,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(server.pki.ca),
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
    }


async def test_worker_by_tls_variables_and_cli_by_profile_complete_a_run_over_mtls(
    stack: Settings, mtls: TlsServer, tmp_path: Path
) -> None:
    worker_env = {
        **tls_variables(mtls),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(mtls.pki.client.cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(mtls.pki.client.key),
    }
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        f"""
[profile.ops]
address = "{mtls.address}"
namespace = "{NAMESPACE}"

[profile.ops.tls]
server_name = "{SERVER_NAME}"
server_ca_cert_path = "{mtls.pki.ca}"
client_cert_path = "{mtls.pki.client.cert}"
client_key_path = "{mtls.pki.client.key}"
"""
    )
    cli_env = subprocess_env(stack, TEMPORAL_CONFIG_FILE=str(profile), TEMPORAL_PROFILE="ops")
    await completes_a_run(stack, tmp_path, worker_env, cli_env)


@pytest.mark.parametrize(
    ("presented", "says"),
    [
        ("no certificate", "requires a client certificate and none was presented"),
        ("another CA's certificate", "did not accept this client certificate"),
        ("the wrong server CA", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
    ],
)
def test_a_client_without_an_accepted_certificate_is_refused_in_one_line(
    stack: Settings, mtls: TlsServer, presented: str, says: str
) -> None:
    env = subprocess_env(stack, **tls_variables(mtls))
    if presented == "another CA's certificate":
        env["TEMPORAL_TLS_CLIENT_CERT_PATH"] = str(mtls.pki.stranger.cert)
        env["TEMPORAL_TLS_CLIENT_KEY_PATH"] = str(mtls.pki.stranger.key)
    if presented == "the wrong server CA":
        env["TEMPORAL_TLS_SERVER_CA_CERT_PATH"] = str(mtls.pki.stranger.cert)
    done = stead(env, "pending", "--json")
    assert done.stdout == ""
    line = one_error_line(done)
    assert mtls.address in line, line
    if done.returncode == 1:
        # The server's TLS alert was read: refused, not "unavailable" (retrying won't help).
        assert "temporal_refused" in line and says in line, line
    else:
        # A TLS 1.3 server may close the connection before the client reads its alert;
        # then it looks like a dropped connection, and the line names the likely cause.
        assert done.returncode == 4, (done.stdout, done.stderr)
        assert presented != "the wrong server CA", line  # checked before any request
        assert "temporal_unavailable" in line and "client certificate" in line, line


class Jwks(BaseHTTPRequestHandler):
    """The identity provider's key set, as Temporal's JWT key provider fetches it."""

    document = b""

    def log_message(self, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.document)))
        self.end_headers()
        self.wfile.write(self.document)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer.new()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[TlsServer]:
    Jwks.document = issuer.jwks()
    with (
        serve_handler(Jwks) as jwks,
        tls_temporal(
            tmp_path_factory.mktemp("jwt"),
            mtls=False,
            jwks_url=f"{jwks}/.well-known/jwks.json",
            admin_jwt=issuer.token("temporal-system:admin"),
        ) as server,
    ):
        yield server


async def test_a_jwt_as_temporal_api_key_completes_a_run(
    stack: Settings, keyed: TlsServer, issuer: Issuer, tmp_path: Path
) -> None:
    admin = {**tls_variables(keyed), "TEMPORAL_API_KEY": issuer.token("temporal-system:admin")}
    setup = stead(subprocess_env(stack, **admin), "temporal", "setup")
    assert setup.returncode == 0, setup.stderr
    writer = {**tls_variables(keyed), "TEMPORAL_API_KEY": issuer.token(f"{NAMESPACE}:write")}
    await completes_a_run(stack, tmp_path, writer, subprocess_env(stack, **writer))


def test_a_jwt_from_another_key_is_refused_in_one_line(stack: Settings, keyed: TlsServer) -> None:
    forged = Issuer.new().token("temporal-system:admin")
    env = subprocess_env(stack, **tls_variables(keyed), TEMPORAL_API_KEY=forged)
    done = stead(env, "pending", "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    line = one_error_line(done)
    assert "temporal_refused" in line and "TEMPORAL_API_KEY" in line
    assert forged not in done.stderr
