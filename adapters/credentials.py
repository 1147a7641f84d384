"""How an operation turns a ``secret://`` reference into a value, on the worker.

The store is the worker's (``AdapterResources.secrets``); the operation passes its
step's tenant and its own adapter name, so the store refuses another tenant's or
another adapter's secret before any backend is asked. A failure is never worth a
retry (the secret stays missing until an operator acts), and its message names the
reference, never a value.
"""

from __future__ import annotations

from pydantic import SecretStr

from adapters.base import AdapterError, OperationContext
from stead.secrets import SecretError, SecretStore


async def resolve_secret(ctx: OperationContext, ref: str, *, adapter: str) -> SecretStr:
    store = getattr(ctx.resources, "secrets", None)
    if not isinstance(store, SecretStore):
        raise AdapterError(
            f"the {adapter} adapter needs {ref} but this worker has no secret store: the "
            "worker must pass AdapterResources(secrets=...)",
            retryable=False,
            details={"reason": "no_secret_store", "ref": ref},
        )
    try:
        return await store.get(ref, ctx.tenant, adapter=adapter)
    except SecretError as exc:
        raise AdapterError(
            exc.message, retryable=False, details={"reason": exc.code.value, "ref": ref}
        ) from None
