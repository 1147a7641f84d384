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

A secret also says where it may be sent, beside its value: a backend may implement
``destinations(ref)`` (the env and files backends do; a Vault backend would read a
``destinations`` field next to ``value``), returning egress entries in the grammar of
``stead.egress.allowlist``. When an adapter resolves a value for an outward call it
passes the destination; the store refuses it unless the backend that holds the value
declares a matching entry. No declaration is a refusal (fail closed): an operator
binds each credential to the hosts it is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from stead.egress import Destination, allowed_by
from stead.secrets.errors import SecretNotBound, SecretNotFound, SecretRefused, SecretUnreadable
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
        self,
        ref: str | SecretRef,
        tenant: str,
        *,
        adapter: str | None = None,
        destination: Destination | None = None,
    ) -> SecretStr:
        """The value of ``ref`` for a step of ``tenant`` (and ``adapter``, when given),
        refused unless ``ref`` declares ``destination`` (when given)."""
        ...


class Secrets:
    """The worker's secret store: the tenant check, then each backend in order."""

    def __init__(self, backends: Sequence[SecretBackend]) -> None:
        self._backends = tuple(backends)

    def __repr__(self) -> str:
        return f"Secrets({', '.join(type(b).__name__ for b in self._backends) or 'no backends'})"

    async def get(
        self,
        ref: str | SecretRef,
        tenant: str,
        *,
        adapter: str | None = None,
        destination: Destination | None = None,
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
            if destination is not None:
                await _check_bound(backend, parsed, destination)
            return value
        places = "; ".join(b.describe(parsed) for b in self._backends) or "no backend configured"
        raise SecretNotFound(
            f"{parsed} is not set on this worker (looked in: {places}); set it there, or run "
            "the step on a worker that holds it"
        )


async def _check_bound(backend: SecretBackend, ref: SecretRef, destination: Destination) -> None:
    """Refuse ``destination`` unless the backend holding ``ref`` declares it."""
    lookup = getattr(backend, "destinations", None)
    declared = await lookup(ref) if lookup is not None else None
    where = backend.describe(ref)
    if not declared:
        hint = getattr(backend, "describe_destinations", None)
        place = hint(ref) if hint is not None else f"beside {where}"
        raise SecretNotBound(
            f"{ref} declares no destinations, so it is sent nowhere (not to "
            f"{destination.label}); declare where it may go in {place}, e.g. "
            f"{_example(destination)}"
        )
    if not allowed_by(declared, destination):
        raise SecretNotBound(
            f"{ref} may not be sent to {destination.label}: its declared destinations are "
            f"{', '.join(declared)}; add {_example(destination)} there if that host is meant "
            "to receive it"
        )


def _example(destination: Destination) -> str:
    return f"mail:{destination.host}" if destination.kind == "mail" else destination.host
