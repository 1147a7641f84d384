"""Anchors: each tenant's newest keyed chain head, kept outside Postgres.

The keyed chain shows any row that was altered, forged or removed from the middle,
but not a cut of the newest rows: whoever can delete rows (the owner, a superuser,
someone with the disk) can delete the tail, and what is left still links. So after
each committed append the appender records ``(tenant, seq, mac)`` in a small file,
``<dir>/<tenant>.anchor``, with a MAC of its own under the audit key; ``stead audit
verify`` then requires the anchored row to exist with that MAC.

Cost: one ``pwrite`` of 256 bytes per committing transaction that appended (a few
microseconds; no fsync, and no rename, which ext4 turns into a flush). The file has
two slots and ``seq`` picks one, so a write torn by a crash spoils at most the newer
slot and the reader falls back to the other: the anchor may lag, it never lies. It
is written after COMMIT, so it never names a row that was rolled back. It lags the
database when the process dies between commit and write, or when two workers race
and the older head lands last; rows after the anchor are still checked by their
MACs, but their deletion is not seen. Someone who controls both the database and
this directory can restore an older anchor file they kept (or spoil the newer slot),
then cut the rows after it; keep the directory where the database's administrators
cannot write.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from stead.contracts.base import Closed
from stead.errors import ConfigError

_SUFFIX: Final = ".anchor"
_SLOT: Final = 256  # bytes per slot; an anchor's JSON is ~230
_TENANT: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
_DOMAIN: Final = b"stead-audit-anchor/v1\n"


class Anchor(Closed):
    """The head of one tenant's chain as the appender last saw it commit."""

    tenant: str
    seq: int
    mac: str
    sig: str


class AnchorUnreadable(ConfigError):
    """An anchor file exists but is not an anchor: treated as tampering by verify."""


def anchor_sig(key: bytes, tenant: str, seq: int, mac: str) -> str:
    """Binds the three fields under the audit key, in a domain of its own, so a row's
    (seq, hash) read from the database cannot be passed off as an anchor."""
    message = _DOMAIN + json.dumps([tenant, seq, mac], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sig_ok(key: bytes, anchor: Anchor) -> bool:
    expected = anchor_sig(key, anchor.tenant, anchor.seq, anchor.mac)
    return hmac.compare_digest(expected, anchor.sig)


@dataclass
class AnchorStore:
    """One file per tenant in ``directory``; this process never moves an anchor back."""

    directory: Path
    _written: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _ready: bool = field(default=False, init=False, repr=False)

    def path(self, tenant: str) -> Path:
        if not _TENANT.match(tenant):
            raise ValueError(f"not a tenant id: {tenant!r}")
        return self.directory / f"{tenant}{_SUFFIX}"

    def read(self, tenant: str, key: bytes) -> Anchor | None:
        """The newest slot signed with ``key``; None when the tenant has no anchor file.

        A file whose slots hold no anchor signed with the key raises: that is an anchor
        someone wrote or wiped without the key, not a missing one.
        """
        path = self.path(tenant)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorUnreadable(f"cannot read audit anchor {path}: {exc}") from None
        if not raw.strip(b"\x00 \n"):
            return None  # created but never written (a crash before the first write)
        found = [
            anchor
            for start in range(0, 2 * _SLOT, _SLOT)
            if (anchor := _slot(raw[start : start + _SLOT], tenant, key)) is not None
        ]
        if not found:
            raise AnchorUnreadable(f"audit anchor {path} holds no anchor signed with the audit key")
        return max(found, key=lambda a: a.seq)

    def advance(self, key: bytes, tenant: str, seq: int, mac: str) -> None:
        """Record ``seq`` as the tenant's head, in the slot ``seq`` picks.

        Synchronous on purpose: it runs on the event loop between two awaits, so
        appends of this process never interleave here; this process never writes an
        older head after a newer one.
        """
        if self._written.get(tenant, 0) >= seq:
            return
        path = self.path(tenant)
        if not self._ready:
            self.directory.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                self.directory.chmod(0o700)
            self._ready = True
        anchor = Anchor(tenant=tenant, seq=seq, mac=mac, sig=anchor_sig(key, tenant, seq, mac))
        record = anchor.model_dump_json().encode().ljust(_SLOT - 1) + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, record, (seq % 2) * _SLOT)
        finally:
            os.close(fd)
        self._written[tenant] = seq

    def tenants(self) -> list[str]:
        """Every tenant with an anchor: a chain deleted whole still has one."""
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name.removesuffix(_SUFFIX)
            for p in self.directory.glob(f"*{_SUFFIX}")
            if _TENANT.match(p.name.removesuffix(_SUFFIX))
        )


def _slot(chunk: bytes, tenant: str, key: bytes) -> Anchor | None:
    """One slot's anchor if it is whole and signed for ``tenant``; else None."""
    text = chunk.strip(b"\x00 \n")
    if not text:
        return None
    try:
        anchor = Anchor.model_validate_json(text)
    except ValidationError:
        return None
    if anchor.tenant != tenant or not sig_ok(key, anchor):
        return None
    return anchor
