"""AES-256-GCM payload codec: what the Temporal server stores is ciphertext.

Each payload is serialised whole (metadata and data, so even the encoding and the
pydantic type stay private), encrypted under the keyring's active key with a fresh
96-bit nonce, and replaced by a payload whose metadata says only
``encoding: binary/encrypted`` and ``encryption-key-id: <id>`` (the names Temporal's
samples use, so other SDKs' tools recognise them). The key id and encoding are bound
to the ciphertext as associated data: relabelling a payload with another key id
fails authentication instead of decrypting garbage.

Payloads without ``binary/encrypted`` pass through ``decode`` unchanged, so histories
written before encryption was switched on stay readable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from stead.codec.errors import PayloadDecryptFailed
from stead.codec.keyring import Keyring

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
CIPHER_METADATA = "encryption-cipher"
CIPHER = b"AES-256-GCM"
NONCE_BYTES = 12


class AesGcmCodec(PayloadCodec):
    """Encrypts with the active key; decrypts with whichever key a payload names."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._ciphers: dict[str, AESGCM] = {}

    def __repr__(self) -> str:
        return f"AesGcmCodec({self.keyring!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.keyring.active
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(key_id).encrypt(nonce, payload.SerializeToString(), _aad(key_id))
        return Payload(
            metadata={
                "encoding": ENCODING,
                KEY_ID_METADATA: key_id.encode(),
                CIPHER_METADATA: CIPHER,
            },
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if not raw_id:
            raise PayloadDecryptFailed(
                f"an encrypted payload has no {KEY_ID_METADATA} metadata; it was not written by "
                "Stead's codec"
            )
        key_id = raw_id.decode("utf-8", errors="replace")
        cipher = self._cipher(key_id)
        if len(payload.data) <= NONCE_BYTES:
            raise PayloadDecryptFailed(f"a payload encrypted with key {key_id!r} is truncated")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = cipher.decrypt(nonce, sealed, _aad(key_id))
        except InvalidTag:
            raise PayloadDecryptFailed(
                f"a payload encrypted with key {key_id!r} fails authentication: it was altered, "
                f"or the key named {key_id!r} in {self.keyring.source} is not the one that "
                "encrypted it"
            ) from None
        decoded = Payload()
        try:
            decoded.ParseFromString(plain)
        except DecodeError:
            raise PayloadDecryptFailed(
                f"a payload decrypted with key {key_id!r} is not a Temporal payload"
            ) from None
        return decoded

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            cipher = self._ciphers[key_id] = AESGCM(self.keyring.key(key_id))
        return cipher


def _aad(key_id: str) -> bytes:
    return ENCODING + b"\x00" + key_id.encode()
