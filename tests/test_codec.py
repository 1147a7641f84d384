"""The AES-GCM payload codec and its keyring: encryption, key ids, rotation, tampering."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from stead.codec import (
    ENCODING,
    KEY_ID_METADATA,
    AesGcmCodec,
    Keyring,
    KeyringError,
    PayloadDecryptFailed,
    UnknownKeyId,
    add_key,
    data_converter,
    encrypted_data_converter,
    load_keyring,
)
from stead.codec.converter import PLAIN_CONVERTER
from tests.conftest import settings_for

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)
PLAINTEXT = "customer-4711-plaintext-marker"


def _payload(value: object) -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([value])[0]


def _keyring_file(path: Path, keys: dict[str, bytes], active: str, mode: int = 0o600) -> Path:
    encoded = {kid: base64.b64encode(key).decode() for kid, key in keys.items()}
    path.write_text(json.dumps({"active": active, "keys": encoded}))
    path.chmod(mode)
    return path


async def test_encoded_payloads_hide_data_and_type_and_name_their_key() -> None:
    codec = AesGcmCodec(Keyring({"a": KEY_A}, "a"))
    [sealed] = await codec.encode([_payload({"note": PLAINTEXT})])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"a"
    assert set(sealed.metadata) == {"encoding", KEY_ID_METADATA, "encryption-cipher"}
    assert PLAINTEXT.encode() not in sealed.SerializeToString()
    assert b"json/plain" not in sealed.SerializeToString()


async def test_decoding_gives_back_the_exact_payload() -> None:
    codec = AesGcmCodec(Keyring({"a": KEY_A}, "a"))
    original = _payload({"note": PLAINTEXT})
    [sealed] = await codec.encode([original])
    assert await codec.decode([sealed]) == [original]


async def test_the_same_payload_encrypts_differently_each_time() -> None:
    codec = AesGcmCodec(Keyring({"a": KEY_A}, "a"))
    first, second = await codec.encode([_payload(PLAINTEXT), _payload(PLAINTEXT)])
    assert first.data != second.data


async def test_after_rotation_old_payloads_decrypt_and_new_ones_use_the_new_key() -> None:
    [old] = await AesGcmCodec(Keyring({"a": KEY_A}, "a")).encode([_payload(PLAINTEXT)])
    rotated = AesGcmCodec(Keyring({"a": KEY_A, "b": KEY_B}, "b"))
    [new] = await rotated.encode([_payload(PLAINTEXT)])
    assert new.metadata[KEY_ID_METADATA] == b"b"
    assert await rotated.decode([old, new]) == [_payload(PLAINTEXT), _payload(PLAINTEXT)]


async def test_a_payload_under_a_retired_key_names_the_key_and_the_fix() -> None:
    [old] = await AesGcmCodec(Keyring({"a": KEY_A}, "a")).encode([_payload(PLAINTEXT)])
    with pytest.raises(UnknownKeyId) as caught:
        await AesGcmCodec(Keyring({"b": KEY_B}, "b")).decode([old])
    assert caught.value.key_id == "a"
    assert "add the retired key back" in caught.value.message
    assert "it holds: b" in caught.value.message


async def test_a_tampered_payload_fails_authentication() -> None:
    codec = AesGcmCodec(Keyring({"a": KEY_A}, "a"))
    [sealed] = await codec.encode([_payload(PLAINTEXT)])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(PayloadDecryptFailed, match="fails authentication"):
        await codec.decode([tampered])


async def test_relabelling_a_payload_with_another_key_id_fails_authentication() -> None:
    codec = AesGcmCodec(Keyring({"a": KEY_A, "b": KEY_A}, "a"))  # same bytes, other id
    [sealed] = await codec.encode([_payload(PLAINTEXT)])
    relabelled = Payload(metadata={**sealed.metadata, KEY_ID_METADATA: b"b"}, data=sealed.data)
    with pytest.raises(PayloadDecryptFailed):
        await codec.decode([relabelled])


async def test_unencrypted_payloads_pass_through_so_old_histories_stay_readable() -> None:
    plain = _payload({"written": "before encryption was on"})
    assert await AesGcmCodec(Keyring({"a": KEY_A}, "a")).decode([plain]) == [plain]


async def test_failure_messages_and_details_are_encrypted_too() -> None:
    converter = encrypted_data_converter(Keyring({"a": KEY_A}, "a"))
    failure = Failure()
    error = ApplicationError(
        f"charge for {PLAINTEXT} failed", {"card": PLAINTEXT}, type="StepFailed"
    )
    await converter.encode_failure(error, failure)
    assert failure.message == "Encoded failure"
    assert failure.stack_trace == ""
    assert failure.application_failure_info.type == "StepFailed"
    assert PLAINTEXT.encode() not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert isinstance(decoded, ApplicationError)
    assert decoded.message == f"charge for {PLAINTEXT} failed"
    assert decoded.details == ({"card": PLAINTEXT},)


def test_a_keyring_is_loaded_from_its_file_and_never_shows_key_bytes(tmp_path: Path) -> None:
    path = _keyring_file(tmp_path / "keys.json", {"a": KEY_A, "b": KEY_B}, "b")
    keyring = load_keyring(path)
    assert keyring.active == "b" and keyring.ids == ("a", "b")
    assert keyring.key("a") == KEY_A
    assert base64.b64encode(KEY_A).decode() not in repr(keyring)
    assert load_keyring(path, active="a").active == "a"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"active": "a", "keys": {"a": base64.b64encode(b"short").decode()}}, "needs 32"),
        ({"active": "a", "keys": {"a": "not base64!"}}, "not valid base64"),
        ({"active": "z", "keys": {"a": base64.b64encode(KEY_A).decode()}}, "active key 'z'"),
        ({"a": base64.b64encode(KEY_A).decode()}, "must be a JSON object"),
        ({"active": "a", "keys": {}}, "holds no keys"),
    ],
)
def test_a_malformed_keyring_is_refused_at_start(
    tmp_path: Path, content: object, problem: str
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(content))
    path.chmod(0o600)
    with pytest.raises(KeyringError, match=problem):
        load_keyring(path)


def test_a_keyring_other_users_can_read_is_refused(tmp_path: Path) -> None:
    path = _keyring_file(tmp_path / "keys.json", {"a": KEY_A}, "a", mode=0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_keyring(path)


def test_a_missing_keyring_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="stead codec keygen"):
        load_keyring(tmp_path / "absent.json")


def test_add_key_creates_a_private_keyring_and_rotates_keeping_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = add_key(path, "a")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert first.active == "a"
    second = add_key(path, "b")
    assert second.ids == ("a", "b") and second.active == "b"
    assert load_keyring(path).key("a") == first.key("a")
    staged = add_key(path, "c", activate=False)
    assert staged.active == "b"
    with pytest.raises(KeyringError, match="already holds"):
        add_key(path, "c")


def test_settings_switch_encryption_on(tmp_path: Path) -> None:
    assert data_converter(settings_for(tmp_path)) is PLAIN_CONVERTER
    path = _keyring_file(tmp_path / "keys.json", {"a": KEY_A, "b": KEY_B}, "a")
    converter = data_converter(settings_for(tmp_path, codec_keyring=path, codec_active_key="b"))
    assert isinstance(converter.payload_codec, AesGcmCodec)
    assert converter.payload_codec.keyring.active == "b"
