"""Opening the embedded shard only when no other process holds it.

The engine (qdrant-edge 0.9) locks a shard by `flock` on its `wal/` directory, but
`EdgeShard.load` opens the segments *before* it takes that lock, and a load that then
fails on the lock has already deleted the holder's `tracker_journal.dat` files: the
holder's next flush fails ("Tracker journal ... is shorter than expected"). A second
opener is therefore not harmless. This module asks the lock first, with the same
`flock` the engine uses, and never calls the engine while another process holds it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from stead.vector import EdgeVectorIndex, VectorHit, VectorIndexUnavailable, VectorPoint
from stead.vector.index import HybridHits, TermVector

WAL_DIR = "wal"


def shard_held_elsewhere(path: Path) -> bool:
    """True when another open file description holds the shard's WAL lock.

    Probing takes the lock for an instant and drops it, so it must not be called
    by the process that holds the shard (its own engine would look like "another")."""
    wal = path / WAL_DIR
    if not wal.is_dir():
        return False
    fd = os.open(wal, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class GuardedEdgeIndex:
    """`EdgeVectorIndex` that checks the WAL lock before the engine ever opens the shard.

    Until its first successful call the shard is not open here, so each call probes
    first and fails with `VectorIndexUnavailable` (recall degrades, writes stay
    pending) instead of damaging the holder. Once open, this process holds the lock."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._inner = EdgeVectorIndex(path)
        self._open = False

    def _guard(self) -> None:
        if not self._open and shard_held_elsewhere(self._path):
            raise VectorIndexUnavailable(
                f"the vector shard at {self._path} is held by another process (a running "
                "`stead worker`?); not opening it, since a second opener damages the holder"
            )

    async def ensure_collection(self, dim: int) -> None:
        self._guard()
        await self._inner.ensure_collection(dim)
        self._open = True

    async def upsert(self, points: Sequence[VectorPoint]) -> None:
        self._guard()
        await self._inner.upsert(points)
        self._open = True

    async def query(
        self,
        tenant: str,
        vector: Sequence[float],
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        self._guard()
        hits = await self._inner.query(tenant, vector, k, namespaces)
        self._open = True
        return hits

    async def hybrid(
        self,
        tenant: str,
        vector: Sequence[float] | None,
        terms: TermVector | None,
        k: int,
        namespaces: Sequence[str] | None = None,
    ) -> HybridHits:
        self._guard()
        hits = await self._inner.hybrid(tenant, vector, terms, k, namespaces)
        self._open = True
        return hits

    async def set_terms(self, tenant: str, terms: Mapping[str, TermVector]) -> list[str]:
        self._guard()
        done = await self._inner.set_terms(tenant, terms)
        self._open = True
        return done

    async def delete(self, tenant: str, point_ids: Sequence[str]) -> None:
        self._guard()
        await self._inner.delete(tenant, point_ids)
        self._open = True

    async def count(self, tenant: str) -> int:
        self._guard()
        total = await self._inner.count(tenant)
        self._open = True
        return total

    async def optimize(self) -> bool:
        self._guard()
        done = await self._inner.optimize()
        self._open = True
        return done

    async def close(self) -> None:
        self._open = False
        await self._inner.close()
