"""Sealed inputs for memory's own workflows: only a holder of the integrity secret may
ask the worker's index or repairs to act for a tenant.

``stead.memory.index_op`` (and a tenant's reindex or purge) runs on the worker with
its index and its database pool; anyone who can start a workflow on the task queue
could otherwise name any tenant and get its hits, or delete and upsert its points.
So the caller (the CLI routing index calls, ``stead memory reindex``) seals the input
with ``integrity.secret``: an HMAC-SHA256 over a purpose label, the workflow id it
will start, an expiry and the input's canonical JSON without the seal. The activity
recomputes it and compares the workflow id with the one the *server* gives it.

What that leaves: an input lifted from history works only for a workflow with the
same id, before its expiry (``INDEX_OP_TTL``, ``MAINTENANCE_TTL``), and it repeats
exactly the call that was made (whose result the history already shows). The worker
that holds the embedded shard also remembers each seal's run until it expires
(``SealMemo``), so on that worker even the same id cannot use a seal twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, JsonValue

from stead.contracts.run import canonical_json
from stead.memory.contracts import IndexOp, IntegritySeal, MaintenanceInput

INDEX_OP_TTL: Final = timedelta(minutes=2)
MAINTENANCE_TTL: Final = timedelta(minutes=10)
SEAL_REFUSED: Final = "SealRefused"
_LABEL: Final = b"stead.memory.sealed-input/v1"
_TERMS_LABEL: Final = b"stead.memory.index-op-terms/v1"
_NONCE: Final = 12
_MEMO_ENTRIES: Final = 65_536

Sealable = TypeVar("Sealable", IndexOp, MaintenanceInput)


def _mac(secret: bytes, purpose: str, body: BaseModel, workflow_id: str, expires: datetime) -> str:
    message = b"\n".join(
        (
            _LABEL,
            purpose.encode(),
            workflow_id.encode(),
            expires.isoformat().encode(),
            canonical_json(body.model_dump(mode="json", exclude={"seal"})).encode(),
        )
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def seal(
    secret: bytes,
    purpose: str,
    body: Sealable,
    workflow_id: str,
    *,
    now: datetime,
    ttl: timedelta,
) -> Sealable:
    """``body`` with a seal for ``purpose`` (the workflow name) and ``workflow_id``."""
    # Microseconds dropped: the expiry must survive a JSON round trip byte for byte.
    expires = (now + ttl).replace(microsecond=0)
    mac = _mac(secret, purpose, body, workflow_id, expires)
    return body.model_copy(
        update={"seal": IntegritySeal(workflow_id=workflow_id, expires_at=expires, mac=mac)}
    )


def seal_problem(
    secret: bytes | None,
    purpose: str,
    body: IndexOp | MaintenanceInput,
    workflow_id: str,
    *,
    now: datetime,
) -> str | None:
    """Why ``body`` may not act for the workflow the server says runs it, or None."""
    what = f"{purpose} input for workflow {workflow_id!r}"
    if secret is None:
        return (
            f"this worker holds no integrity secret, so it cannot check the {what}; "
            "run `stead keys init` and give the workers its integrity.secret"
        )
    sealed = body.seal
    if sealed is None:
        return (
            f"the {what} is not sealed; only a holder of the workers' integrity secret "
            "(the stead CLI beside them) may start it"
        )
    if sealed.workflow_id != workflow_id:
        return (
            f"the {what} was sealed for workflow {sealed.workflow_id!r}; a seal is good "
            "only for the workflow it was made for"
        )
    expected = _mac(secret, purpose, body, workflow_id, sealed.expires_at)
    if not hmac.compare_digest(expected, sealed.mac):
        return f"the {what} does not match its seal: it was changed or sealed with another key"
    if now > sealed.expires_at:
        return f"the seal of the {what} expired at {sealed.expires_at.isoformat()}"
    return None


class SealMemo:
    """Which run first used each seal, until the seal expires (bounded, in process).

    A seal is bound to a workflow id, and Temporal lets a closed workflow's id be
    started again: this memo makes the second run with a lifted seal fail on the
    worker that saw the first. Retries of one run (same run id) pass.
    """

    def __init__(self, max_entries: int = _MEMO_ENTRIES) -> None:
        self._max = max_entries
        self._runs: OrderedDict[str, tuple[str, datetime]] = OrderedDict()

    def claim(self, sealed: IntegritySeal, run_id: str, *, now: datetime) -> str | None:
        """None if ``run_id`` may use the seal; else why not."""
        while self._runs:
            oldest = next(iter(self._runs.values()))
            if oldest[1] >= now and len(self._runs) < self._max:
                break
            self._runs.popitem(last=False)
        first = self._runs.get(sealed.mac)
        if first is None:
            self._runs[sealed.mac] = (run_id, sealed.expires_at)
            return None
        if first[0] == run_id:
            return None
        return (
            f"the seal for workflow {sealed.workflow_id!r} was already used by run {first[0]!r}; "
            "a sealed input is good for one run"
        )


class SealedTermsRefused(ValueError):
    """The sealed terms of an index call do not open with this worker's secret."""


def _terms_cipher(secret: bytes) -> AESGCM:
    return AESGCM(hmac.new(secret, _TERMS_LABEL, hashlib.sha256).digest())


def seal_terms(secret: bytes, workflow_id: str, terms: Mapping[str, JsonValue]) -> str:
    """``terms`` encrypted for the worker, bound to ``workflow_id``.

    Term vectors are hashed token ids: anyone with a dictionary of hashed words reads a
    memory's bag of words (or a question's) back from them. The routed index call's
    input is workflow history, so they travel encrypted under a key derived from the
    integrity secret both ends already hold; the embedding beside them does not.
    """
    nonce = os.urandom(_NONCE)
    plain = canonical_json(dict(terms)).encode()
    return base64.b64encode(
        nonce + _terms_cipher(secret).encrypt(nonce, plain, workflow_id.encode())
    ).decode()


def open_terms(secret: bytes, workflow_id: str, sealed: str) -> dict[str, JsonValue]:
    """What ``seal_terms`` sealed for ``workflow_id``; SealedTermsRefused otherwise."""
    try:
        raw = base64.b64decode(sealed, validate=True)
        plain = _terms_cipher(secret).decrypt(raw[:_NONCE], raw[_NONCE:], workflow_id.encode())
    except (ValueError, InvalidTag):
        raise SealedTermsRefused(
            f"the index call's terms do not open for workflow {workflow_id!r}: "
            "sealed with another key or for another workflow"
        ) from None
    opened = json.loads(plain)
    if not isinstance(opened, dict):
        raise SealedTermsRefused("the index call's sealed terms are not an object")
    return opened
