"""Resolving a reference to its value on the worker, from a chain of pluggable backends.

Two protocols, on purpose:

* ``SecretStore`` is what adapters call: ``await store.get(ref, tenant)``. The one
  implementation, ``Secrets``, parses the reference and refuses it when it names
  another tenant (or another adapter) *before* any backend is asked. That check lives
  in one place so that no backend, including a third party's, can forget it.
* ``SecretBackend`` is where values live. It only maps a parsed reference to a value
  or to ``None`` ("not here, ask the next backend").

A Vault backend implements ``SecretBackend``: ``fetch`` reads KV v2 at
``<mount>/data/stead/<tenant>/<adapter>/<name>`` (field ``value``) with the worker's
own Vault identity (Kubernetes or AppRole auth, never a token in settings), returns
``None`` on 404, raises ``SecretUnreadable`` on 403 or a malformed answer, caches no
longer than the lease, and never logs the value; ``describe`` returns
``"vault <mount>/stead/<tenant>/<adapter>/<name>"`` for not-found messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from stead.secrets.errors import SecretNotFound, SecretRefused, SecretUnreadable
from stead.secrets.refs import SecretRef


@runtime_checkable
class SecretBackend(Protocol):
    """Where secret values live (environment, files, Vault …)."""

    async def fetch(self, ref: SecretRef) -> SecretStr | None:
        """The value, or None when this backend does not hold ``ref``."""
        ...

    def describe(self, ref: SecretRef) -> str:
        """Where this backend looked for ``ref``, for a not-found message (never the value)."""
        ...


@runtime_checkable
class SecretStore(Protocol):
    """What adapters resolve references with; see ``Secrets``."""

    async def get(
        self, ref: str | SecretRef, tenant: str, *, adapter: str | None = None
    ) -> SecretStr:
        """The value of ``ref`` for a step of ``tenant`` (and ``adapter``, when given)."""
        ...


class Secrets:
    """The worker's secret store: the tenant check, then each backend in order."""

    def __init__(self, backends: Sequence[SecretBackend]) -> None:
        self._backends = tuple(backends)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(type(b).__name__ for b in self._backends) or 'no backends'})"

    async def get(
        self, ref: str | SecretRef, tenant: str, *, adapter: str | None = None
    ) -> SecretStr:
        parsed = SecretRef.parse(ref)
        if parsed.tenant != tenant:
            raise SecretRefused(
                f"a step of tenant {tenant!r} may not use {parsed}: a secret reference "
                f"resolves only for its own tenant; use secret://{tenant}/{parsed.adapter}/"
                f"{parsed.name}"
            )
        if adapter is not None and parsed.adapter != adapter:
            raise SecretRefused(
                f"the {adapter} adapter may not use {parsed}: it belongs to the "
                f"{parsed.adapter} adapter; use secret://{tenant}/{adapter}/{parsed.name}"
            )
        for backend in self._backends:
            value = await backend.fetch(parsed)
            if value is None:
                continue
            if not value.get_secret_value():
                raise SecretUnreadable(f"{parsed} is empty in {backend.describe(parsed)}")
            return value
        places = "; ".join(b.describe(parsed) for b in self._backends) or "no backend configured"
        raise SecretNotFound(
            f"{parsed} is not set on this worker (looked in: {places}); set it there, or run "
            "the step on a worker that holds it"
        )
