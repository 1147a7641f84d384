"""The worker's seal over a run's continuation state: HMAC-SHA256 with ``integrity.secret``.

Continue-as-new hands the next run its state through Temporal, and a client can start
``stead.run`` with any state it likes. The run that continues asks a worker to seal
its next input; the continued run asks a worker to check the seal before it trusts a
byte of it. The MAC covers the workflow id, the id of the run that continued (the
server sets ``continued_run_id`` on the next run; a client start cannot), and the
canonical JSON of the request and the carry, so a seal lifted from one history fits
no other run, and any edit to the state (a plan, a status, the approval policy,
the tenant or principal) breaks it. Only machines holding ``integrity.secret`` (the
workers) can seal.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from stead.contracts.continuation import SealInput
from stead.contracts.run import canonical_json

SEAL_VERSION: Final = "v1"
NOT_SEALED: Final = "continuation state was not sealed by this Stead's workers"


def _message(sealed: SealInput) -> bytes:
    return canonical_json(
        {
            "stead_seal": SEAL_VERSION,
            "workflow_id": sealed.workflow_id,
            "run_id": sealed.run_id,
            "request": sealed.request.model_dump(mode="json"),
            "carry": sealed.carry.model_dump(mode="json"),
        }
    ).encode()


def seal(secret: bytes, sealed: SealInput) -> str:
    mac = hmac.new(secret, _message(sealed), hashlib.sha256).hexdigest()
    return f"{SEAL_VERSION}.{mac}"


def seal_problem(secret: bytes, sealed: SealInput, presented: str | None) -> str | None:
    """Why ``presented`` is not this worker's seal over ``sealed``, or None."""
    if not presented:
        return f"{NOT_SEALED}: it carries no seal, so it is refused"
    if not hmac.compare_digest(seal(secret, sealed), presented):
        return (
            f"{NOT_SEALED}: the seal does not match this workflow id, the run it continues "
            "or its content"
        )
    return None
