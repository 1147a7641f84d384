"""Why a payload could not be encrypted or decrypted: each message says what to fix."""

from __future__ import annotations

from stead.errors import ErrorCode, SteadError


class CodecError(SteadError):
    """Base class for keyring and payload codec failures."""

    code = ErrorCode.CONFIG


class KeyringError(CodecError):
    """The keyring file is missing, unsafe or malformed."""


class UnknownKeyId(CodecError):
    """A payload names a key id this keyring does not hold (retired too early?)."""

    def __init__(self, key_id: str, known: tuple[str, ...], source: str) -> None:
        self.key_id = key_id
        self.known = known
        super().__init__(
            f"payload was encrypted with key {key_id!r}, which is not in {source} "
            f"(it holds: {', '.join(known) or 'no keys'}); add the retired key back to the "
            "keyring: a key must stay until no history encrypted with it is kept"
        )


class PayloadDecryptFailed(CodecError):
    """The ciphertext fails authentication or is malformed: tampered, or a different key."""


class KeyringRequired(CodecError):
    """An encrypted payload reached a process configured without a keyring."""

    def __init__(self) -> None:
        super().__init__(
            "this run's payloads are encrypted (binary/encrypted) but this process has no "
            "keyring: set STEAD_CODEC_KEYRING to the keyring file the workers use "
            "(`stead codec keygen` made it)"
        )
