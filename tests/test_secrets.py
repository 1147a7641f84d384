"""Secret references and the worker's store: parsing, the tenant check, env and file backends."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from pydantic import JsonValue, SecretStr

from stead.secrets import (
    REDACTED,
    EnvSecretBackend,
    FileSecretBackend,
    InvalidSecretRef,
    SecretNotFound,
    SecretRef,
    SecretRefused,
    Secrets,
    SecretStore,
    SecretUnreadable,
    env_name,
    open_secret_store,
    redact,
    redact_json,
)
from stead.settings import secret_environment
from tests.conftest import settings_for

CANARY = "canary-2f9c1e7a-value"


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "text",
    ["secret://acme/http/api_token", "secret://acme-eu/sql/main-db", "secret://t0/http/x"],
)
def test_a_well_formed_reference_round_trips(text: str) -> None:
    assert str(SecretRef.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "acme/http/api_token",
        "secret://acme/http",
        "secret://acme/http/a/b",
        "secret://Acme/http/x",
        "secret://acme/http/..",
        "secret://acme__eu/http/x",
        "secret://acme/http/_x",
        "secret://acme/http/",
        "secret://acme/http/x y",
    ],
)
def test_a_malformed_reference_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidSecretRef, match=r"secret://|must be"):
        SecretRef.parse(text)


def test_environment_names_keep_dashes_so_two_tenants_never_share_a_variable() -> None:
    dashed = env_name(SecretRef.parse("secret://acme-eu/http/token"))
    underscored = env_name(SecretRef.parse("secret://acme_eu/http/token"))
    assert dashed == "STEAD_SECRET__ACME-EU__HTTP__TOKEN"
    assert underscored == "STEAD_SECRET__ACME_EU__HTTP__TOKEN"


async def test_env_backend_resolves_the_variable_for_the_reference() -> None:
    store = Secrets([EnvSecretBackend({"STEAD_SECRET__ACME__HTTP__API_TOKEN": CANARY})])
    value = await store.get("secret://acme/http/api_token", "acme")
    assert value.get_secret_value() == CANARY


async def test_a_reference_for_another_tenant_is_refused_before_any_backend_is_asked() -> None:
    store = Secrets([EnvSecretBackend({"STEAD_SECRET__OTHER__HTTP__API_TOKEN": CANARY})])
    with pytest.raises(
        SecretRefused, match="tenant 'acme' may not use secret://other/http/api_token"
    ):
        await store.get("secret://other/http/api_token", "acme")


async def test_a_reference_for_another_adapter_is_refused() -> None:
    store = Secrets([EnvSecretBackend({"STEAD_SECRET__ACME__SQL__DSN": CANARY})])
    with pytest.raises(SecretRefused, match="belongs to the sql adapter"):
        await store.get("secret://acme/sql/dsn", "acme", adapter="http")


async def test_a_missing_secret_names_where_it_was_looked_for(tmp_path: Path) -> None:
    store = Secrets([EnvSecretBackend({}), FileSecretBackend(tmp_path)])
    with pytest.raises(SecretNotFound) as caught:
        await store.get("secret://acme/http/api_token", "acme")
    assert "STEAD_SECRET__ACME__HTTP__API_TOKEN" in caught.value.message
    assert str(tmp_path / "acme" / "http" / "api_token") in caught.value.message


async def test_backends_are_asked_in_order_and_the_first_hit_wins(tmp_path: Path) -> None:
    _write(tmp_path / "acme" / "http" / "api_token", "from-file\n")
    env = EnvSecretBackend({"STEAD_SECRET__ACME__HTTP__API_TOKEN": "from-env"})
    files = FileSecretBackend(tmp_path)
    ref = "secret://acme/http/api_token"
    assert (await Secrets([env, files]).get(ref, "acme")).get_secret_value() == "from-env"
    assert (await Secrets([files, env]).get(ref, "acme")).get_secret_value() == "from-file"


async def test_file_backend_strips_one_trailing_newline(tmp_path: Path) -> None:
    _write(tmp_path / "acme" / "http" / "api_token", CANARY + "\n")
    value = await Secrets([FileSecretBackend(tmp_path)]).get("secret://acme/http/api_token", "acme")
    assert value.get_secret_value() == CANARY


async def test_file_backend_refuses_a_file_other_users_can_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "acme" / "http" / "api_token", CANARY, mode=0o644)
    with pytest.raises(SecretUnreadable, match=f"chmod 600 {path}") as caught:
        await Secrets([FileSecretBackend(tmp_path)]).get("secret://acme/http/api_token", "acme")
    assert CANARY not in caught.value.message


async def test_file_backend_refuses_a_directory_other_users_can_write(tmp_path: Path) -> None:
    _write(tmp_path / "acme" / "http" / "api_token", CANARY)
    (tmp_path / "acme").chmod(0o777)
    with pytest.raises(SecretUnreadable, match="chmod go-w"):
        await Secrets([FileSecretBackend(tmp_path)]).get("secret://acme/http/api_token", "acme")


async def test_file_backend_refuses_a_symlink_out_of_its_root(tmp_path: Path) -> None:
    outside = _write(tmp_path / "elsewhere" / "token", CANARY)
    root = tmp_path / "root"
    (root / "acme" / "http").mkdir(parents=True, mode=0o700)
    (root / "acme" / "http" / "api_token").symlink_to(outside)
    with pytest.raises(SecretUnreadable, match="outside the secret root"):
        await Secrets([FileSecretBackend(root)]).get("secret://acme/http/api_token", "acme")


async def test_file_backend_follows_a_symlink_inside_its_root(tmp_path: Path) -> None:
    # Kubernetes secret volumes are symlinks into a ..data dir under the mount.
    _write(tmp_path / "acme" / "http" / "..data" / "api_token", CANARY)
    (tmp_path / "acme" / "http" / "api_token").symlink_to("..data/api_token")
    value = await Secrets([FileSecretBackend(tmp_path)]).get("secret://acme/http/api_token", "acme")
    assert value.get_secret_value() == CANARY


async def test_an_empty_secret_is_refused(tmp_path: Path) -> None:
    store = Secrets([EnvSecretBackend({"STEAD_SECRET__ACME__HTTP__API_TOKEN": ""})])
    with pytest.raises(SecretUnreadable, match="is empty"):
        await store.get("secret://acme/http/api_token", "acme")


async def test_resolved_values_are_masked_in_repr_str_format_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Secrets([EnvSecretBackend({"STEAD_SECRET__ACME__HTTP__API_TOKEN": CANARY})])
    value = await store.get("secret://acme/http/api_token", "acme")
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("resolved %s / %r / %s", value, value, f"{value}")
    for shown in (repr(value), str(value), f"{value}", caplog.text, repr(store)):
        assert CANARY not in shown
    assert "**********" in str(value)


def test_the_store_satisfies_the_protocol_adapters_check_for(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, secret_dir=tmp_path / "secrets")
    store = open_secret_store(settings, {})
    assert isinstance(store, SecretStore)
    assert "EnvSecretBackend" in repr(store) and "FileSecretBackend" in repr(store)


async def test_settings_choose_the_backends_and_their_order(tmp_path: Path) -> None:
    _write(tmp_path / "secrets" / "acme" / "http" / "api_token", "from-file")
    environ = {"STEAD_SECRET__ACME__HTTP__API_TOKEN": SecretStr("from-env")}
    only_files = settings_for(tmp_path, secret_dir=tmp_path / "secrets", secret_backends=["files"])
    value = await open_secret_store(only_files, environ).get("secret://acme/http/api_token", "acme")
    assert value.get_secret_value() == "from-file"


def test_secret_environment_takes_only_secret_variables_and_masks_them() -> None:
    os.environ["STEAD_SECRET__ACME__HTTP__PROBE"] = CANARY
    os.environ["STEAD_SECRETISH"] = "not a secret variable"
    try:
        found = secret_environment()
    finally:
        del os.environ["STEAD_SECRET__ACME__HTTP__PROBE"], os.environ["STEAD_SECRETISH"]
    assert found["STEAD_SECRET__ACME__HTTP__PROBE"].get_secret_value() == CANARY
    assert "STEAD_SECRETISH" not in found
    assert CANARY not in repr(found)


def test_redaction_reaches_nested_json_and_keys() -> None:
    secret = SecretStr(CANARY)
    assert redact(f"Bearer {CANARY}!", secret) == f"Bearer {REDACTED}!"
    body: JsonValue = {"headers": {"authorization": f"Bearer {CANARY}"}, CANARY: [CANARY, 1, None]}
    assert CANARY not in repr(redact_json(body, secret))
