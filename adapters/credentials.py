"""How an operation turns a ``secret://`` reference into a value, on the worker.

The store is the worker's (``AdapterResources.secrets``); the operation passes its
step's tenant, its own adapter name and where the value is about to be sent, so the
store refuses another tenant's or another adapter's secret, and a secret whose
declared destinations do not include that place, before any byte leaves. A failure is
never worth a retry (the secret stays missing or unbound until an operator acts), and
its message names the reference and the host, never a value.
"""

from __future__ import annotations

from pydantic import SecretStr

from stead.egress import Destination
from stead.operations.base import AdapterError, OperationContext
from stead.secrets import SecretError, SecretNotBound, SecretStore


async def resolve_secret(
    ctx: OperationContext, ref: str, *, adapter: str, destination: Destination | None
) -> SecretStr:
    """The value of ``ref`` for this step, checked against ``destination``.

    ``destination`` is required on purpose: an operation states where the value goes
    (checked against the reference's declared destinations) or passes ``None`` for a
    value that names its own target (a database DSN) or is used only on the worker.
    """
    store = getattr(ctx.resources, "secrets", None)
    if not isinstance(store, SecretStore):
        raise AdapterError(
            f"the {adapter} adapter needs {ref} but this worker has no secret store: the "
            "worker must pass AdapterResources(secrets=...)",
            retryable=False,
            details={"reason": "no_secret_store", "ref": ref},
        )
    try:
        return await store.get(ref, ctx.tenant, adapter=adapter, destination=destination)
    except SecretError as exc:
        reason = "secret_not_bound" if isinstance(exc, SecretNotBound) else exc.code.value
        details: dict[str, object] = {"reason": reason, "ref": ref}
        if destination is not None:
            details["destination"] = destination.label
        raise AdapterError(exc.message, retryable=False, details=details) from None
