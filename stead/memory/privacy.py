"""Who may read what: clearance levels, and OPA's word on personal data.

Two locks, in order. Clearance is a ceiling the caller states (a planner's is at most
`pii`, never `secret`); anything above it is withheld without asking anyone. `pii`
under the ceiling is shown only when OPA's `data.stead.memory.read` allows it for
this principal, agent and namespace; OPA down or undefined means withheld (fail
closed), exactly as a step without a decision does not run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from stead.memory.contracts import SENSITIVITY_ORDER
from stead.policy.opa import OpaClient, PolicyUnavailable, PolicyUndefined

READ_DECISION = "stead/memory/read"
log = logging.getLogger("stead.memory")


def cleared(clearance: str) -> list[str]:
    """The sensitivities a caller with `clearance` may receive, before any policy."""
    ceiling = SENSITIVITY_ORDER[clearance]
    return [level for level, rank in SENSITIVITY_ORDER.items() if rank <= ceiling]


class ReadGate:
    """Decides, per recall or read, which hits the caller may see; caches OPA's answers
    for the duration of one call (namespaces repeat among hits)."""

    def __init__(
        self,
        opa: OpaClient | None,
        *,
        tenant: str,
        principal: str,
        agent: str | None,
        clearance: str,
    ) -> None:
        self._opa = opa
        self._tenant = tenant
        self._principal = principal
        self._agent = agent
        self._levels = set(cleared(clearance))
        self._pii: dict[str, bool] = {}

    async def prefetch(self, namespaces: Iterable[str]) -> None:
        for namespace in sorted(set(namespaces)):
            await self._pii_allowed(namespace)

    async def may_read(self, sensitivity: str, namespace: str) -> bool:
        if sensitivity not in self._levels:
            return False
        if sensitivity != "pii":
            return True
        return await self._pii_allowed(namespace)

    async def _pii_allowed(self, namespace: str) -> bool:
        if "pii" not in self._levels:
            return False
        if namespace not in self._pii:
            self._pii[namespace] = await self._ask(namespace)
        return self._pii[namespace]

    async def _ask(self, namespace: str) -> bool:
        if self._opa is None:
            return False
        request = {
            "tenant": self._tenant,
            "principal": self._principal,
            "agent": self._agent,
            "namespace": namespace,
            "sensitivity": "pii",
        }
        try:
            answer = await self._opa.evaluate(READ_DECISION, request)
        except (PolicyUnavailable, PolicyUndefined) as exc:
            log.warning("pii in %s withheld from %s: %s", namespace, self._principal, exc.message)
            return False
        return answer is True
