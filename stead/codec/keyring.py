"""The payload keys: a JSON file ``{"active": "<id>", "keys": {"<id>": "<base64 key>"}}``.

Rotation is a two-step edit of this file (or of ``STEAD_CODEC_ACTIVE_KEY``): first ship
the new key to every worker, client and codec server while the old one stays active,
then make the new one active. New payloads use the active key; old payloads name their
key id in metadata and still decrypt as long as that key stays in the file. A key
leaves the keyring only once no history it encrypted is retained.

The file holds raw key material, so it is refused unless only its owner can read it
(like an ssh private key), and a ``Keyring`` never shows key bytes in ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from stead.codec.errors import KeyringError, UnknownKeyId

KEY_BYTES = 32  # AES-256
KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Keyring:
    """Keys by id and the id new payloads are encrypted with."""

    def __init__(
        self, keys: Mapping[str, bytes], active: str, *, source: str = "the keyring"
    ) -> None:
        if not keys:
            raise KeyringError(f"{source} holds no keys; create one with `stead codec keygen`")
        for key_id, key in keys.items():
            if not KEY_ID.match(key_id):
                raise KeyringError(
                    f"{source}: key id {key_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
                )
            if len(key) != KEY_BYTES:
                raise KeyringError(
                    f"{source}: key {key_id!r} is {len(key)} bytes; AES-256-GCM needs "
                    f"{KEY_BYTES} (generate one with `stead codec keygen`)"
                )
        if active not in keys:
            raise KeyringError(
                f"{source}: the active key {active!r} is not among its keys "
                f"({', '.join(sorted(keys))})"
            )
        self._keys = dict(keys)
        self.active = active
        self.source = source

    def __repr__(self) -> str:
        return f"Keyring(active={self.active!r}, ids={self.ids!r}, source={self.source!r})"

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def key(self, key_id: str) -> bytes:
        """The key named ``key_id``; ``UnknownKeyId`` says which keys there are instead."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyId(key_id, self.ids, self.source) from None

    def with_active(self, key_id: str) -> Keyring:
        return Keyring(self._keys, key_id, source=self.source)

    def to_json(self) -> str:
        keys = {kid: base64.b64encode(key).decode() for kid, key in sorted(self._keys.items())}
        return json.dumps({"active": self.active, "keys": keys}, indent=2) + "\n"


def load_keyring(path: Path, active: str | None = None) -> Keyring:
    """Read and check the keyring file; ``active`` overrides the file's active id."""
    source = f"keyring {path}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyringError(
            f"{source} does not exist; create it with `stead codec keygen --keyring {path}` "
            "or unset STEAD_CODEC_KEYRING"
        ) from None
    if info.st_mode & 0o077:
        raise KeyringError(
            f"{source} has mode {stat.S_IMODE(info.st_mode):04o}: other users could read the "
            f"payload keys; run `chmod 600 {path}`"
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise KeyringError(f"{source} is owned by uid {info.st_uid}, not by this process's user")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"{source} is not readable JSON ({exc})") from None
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("keys"), dict)
        or not isinstance(raw.get("active"), str)
    ):
        raise KeyringError(
            f'{source} must be a JSON object {{"active": "<id>", "keys": {{"<id>": "<base64>"}}}}'
        )
    keys: dict[str, bytes] = {}
    for key_id, encoded in raw["keys"].items():
        try:
            keys[key_id] = base64.b64decode(encoded, validate=True)
        except (TypeError, binascii.Error):
            raise KeyringError(f"{source}: key {key_id!r} is not valid base64") from None
    return Keyring(keys, active or raw["active"], source=source)


def new_key_id() -> str:
    """A sortable, unique id: ``k<UTC date>-<random>``."""
    return f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"


def add_key(path: Path, key_id: str | None = None, *, activate: bool = True) -> Keyring:
    """Add a fresh random key to the keyring at ``path`` (created ``0600`` if missing)."""
    key_id = key_id or new_key_id()
    key = secrets.token_bytes(KEY_BYTES)
    if path.exists():
        current = load_keyring(path)
        if key_id in current.ids:
            raise KeyringError(f"keyring {path} already holds a key {key_id!r}")
        keys = {kid: current.key(kid) for kid in current.ids}
        active = key_id if activate else current.active
    else:
        keys, active = {}, key_id
    keys[key_id] = key
    keyring = Keyring(keys, active, source=f"keyring {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover tmp file keeps its old mode otherwise
    with os.fdopen(fd, "w") as out:
        out.write(keyring.to_json())
    tmp.replace(path)
    return keyring
