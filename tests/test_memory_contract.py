"""The memory contract, run on both vector backends (the embedded engine and
qdrant-client, whose `:memory:` local mode stands in for a server), and recall's
degraded path with the index made unavailable for real."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from stead.memory.service import MemoryService
from stead.memory.shard import GuardedEdgeIndex
from stead.settings import Settings
from stead.vector import (
    EdgeVectorIndex,
    QdrantServerIndex,
    VectorIndex,
    VectorIndexUnavailable,
    VectorPayload,
    VectorPoint,
)
from tests.test_memory_support import (
    LOCAL_MODE_WARNING,
    new_tenant,
    open_service,
    query,
    remember,
)

pytestmark = pytest.mark.filterwarnings(LOCAL_MODE_WARNING)

DEGRADED = "stead_memory_degraded_recalls_total"


def backend(kind: str, where: Path) -> VectorIndex:
    if kind == "edge":
        return EdgeVectorIndex(where / "qdrant")
    return QdrantServerIndex(location=":memory:")


@pytest_asyncio.fixture(scope="module", params=["edge", "server-local"])
async def service(
    request: pytest.FixtureRequest, stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[MemoryService]:
    index = backend(request.param, tmp_path_factory.mktemp(f"memory-{request.param}"))
    async with open_service(stack, index) as svc:
        yield svc


async def test_recall_returns_the_current_version_with_provenance(service: MemoryService) -> None:
    tenant = new_tenant()
    await service.remember(
        remember(tenant, "brand", "tone", "Write in a warm, plain voice.", step_id="s1")
    )
    await service.remember(remember(tenant, "billing", "terms", "Invoices are due in 30 days."))

    result = await service.recall(query(tenant, "How should our copy sound?", k=1))

    [item] = result.items
    assert (item.namespace, item.key, item.version, item.provenance.step_id) == (
        "brand",
        "tone",
        1,
        "s1",
    )
    assert not result.degraded and 0 < item.score <= 1.0001


async def test_namespaces_and_k_bound_the_answer(service: MemoryService) -> None:
    tenant = new_tenant()
    for n in range(4):
        await service.remember(
            remember(tenant, "faq", f"q{n}", f"Shipping question {n}: we ship daily.")
        )
    await service.remember(remember(tenant, "other", "q", "Shipping happens daily."))

    result = await service.recall(query(tenant, "shipping", namespaces=("faq",), k=3))

    assert len(result.items) == 3 and {i.namespace for i in result.items} == {"faq"}


async def test_update_supersedes_in_recall(service: MemoryService) -> None:
    tenant = new_tenant()
    await service.remember(remember(tenant, "office", "wifi", "The office wifi password is tulip."))
    await service.remember(
        remember(tenant, "office", "wifi", "The office wifi password is orchid.")
    )

    result = await service.recall(query(tenant, "office wifi password"))

    assert [(i.version, i.content) for i in result.items] == [
        (2, "The office wifi password is orchid.")
    ]
    assert await service.index.count(tenant) == 1


async def test_other_tenants_memories_are_never_recalled(service: MemoryService) -> None:
    mine, theirs = new_tenant(), new_tenant()
    await service.remember(remember(theirs, "deals", "acme", "Acme renewal closes at 40k."))
    await service.remember(remember(mine, "notes", "misc", "Parking is behind the building."))

    result = await service.recall(query(mine, "Acme renewal value", k=10))

    assert [i.key for i in result.items] == ["misc"]


async def test_erase_removes_the_vector(service: MemoryService) -> None:
    tenant = new_tenant()
    await service.remember(remember(tenant, "people", "bob", "Bob's phone is 555-0100."))

    await service.erase(tenant, "people", "bob", principal="user:dpo", reason="request")

    assert await service.index.count(tenant) == 0
    assert (await service.recall(query(tenant, "Bob phone number", clearance="secret"))).items == ()


async def test_full_reindex_rebuilds_a_lost_index(
    service: MemoryService, stack: Settings, tmp_path: Path
) -> None:
    tenant = new_tenant()
    await service.remember(
        remember(tenant, "kb", "vpn", "Connect to the VPN before opening the wiki.")
    )
    kind = "edge" if isinstance(service.index, EdgeVectorIndex) else "server-local"

    async with open_service(stack, backend(kind, tmp_path)) as rebuilt:
        assert await rebuilt.index.count(tenant) == 0
        result = await rebuilt.reindex(tenant, full=True)
        assert result.indexed == 1
        assert [i.key for i in (await rebuilt.recall(query(tenant, "vpn wiki"))).items] == ["vpn"]


# ---------------------------------------------------------------- degraded path

HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from stead.vector import EdgeVectorIndex

    async def main() -> None:
        index = EdgeVectorIndex(Path(sys.argv[1]))
        await index.ensure_collection(384)
        print("held", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # hold the shard until stdin closes
        await index.close()

    asyncio.run(main())
    """
)


@pytest.fixture
def held_shard(tmp_path: Path) -> Iterator[Path]:
    """A shard path that another process has open, the way a running worker holds it."""
    path = tmp_path / "held"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        try:
            assert holder.stdout.readline().strip() == "held"
            yield path
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)


def degraded_count() -> float:
    return REGISTRY.get_sample_value(DEGRADED, {"reason": "index_unavailable"}) or 0.0


async def test_shard_held_by_another_process_degrades_to_full_text(
    stack: Settings, held_shard: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = new_tenant()
    before = degraded_count()
    async with open_service(stack, GuardedEdgeIndex(held_shard)) as svc:
        written = await svc.remember(
            remember(tenant, "ops", "oncall", "The on-call phone rotates on Mondays.")
        )
        with caplog.at_level(logging.WARNING, logger="stead.memory"):
            result = await svc.recall(query(tenant, "who has the on-call phone on monday"))

    assert written.indexed is False
    assert result.degraded and [i.key for i in result.items] == ["oncall"]
    assert degraded_count() == before + 1
    assert any("degraded to full-text search" in r.getMessage() for r in caplog.records)


async def test_unreachable_qdrant_server_degrades_to_full_text(stack: Settings) -> None:
    tenant = new_tenant()
    async with open_service(stack, QdrantServerIndex(url="http://127.0.0.1:9")) as svc:
        await svc.remember(
            remember(tenant, "ops", "backup", "Backups run at 02:00 UTC every night.")
        )
        result = await svc.recall(query(tenant, "when do the nightly backups run"))

    assert result.degraded and [i.key for i in result.items] == ["backup"]


async def test_a_guarded_second_opener_leaves_the_holder_intact(tmp_path: Path) -> None:
    holder = EdgeVectorIndex(tmp_path / "qdrant")
    await holder.ensure_collection(4)
    point = VectorPoint(
        id=str(uuid.uuid4()),
        vector=[1.0, 0.0, 0.0, 0.0],
        payload=VectorPayload(
            tenant="t", namespace="n", memory_id="m", version=1, sensitivity="internal"
        ),
    )
    try:
        with pytest.raises(VectorIndexUnavailable, match="held by another process"):
            await GuardedEdgeIndex(tmp_path / "qdrant").count("t")
        # An unguarded second open would have deleted the holder's tracker journals,
        # failing this write's flush.
        await holder.upsert([point])
        assert await holder.count("t") == 1
    finally:
        await holder.close()
    reopened = GuardedEdgeIndex(tmp_path / "qdrant")
    try:
        assert await reopened.count("t") == 1
    finally:
        await reopened.close()
