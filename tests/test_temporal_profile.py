"""Temporal's own environment configuration reaches every Stead process, in a known order.

Precedence, per setting: ``STEAD_TEMPORAL_*`` > ``TEMPORAL_*`` variables > the
``temporal.toml`` profile (``TEMPORAL_PROFILE``) > ``stack.json`` of ``stead dev up`` >
defaults. Checked in child processes, which read their environment the way the worker
and the CLI do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.service import TLSConfig

from stead.errors import ConfigError
from stead.temporal import temporal_tls
from stead.temporal_profile import profile_settings
from tests.conftest import REPO, settings_for

PROFILES = """
[profile.default]
address = "file-default:7233"

[profile.cloud]
address = "acct.tmprl.cloud:7233"
namespace = "prod.acct"
api_key = "from-the-file"

[profile.cloud.tls]
server_name = "acct.tmprl.cloud"
"""


def _resolved(home: Path, **env: str) -> dict[str, str | None]:
    """What a fresh process resolves as its Temporal address, namespace and key."""
    code = (
        "import json; from stead.settings import load_settings; s = load_settings(); "
        "print(json.dumps({'address': s.temporal_address, 'namespace': s.temporal_namespace,"
        " 'api_key': s.temporal_api_key.get_secret_value() if s.temporal_api_key else None,"
        " 'server_name': s.temporal_tls_server_name}))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STEAD_", "TEMPORAL_"))}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "STEAD_HOME": str(home), "TEMPORAL_CONFIG_FILE": os.devnull, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    resolved: dict[str, str | None] = json.loads(done.stdout)
    return resolved


@pytest.fixture
def dev_home(tmp_path: Path) -> Path:
    """A STEAD_HOME whose stack.json says a dev server listens on 127.0.0.1:17233."""
    (tmp_path / "stack.json").write_text(
        json.dumps({"endpoints": {"temporal_address": "127.0.0.1:17233"}})
    )
    return tmp_path


def test_the_dev_stack_address_is_used_when_nothing_else_is_set(dev_home: Path) -> None:
    assert _resolved(dev_home)["address"] == "127.0.0.1:17233"


def test_temporal_address_beats_the_dev_stack_and_stead_beats_both(dev_home: Path) -> None:
    assert _resolved(dev_home, TEMPORAL_ADDRESS="env:7233")["address"] == "env:7233"
    both = _resolved(dev_home, TEMPORAL_ADDRESS="env:7233", STEAD_TEMPORAL_ADDRESS="stead:7233")
    assert both["address"] == "stead:7233"


def test_a_named_profile_is_read_and_temporal_variables_override_it(
    dev_home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(PROFILES)
    chosen = _resolved(dev_home, TEMPORAL_CONFIG_FILE=str(config), TEMPORAL_PROFILE="cloud")
    assert chosen == {
        "address": "acct.tmprl.cloud:7233",
        "namespace": "prod.acct",
        "api_key": "from-the-file",
        "server_name": "acct.tmprl.cloud",
    }
    overridden = _resolved(
        dev_home,
        TEMPORAL_CONFIG_FILE=str(config),
        TEMPORAL_PROFILE="cloud",
        TEMPORAL_API_KEY="from-env",
        STEAD_TEMPORAL_NAMESPACE="staging.acct",
    )
    assert overridden["api_key"] == "from-env"
    assert overridden["namespace"] == "staging.acct"
    default = _resolved(dev_home, TEMPORAL_CONFIG_FILE=str(config))
    assert default["address"] == "file-default:7233"


def test_an_unknown_profile_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"profile 'nope'.*not found.*TEMPORAL_PROFILE"):
        profile_settings({"TEMPORAL_PROFILE": "nope", "TEMPORAL_CONFIG_FILE": os.devnull})


def test_tls_variables_become_the_client_certificate_ca_and_server_name(tmp_path: Path) -> None:
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(b"CERT")
    key.write_bytes(b"KEY")
    found = profile_settings(
        {
            "TEMPORAL_CONFIG_FILE": os.devnull,
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(cert),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(key),
            "TEMPORAL_TLS_SERVER_CA_CERT_DATA": "CA",
            "TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
            "TEMPORAL_GRPC_META_X_TEAM": "ops",
        }
    )
    settings = settings_for(tmp_path, **found)
    assert temporal_tls(settings) == TLSConfig(
        server_root_ca_cert=b"CA",
        client_cert=b"CERT",
        client_private_key=b"KEY",
        domain="temporal.internal",
    )
    assert settings.temporal_grpc_meta == {"x-team": SecretStr("ops")}


def test_temporal_tls_false_turns_tls_off() -> None:
    found = profile_settings({"TEMPORAL_CONFIG_FILE": os.devnull, "TEMPORAL_TLS": "false"})
    assert found == {"temporal_tls": False}


def test_a_pem_given_both_as_file_and_inline_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"CA")
    both = settings_for(tmp_path, temporal_tls_ca=ca, temporal_tls_ca_data="CA")
    with pytest.raises(ConfigError, match="server CA is set both as a file"):
        temporal_tls(both)
