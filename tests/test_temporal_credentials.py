"""The credentials the worker and the CLI present to Temporal and Qdrant (finding 10).

A Temporal cluster with the default authorizer (docker-compose.yml) serves only callers
with a JWT granting the namespace, and may demand mTLS; compose's Qdrant needs its API
key. These tests check the client side: where the credential comes from, that it is
sent, and that a broken TLS setting is one clear error before any connection, not a
hang or a plaintext fallback.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from stead.errors import ConfigError
from stead.settings import Settings
from stead.temporal import connect, temporal_tls
from stead.vector import VectorIndexUnavailable, open_vector_index
from tests.conftest import REPO, settings_for, subprocess_env
from tests.peers import serve_handler


def _settings_seen_by_a_child(settings: Settings, **env: str) -> str:
    """What a fresh process (settings from its environment) resolves as the Temporal key."""
    code = (
        "from stead.settings import load_settings; s = load_settings(); "
        "print(s.temporal_api_key.get_secret_value() if s.temporal_api_key else '-')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(settings, **env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_temporals_own_api_key_variable_is_honoured_and_steads_wins(stack: Settings) -> None:
    assert _settings_seen_by_a_child(stack) == "-"
    assert _settings_seen_by_a_child(stack, TEMPORAL_API_KEY="from-temporal") == "from-temporal"
    both = _settings_seen_by_a_child(
        stack, TEMPORAL_API_KEY="from-temporal", STEAD_TEMPORAL_API_KEY="from-stead"
    )
    assert both == "from-stead"


def test_no_tls_setting_lets_the_sdk_decide(tmp_path: Path) -> None:
    assert temporal_tls(settings_for(tmp_path)) is None
    assert temporal_tls(settings_for(tmp_path, temporal_tls=True)) is True


def test_tls_files_become_the_client_certificate_and_ca(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("client.pem", "client.key", "ca.pem"))
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    ca.write_bytes(b"CA")
    tls = temporal_tls(
        settings_for(tmp_path, temporal_tls_cert=cert, temporal_tls_key=key, temporal_tls_ca=ca)
    )
    assert tls == TLSConfig(
        server_root_ca_cert=b"CA", client_cert=b"CERT", client_private_key=b"KEY"
    )


def test_a_missing_tls_file_names_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server CA .*nope\.pem cannot be read"):
        temporal_tls(settings_for(tmp_path, temporal_tls_ca=tmp_path / "nope.pem"))


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_bytes(b"CERT")
    with pytest.raises(ConfigError, match="client certificate and its private key go together"):
        temporal_tls(settings_for(tmp_path, temporal_tls_cert=cert))


def test_tls_off_with_tls_files_is_a_contradiction(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    with pytest.raises(ConfigError, match=r"TLS is turned off .* but TLS certificates"):
        temporal_tls(settings_for(tmp_path, temporal_tls=False, temporal_tls_ca=ca))


async def test_the_worker_connects_presenting_an_api_key(stack: Settings) -> None:
    # The dev server has no authorizer, so it ignores the key: this proves the key and
    # the explicit plaintext choice reach Client.connect and a call goes through.
    keyed = settings_for(stack.home, temporal_api_key="a-jwt", temporal_tls=False)
    client = await connect(keyed)
    assert client.service_client.config.api_key == "a-jwt"
    handle = client.get_workflow_handle(f"nothing-{uuid.uuid4().hex}")
    with pytest.raises(Exception, match="not found"):
        await handle.describe()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
async def test_the_qdrant_api_key_is_sent_to_the_server(tmp_path: Path) -> None:
    """A server that refuses everything, as Qdrant does without its key, and records it."""
    seen: list[str | None] = []

    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            seen.append(self.headers.get("api-key"))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve_handler(Refusing) as url:
        index = open_vector_index(url, tmp_path, api_key="qdrant-key")
        with pytest.raises(VectorIndexUnavailable, match="STEAD_QDRANT_API_KEY") as caught:
            await index.ensure_collection(4)
        assert "qdrant-key" not in str(caught.value)
        await index.close()
    assert seen and set(seen) == {"qdrant-key"}
