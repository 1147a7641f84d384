"""Secrets from a directory tree: ``<root>/<tenant>/<adapter>/<name>``, one value per file.

The layout matches a Kubernetes secret volume or a Docker/systemd credentials
directory, and files are read on every lookup, so a rotated file takes effect
without a worker restart. Like ``ssh`` with a private key, the backend refuses a
file that other users could read or replace: the file must be owned by the worker's
user (or root) with no group/other permission bits (``0600``/``0400``; Kubernetes:
``defaultMode: 0400``), and no directory on the way may be group/other-writable.
Symlinks are followed (Kubernetes mounts use them) but must stay inside the root.

Where a secret may be sent is declared in a sidecar file ``<name>.destinations`` beside
it (egress entries, one per line or comma-separated, ``#`` comments), held to the same
ownership and mode checks: whoever can rewrite it can redirect the credential. A name
never contains ``.``, so no reference maps to a sidecar.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from pydantic import SecretStr

from stead.secrets.env import split_entries
from stead.secrets.errors import SecretUnreadable
from stead.secrets.refs import SecretRef

DESTINATIONS_SUFFIX = ".destinations"

MAX_SECRET_BYTES = 64 * 1024


class FileSecretBackend:
    """Reads ``<root>/<tenant>/<adapter>/<name>``; one trailing newline is not part of the value."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def __repr__(self) -> str:
        return f"FileSecretBackend({str(self._root)!r})"

    def path(self, ref: SecretRef) -> Path:
        """Where ``ref`` lives; the reference grammar admits no ``/`` or ``..``."""
        return self._root / ref.tenant / ref.adapter / ref.name

    async def fetch(self, ref: SecretRef) -> SecretStr | None:
        return await asyncio.to_thread(self._read, ref)

    def describe(self, ref: SecretRef) -> str:
        return f"file {self.path(ref)}"

    def destinations_path(self, ref: SecretRef) -> Path:
        return self.path(ref).with_name(ref.name + DESTINATIONS_SUFFIX)

    async def destinations(self, ref: SecretRef) -> tuple[str, ...] | None:
        """The egress entries in ``<name>.destinations``, or None when there is no such file."""
        text = await asyncio.to_thread(self._read, ref, self.destinations_path(ref))
        return None if text is None else split_entries(text.get_secret_value())

    def describe_destinations(self, ref: SecretRef) -> str:
        return f"file {self.destinations_path(ref)} (mode 0600, one entry per line)"

    def _read(self, ref: SecretRef, at: Path | None = None) -> SecretStr | None:
        path = at or self.path(ref)
        if not path.exists():
            return None
        root = self._root.resolve()
        real = path.resolve()
        if not real.is_relative_to(root):
            raise SecretUnreadable(
                f"{ref}: {path} leads outside the secret root {root}; a secret file may be a "
                "symlink only within the root"
            )
        _check_dirs(ref, root, real.parent)
        info = real.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SecretUnreadable(f"{ref}: {path} is not a regular file")
        if info.st_uid not in (os.geteuid(), 0):
            raise SecretUnreadable(
                f"{ref}: {path} is owned by uid {info.st_uid}, not by this worker's user; "
                f"chown it to uid {os.geteuid()}"
            )
        if info.st_mode & 0o077:
            raise SecretUnreadable(
                f"{ref}: {path} has mode {stat.S_IMODE(info.st_mode):04o}, readable or "
                f"writable by other users; run `chmod 600 {path}`"
            )
        if info.st_size > MAX_SECRET_BYTES:
            raise SecretUnreadable(
                f"{ref}: {path} is {info.st_size} bytes, above the {MAX_SECRET_BYTES}-byte limit"
            )
        try:
            text = real.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise SecretUnreadable(f"{ref}: {path} is not UTF-8 text") from None
        return SecretStr(_strip_newline(text))


def _check_dirs(ref: SecretRef, root: Path, directory: Path) -> None:
    """Every directory from ``directory`` up to ``root`` must be writable by its owner only."""
    current = directory
    while True:
        mode = current.stat().st_mode
        if mode & 0o022:
            raise SecretUnreadable(
                f"{ref}: directory {current} has mode {stat.S_IMODE(mode):04o}, writable by "
                f"other users who could swap the secret; run `chmod go-w {current}`"
            )
        if current == root or current == current.parent:
            return
        current = current.parent


def _strip_newline(text: str) -> str:
    # `echo value > file` and editors add one; a value never legitimately ends with it.
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text
