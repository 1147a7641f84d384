"""Keys on disk: Ed25519 pairs (capability authority, principal-token issuer) and
symmetric secrets (the worker's integrity key, the audit chain key).

A key directory (``$STEAD_HOME/keys`` unless ``STEAD_KEYS_DIR`` says otherwise) holds
``<name>.key`` (private, mode 0600) and ``<name>.pub`` (public). Each private key is
meant to live in one place only: ``capability.key`` on the workers that mint
capability tokens, ``identity.key`` where an administrator issues principal tokens.
Edge workers and verifiers get the ``.pub`` files alone. Both files hold biscuit's own
text form (``ed25519-private/<hex>``, ``ed25519/<hex>``), so they can be pasted into
any biscuit tool.

Symmetric secrets are ``<name>.secret`` (32 random bytes as hex, mode 0600):
``integrity.secret`` lets workers seal what they hand to Temporal and must get back
unchanged (a run's continuation state, routed index calls); ``audit.secret`` keys the
audit log's hash chain, so rows written by anyone without it do not link. Neither
ever leaves the machines that run workers.

This module sits below both the capability tokens and the audit chain (which reads
``audit.secret``), so it imports neither.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from biscuit_auth import KeyPair, PrivateKey, PublicKey

from stead.errors import ConfigError
from stead.settings import Settings

KeyName = Literal["capability", "identity"]
CAPABILITY: Final[KeyName] = "capability"
IDENTITY: Final[KeyName] = "identity"
ALL_KEYS: Final[tuple[KeyName, ...]] = (CAPABILITY, IDENTITY)
SecretName = Literal["integrity", "audit"]
INTEGRITY: Final[SecretName] = "integrity"
AUDIT: Final[SecretName] = "audit"
ALL_SECRETS: Final[tuple[SecretName, ...]] = (INTEGRITY, AUDIT)
SECRET_BYTES: Final = 32


@dataclass(frozen=True)
class KeyStore:
    """The key files in one directory; reads never create anything."""

    directory: Path

    def private_path(self, name: KeyName) -> Path:
        return self.directory / f"{name}.key"

    def public_path(self, name: KeyName) -> Path:
        return self.directory / f"{name}.pub"

    def private(self, name: KeyName) -> PrivateKey | None:
        """The private key, or None when this machine is not meant to hold it."""
        path = self.private_path(name)
        if not path.exists():
            return None
        try:
            return PrivateKey(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a biscuit Ed25519 private key ({exc})") from None

    def public(self, name: KeyName) -> PublicKey | None:
        """The public key from ``<name>.pub``, else derived from the private key, else None."""
        path = self.public_path(name)
        if path.exists():
            try:
                return PublicKey(path.read_text().strip())
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{path} is not a biscuit Ed25519 public key ({exc})") from None
        private = self.private(name)
        return None if private is None else KeyPair.from_private_key(private).public_key

    def ensure(self, name: KeyName) -> bool:
        """Create the pair if no private key exists yet; True when this call created it.

        Safe against concurrent callers (two workers starting on one dev home): the
        private key is written to a temporary file and linked into place, which fails
        if another process got there first; the loser then uses the winner's key.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.directory.chmod(0o700)
        target = self.private_path(name)
        created = False
        if not target.exists():
            pair = KeyPair()
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(f"{pair.private_key}\n")
                os.chmod(tmp, 0o600)
                try:
                    os.link(tmp, target)
                    created = True
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        private = self.private(name)
        assert private is not None
        public = f"{KeyPair.from_private_key(private).public_key}\n"
        pub_path = self.public_path(name)
        if not pub_path.exists() or pub_path.read_text() != public:
            _write_atomically(pub_path, public)
        return created

    def secret_path(self, name: SecretName) -> Path:
        return self.directory / f"{name}.secret"

    def secret(self, name: SecretName) -> bytes | None:
        """The symmetric secret, or None when this machine is not meant to hold it."""
        path = self.secret_path(name)
        if not path.exists():
            return None
        try:
            value = bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a hex-encoded secret ({exc})") from None
        if len(value) < SECRET_BYTES:
            raise ConfigError(f"{path} holds {len(value)} bytes; a secret needs {SECRET_BYTES}")
        return value

    def ensure_secret(self, name: SecretName) -> bool:
        """Create the secret if missing (race-safe like ``ensure``); True when created now."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.directory.chmod(0o700)
        target = self.secret_path(name)
        if target.exists():
            return False
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{os.urandom(SECRET_BYTES).hex()}\n")
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, target)
            except FileExistsError:
                return False
        finally:
            os.unlink(tmp)
        return True

    def ensure_all(self) -> list[str]:
        """Create every missing pair and secret; returns the names created now."""
        pairs: list[str] = [name for name in ALL_KEYS if self.ensure(name)]
        return pairs + [name for name in ALL_SECRETS if self.ensure_secret(name)]


def key_store(settings: Settings) -> KeyStore:
    """The settings' key directory; creates the dev keys when running on the embedded stack.

    Only the default directory under a dev home is filled in: an explicit
    ``STEAD_KEYS_DIR`` is an operator's choice (an edge worker's holds public keys
    only) and is never added to.
    """
    store = KeyStore(settings.resolved_keys_dir)
    if settings.keys_dir is None and settings.stack_file.exists():
        store.ensure_all()
    return store


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
