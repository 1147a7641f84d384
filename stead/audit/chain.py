"""The audit chain's key and what each row's MAC covers.

Since migration 0007 every row's ``hash`` is ``HMAC-SHA256(audit.secret, prev_hash +
canonical_json(fields))`` (``chain_version`` 2). The key lives in the key directory
of the machines that run workers and ``stead audit verify``, never in Postgres, so a
row inserted by anyone without it (the app role, the owner, a superuser) does not
verify. Rows written before 0007 keep the unkeyed ``sha256`` (``chain_version`` 1)
and are accepted only as the start of a chain.

A process appends and verifies with the :class:`AuditChain` it installed at start
(workers, the CLI, the test session): the audit log is written from many modules,
and the key should be loaded in one place rather than handed through each of them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from stead.audit.anchors import AnchorStore
from stead.contracts.run import canonical_json
from stead.errors import ConfigError
from stead.keys import AUDIT, KeyStore, key_store
from stead.settings import Settings

GENESIS_HASH: Final = "0" * 64
CHAIN_UNKEYED: Final = 1
CHAIN_KEYED: Final = 2


class AuditKeyMissing(ConfigError):
    """No audit key here: nothing is appended, and no chain is called intact."""


@dataclass
class AuditChain:
    """Where this process finds the audit key (read once, on first use) and its anchors."""

    keys: KeyStore
    anchors: AnchorStore
    _key: bytes | None = field(default=None, init=False, repr=False)

    def key(self) -> bytes:
        if self._key is None:
            key = self.keys.secret(AUDIT)
            if key is None:
                raise AuditKeyMissing(
                    f"no audit key at {self.keys.secret_path(AUDIT)}: the keyed audit chain "
                    "cannot be written or verified; run `stead keys init` or copy the workers' "
                    "audit.secret there (STEAD_KEYS_DIR)"
                )
            self._key = key
        return self._key


def chain_for(settings: Settings) -> AuditChain:
    """The settings' key directory (created on the embedded stack) and anchor directory."""
    return AuditChain(
        keys=key_store(settings), anchors=AnchorStore(settings.resolved_audit_anchor_dir)
    )


_installed: AuditChain | None = None


def install(chain: AuditChain) -> None:
    """Make ``chain`` the one this process appends and verifies with."""
    global _installed
    _installed = chain


def installed() -> AuditChain:
    if _installed is None:
        raise AuditKeyMissing(
            "no audit chain is configured in this process; call "
            "stead.audit.install(stead.audit.chain_for(settings)) at start (workers and the "
            "CLI do)"
        )
    return _installed


def iso(ts: datetime) -> str:
    """One text form of a timestamp for hashing: UTC, always six fractional digits.

    Postgres keeps microseconds and asyncpg returns timestamptz in UTC, so the value
    read back formats to exactly the string that was hashed at append time.
    """
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def hashed_fields(
    *,
    tenant: str,
    seq: int,
    workflow_id: str | None,
    run_id: str | None,
    step_id: str | None,
    kind: str,
    actor: str,
    data: object,
    recorded_at: datetime,
) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "seq": seq,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "step_id": step_id,
        "kind": kind,
        "actor": actor,
        "data": data,
        "recorded_at": iso(recorded_at),
    }


def keyed_mac(key: bytes, prev_hash: str, fields: dict[str, Any]) -> str:
    """A ``chain_version`` 2 row's hash."""
    message = (prev_hash + canonical_json(fields)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def unkeyed_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """A ``chain_version`` 1 row's hash (before 0007): anyone can compute it."""
    return hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()


def decision_mac(
    key: bytes,
    *,
    decision_id: str,
    tenant: str,
    workflow_id: str,
    step_id: str | None,
    kind: str,
    outcome: str,
    blocked: str | None,
    input_hash: str,
    policy_revision: str,
) -> str:
    """The MAC a worker stores with each policy decision it records.

    The capability authority mints only for a recorded allow; with INSERT on
    ``decisions`` (which the app role needs) anyone could record one. The MAC, under
    the same key as the audit chain and in a domain of its own, makes a decision row
    the authority believes one that a worker wrote.
    """
    fields = [
        decision_id,
        tenant,
        workflow_id,
        step_id,
        kind,
        outcome,
        blocked,
        input_hash,
        policy_revision,
    ]
    message = b"stead-decision/v1\n" + canonical_json(fields).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


DECISION_MAC_COLUMNS: Final = (
    "decision_id, tenant, workflow_id, step_id, kind, outcome, blocked, input_hash,"
    " policy_revision, mac"
)


def decision_row_verified(row: Mapping[str, Any]) -> bool:
    """Whether a ``decisions`` row (selected with ``DECISION_MAC_COLUMNS``) carries the MAC
    ``record_decision`` computes under this process's audit key: the app role may
    INSERT decisions, so a row alone proves nothing (migration 0007)."""
    expected = decision_mac(
        installed().key(),
        decision_id=row["decision_id"],
        tenant=row["tenant"],
        workflow_id=row["workflow_id"],
        step_id=row["step_id"],
        kind=row["kind"],
        outcome=row["outcome"],
        blocked=row["blocked"],
        input_hash=row["input_hash"],
        policy_revision=row["policy_revision"],
    )
    mac = row["mac"]
    return isinstance(mac, str) and hmac.compare_digest(expected, mac)
