"""How stored rows are shown to a reader: content withheld above their clearance."""

from __future__ import annotations

from typing import Any

from stead.memory import store
from stead.memory.contracts import MemoryVersion, RecallItem
from stead.memory.privacy import ReadGate


async def shown(row: Any, gate: ReadGate) -> MemoryVersion:
    """A version as `gate`'s reader may see it (content None when withheld)."""
    visible = await gate.may_read(row["sensitivity"], row["namespace"])
    return store.version_from_row(row, withheld=not visible)


def recall_item(row: Any, score: float) -> RecallItem:
    version = store.version_from_row(row)
    assert version.content is not None, "recall only returns live versions"
    return RecallItem(
        namespace=version.namespace,
        key=version.key,
        version=version.version,
        content=version.content,
        sensitivity=version.sensitivity,
        score=score,
        recorded_at=version.recorded_at,
        valid_from=version.valid_from,
        valid_to=version.valid_to,
        expires_at=version.expires_at,
        provenance=version.provenance,
    )
