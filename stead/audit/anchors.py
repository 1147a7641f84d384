"""Anchors: each tenant's newest keyed chain head, kept outside Postgres.

The keyed chain shows any row that was altered, forged or removed from the middle,
but not a cut of the newest rows: whoever can delete rows (the owner, a superuser,
someone with the disk) can delete the tail, and what is left still links. So after
each committed append the appender records ``(tenant, seq, mac)`` in a small file,
``<dir>/<tenant>.anchor``, with a MAC of its own under the audit key; ``stead audit
verify`` then requires the anchored row to exist with that MAC.

Cost: one small file replace per committing transaction that appended (no fsync:
a crash can lose the newest anchor, which makes the anchor lag, never lie). The
anchor is written after COMMIT, so it never names a row that was rolled back.
It may lag the database (the process died between commit and write, or two
workers raced and the older head won): rows after the anchor are still checked by
their MACs, but their deletion is not seen. Someone who controls both the database
and this directory can restore an older anchor file they kept, then cut the rows
after it; keep the directory where the database's administrators cannot write.
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

from pydantic import BaseModel, ConfigDict, ValidationError

from stead.errors import ConfigError

_SUFFIX: Final = ".anchor"
_TENANT: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
_DOMAIN: Final = b"stead-audit-anchor/v1\n"


class Anchor(BaseModel):
    """The head of one tenant's chain as the appender last saw it commit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    def read(self, tenant: str) -> Anchor | None:
        path = self.path(tenant)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AnchorUnreadable(f"cannot read audit anchor {path}: {exc}") from None
        try:
            anchor = Anchor.model_validate_json(text)
        except ValidationError:
            raise AnchorUnreadable(f"audit anchor {path} is not an anchor file") from None
        if anchor.tenant != tenant:
            raise AnchorUnreadable(f"audit anchor {path} names tenant {anchor.tenant!r}")
        return anchor

    def advance(self, key: bytes, tenant: str, seq: int, mac: str) -> None:
        """Record ``seq`` as the tenant's head unless an anchor at least as new exists.

        Synchronous on purpose: it runs on the event loop between two awaits, so two
        appends of this process cannot interleave their read-compare-replace.
        """
        if self._written.get(tenant, 0) >= seq:
            return
        path = self.path(tenant)
        with contextlib.suppress(AnchorUnreadable):
            current = self.read(tenant)
            if current is not None and current.seq >= seq:
                self._written[tenant] = current.seq
                return
        if not self._ready:
            self.directory.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                self.directory.chmod(0o700)
            self._ready = True
        anchor = Anchor(tenant=tenant, seq=seq, mac=mac, sig=anchor_sig(key, tenant, seq, mac))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(anchor.model_dump_json())
        os.replace(tmp, path)
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
