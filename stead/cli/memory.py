"""``stead memory put | get | history | search | erase | reindex``: operate tenant memory;
``observe | series | retention``: its time series (Postgres only).

The CLI reads and writes Postgres itself (the truth) and reaches the vector index
one of three ways, chosen per call and reported as ``via``:

- ``local``: a Qdrant server (STEAD_QDRANT_URL), or the embedded shard when no
  worker holds it;
- ``worker``: the worker holds the embedded shard (one process may open it), so
  each index call runs on the worker as a short workflow; only vectors and
  content-free payloads cross Temporal, never memory content;
- ``postgres-only``: neither is reachable; search degrades to full-text search and
  writes stay pending until ``stead memory reindex`` (or the schedule) indexes them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.table import Table

from stead.cli._common import (
    console,
    err_console,
    fails_cleanly,
    print_json,
    settings,
    tenant_id,
)
from stead.db.pool import create_pool
from stead.errors import ConfigError
from stead.keys import INTEGRITY, KeyStore, key_store
from stead.memory.contracts import (
    REINDEX_WORKFLOW,
    CompactResult,
    MaintenanceInput,
    MemoryVersion,
    ObserveRequest,
    Provenance,
    RecallQuery,
    ReindexResult,
    RememberRequest,
    Retention,
    SeriesQuery,
    SeriesResult,
)
from stead.memory.factory import embedder_from_settings
from stead.memory.routed import UnavailableIndex, WorkerRoutedIndex
from stead.memory.sealing import MAINTENANCE_TTL, seal
from stead.memory.series import SeriesStore, parse_span
from stead.memory.service import MemoryService
from stead.memory.shard import GuardedEdgeIndex
from stead.policy.opa import OpaClient
from stead.settings import Settings
from stead.vector import VectorIndex, VectorIndexUnavailable

app = typer.Typer(
    help="Versioned, provenance-tracked tenant memory (Postgres truth, Qdrant index).",
    no_args_is_help=True,
)

Via = Literal["local", "worker", "postgres-only"]
T = TypeVar("T")

Tenant = Annotated[str, typer.Option("--tenant", help="The tenant whose memory this is.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reader = Annotated[str, typer.Option("--as", help="Who reads (OPA decides on pii).")]
Clearance = Annotated[
    str, typer.Option(help="Highest sensitivity to show: public, internal, pii, secret.")
]


@dataclass
class Session:
    service: MemoryService
    via: Via
    client: Any = None  # the Temporal client when via == "worker"


@asynccontextmanager
async def open_session(cfg: Settings) -> AsyncIterator[Session]:
    """Pool, OPA client, embedder and the best reachable index; closed on exit."""
    pool = await create_pool(cfg.postgres_dsn, min_size=1, max_size=4)
    opa = OpaClient(cfg.opa_url, token=cfg.opa_token)
    embedder = embedder_from_settings(cfg)
    index: VectorIndex | None = None
    try:
        via: Via = "local"
        client = None
        if cfg.qdrant_url:
            from stead.vector.server import QdrantServerIndex  # slow import, only when used

            key = cfg.qdrant_api_key
            index = QdrantServerIndex(
                url=cfg.qdrant_url, api_key=key.get_secret_value() if key else None
            )
        else:
            edge = GuardedEdgeIndex(cfg.resolved_qdrant_path)
            try:
                await edge.ensure_collection(embedder.dim)
                index = edge
            except VectorIndexUnavailable as held:
                # Held by the worker (or unopenable): the worker makes the index calls.
                await edge.close()
                index, via, client = await _worker_index(cfg, embedder.name, embedder.dim, held)
        yield Session(MemoryService(pool, index, embedder, opa), via, client)
    finally:
        await _close(pool, opa, index)


async def _worker_index(
    cfg: Settings, embedder: str, dim: int, held: VectorIndexUnavailable
) -> tuple[VectorIndex, Via, Any]:
    from stead.temporal import connect

    try:
        client = await connect(cfg)
    except Exception as exc:  # the SDK raises a bare RuntimeError for "cannot connect"
        reason = f"{held.message}; and Temporal at {cfg.temporal_address} is unreachable ({exc})"
        return UnavailableIndex(reason), "postgres-only", None
    integrity = key_store(cfg).secret(INTEGRITY)
    if integrity is None:
        reason = (
            f"{held.message}; and routing index calls to the worker needs the workers' "
            f"integrity secret at {KeyStore(cfg.resolved_keys_dir).secret_path(INTEGRITY)} "
            "(copy it from a worker, or set STEAD_KEYS_DIR)"
        )
        return UnavailableIndex(reason), "postgres-only", client
    routed = WorkerRoutedIndex(
        client, cfg.task_queue, embedder=embedder, dim=dim, integrity=integrity
    )
    try:
        await routed.ensure_collection(dim)
    except VectorIndexUnavailable as exc:
        return UnavailableIndex(f"{held.message}; and {exc.message}"), "postgres-only", client
    return routed, "worker", client


async def _close(pool: Any, opa: OpaClient, index: VectorIndex | None) -> None:
    try:
        if index is not None:
            await index.close()
    finally:
        await opa.aclose()
        await pool.close()


def _run(work: Callable[[Session], Awaitable[T]]) -> tuple[T, Via]:
    async def go() -> tuple[T, Via]:
        async with open_session(settings()) as session:
            if session.via == "postgres-only":
                err_console.print(
                    "[yellow]vector index unreachable[/]: answering from Postgres only",
                    highlight=False,
                )
            return await work(session), session.via

    return asyncio.run(go())


@app.command("put")
@fails_cleanly
def put(
    namespace: Annotated[str, typer.Argument(help="Namespace, e.g. brand or customers/acme.")],
    key: Annotated[str, typer.Argument(help="Key within the namespace.")],
    content: Annotated[str, typer.Argument(help="The content; `-` reads stdin.")],
    tenant: Tenant,
    principal: Annotated[str, typer.Option("--as", help="Who writes it, e.g. user:alice.")],
    reason: Annotated[str, typer.Option(help="Why this is remembered.")] = "",
    sensitivity: Annotated[str, typer.Option(help="public, internal, pii or secret.")] = "internal",
    ttl: Annotated[int | None, typer.Option(help="Expire after this many seconds.")] = None,
    source: Annotated[list[str] | None, typer.Option(help="A source reference (repeat).")] = None,
    json_out: Json = False,
) -> None:
    """Write a new version of namespace/key (the previous one stays in history)."""
    text = sys.stdin.read() if content == "-" else content
    expires = datetime.now(UTC) + timedelta(seconds=ttl) if ttl else None
    request = _validated(
        RememberRequest,
        tenant=tenant,
        namespace=namespace,
        key=key,
        content=text,
        sensitivity=sensitivity,
        expires_at=expires,
        provenance=Provenance(
            principal=principal, agent="stead.cli", reason=reason, source_refs=tuple(source or ())
        ),
    )
    result, via = _run(lambda s: s.service.remember(request))
    if json_out:
        print_json({"via": via, **result.model_dump(mode="json")})
        return
    v = result.version
    state = "indexed" if result.indexed else "pending index (reindex repairs it)"
    console.print(f"{tenant} {v.namespace}/{v.key} version {v.version}: {state} via {via}")


MaxAge = Annotated[
    int | None, typer.Option(help="Only versions whose event time is at most this old (s).")
]
AsOf = Annotated[
    str | None,
    typer.Option(help="Recorded time (ISO 8601, UTC if no zone): what memory held then."),
]
ValidAt = Annotated[
    str | None,
    typer.Option(help="Valid time (ISO 8601, UTC if no zone): what was true then."),
]


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an ISO 8601 time (e.g. 2026-03-01T12:00Z)") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("get")
@fails_cleanly
def get(
    namespace: Annotated[str, typer.Argument()],
    key: Annotated[str, typer.Argument()],
    tenant: Tenant,
    principal: Reader = "service:stead-cli",
    clearance: Clearance = "internal",
    as_of: AsOf = None,
    valid_at: ValidAt = None,
    max_age: MaxAge = None,
    json_out: Json = False,
) -> None:
    """The current version of namespace/key (or the one current --as-of, or true
    --valid-at), with its provenance."""
    found, via = _run(
        lambda s: s.service.get(
            tenant,
            namespace,
            key,
            principal=principal,
            clearance=clearance,
            as_of=_instant(as_of),
            valid_at=_instant(valid_at),
            max_age=timedelta(seconds=max_age) if max_age else None,
        )
    )
    if found is None:
        raise ConfigError(f"no memory {namespace}/{key} for tenant {tenant}")
    if json_out:
        print_json({"via": via, **found.model_dump(mode="json")})
        return
    _print_versions([found])


@app.command("history")
@fails_cleanly
def history(
    namespace: Annotated[str, typer.Argument()],
    key: Annotated[str, typer.Argument()],
    tenant: Tenant,
    principal: Reader = "service:stead-cli",
    clearance: Clearance = "internal",
    json_out: Json = False,
) -> None:
    """Every version of namespace/key, oldest first: who wrote it, when, why."""
    versions, via = _run(
        lambda s: s.service.history(
            tenant, namespace, key, principal=principal, clearance=clearance
        )
    )
    if not versions:
        raise ConfigError(f"no memory {namespace}/{key} for tenant {tenant}")
    if json_out:
        print_json({"via": via, "versions": [v.model_dump(mode="json") for v in versions]})
        return
    _print_versions(versions)


@app.command("search")
@fails_cleanly
def search(
    query: Annotated[str, typer.Argument(help="What to recall, in natural language.")],
    tenant: Tenant,
    namespace: Annotated[
        list[str] | None, typer.Option(help="Only this namespace (repeat).")
    ] = None,
    k: Annotated[int, typer.Option(help="How many results.")] = 5,
    max_age: MaxAge = None,
    as_of: AsOf = None,
    valid_at: ValidAt = None,
    principal: Reader = "service:stead-cli",
    clearance: Clearance = "internal",
    json_out: Json = False,
) -> None:
    """Recall: the best matching current versions (degraded=true: full-text fallback)."""
    q = _validated(
        RecallQuery,
        tenant=tenant,
        query=query,
        principal=principal,
        namespaces=tuple(namespace) if namespace else None,
        k=k,
        max_age=timedelta(seconds=max_age) if max_age else None,
        as_of=_instant(as_of),
        valid_at=_instant(valid_at),
        clearance=clearance,
    )
    result, via = _run(lambda s: s.service.recall(q))
    if json_out:
        print_json({"via": via, **result.model_dump(mode="json")})
        return
    table = Table(
        title=f"recall for {tenant}" + (" (degraded: exact terms only)" if result.degraded else "")
    )
    for col in ("score", "memory", "v", "sensitivity", "content"):
        table.add_column(col)
    for item in result.items:
        table.add_row(
            f"{item.score:.3f}",
            f"{item.namespace}/{item.key}",
            str(item.version),
            item.sensitivity,
            item.content[:80],
        )
    console.print(table)


@app.command("erase")
@fails_cleanly
def erase(
    namespace: Annotated[str, typer.Argument()],
    key: Annotated[str, typer.Argument()],
    tenant: Tenant,
    principal: Annotated[str, typer.Option("--as", help="Who erases, e.g. user:dpo.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    version: Annotated[int | None, typer.Option(help="Only this version.")] = None,
    json_out: Json = False,
) -> None:
    """Forget content and vectors; the hash, provenance and an audit record remain."""
    result, via = _run(
        lambda s: s.service.erase(
            tenant, namespace, key, principal=principal, reason=reason, version=version
        )
    )
    if json_out:
        print_json({"via": via, **result.model_dump(mode="json")})
        return
    gone = "removed" if result.vectors_removed else "pending removal (reindex)"
    console.print(f"erased versions {list(result.versions)} of {namespace}/{key}; vectors {gone}")


@app.command("reindex")
@fails_cleanly
def reindex(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: all).")] = None,
    full: Annotated[bool, typer.Option(help="Re-embed every current version.")] = False,
    json_out: Json = False,
) -> None:
    """Index versions whose index write failed and drop stale vectors."""

    async def work(session: Session) -> ReindexResult:
        if session.via == "worker":
            # The worker embeds and writes its own shard: one workflow, not a call per point.
            cfg = settings()
            now = datetime.now(UTC)
            workflow_id = f"stead-memory-reindex-cli-{now:%Y%m%dT%H%M%S%f}"
            integrity = key_store(cfg).secret(INTEGRITY)
            if integrity is None:
                raise ConfigError(
                    "the worker holds the index, and asking it to reindex needs the workers' "
                    f"integrity secret at {KeyStore(cfg.resolved_keys_dir).secret_path(INTEGRITY)}"
                )
            inp = seal(
                integrity,
                REINDEX_WORKFLOW,
                MaintenanceInput(tenant=tenant, full=full),
                workflow_id,
                now=now,
                ttl=MAINTENANCE_TTL,
            )
            result: ReindexResult = await session.client.execute_workflow(
                REINDEX_WORKFLOW,
                inp,
                id=workflow_id,
                task_queue=cfg.task_queue,
                result_type=ReindexResult,
            )
            return result
        return await session.service.reindex(tenant, full=full)

    result, via = _run(work)
    if json_out:
        print_json({"via": via, **result.model_dump(mode="json")})
        return
    console.print(
        f"reindexed {result.tenants} tenant(s) via {via}: {result.indexed} indexed, "
        f"{result.removed} stale vectors removed"
    )


def _print_versions(versions: list[MemoryVersion]) -> None:
    table = Table()
    for col in ("v", "recorded", "by", "reason", "sensitivity", "content"):
        table.add_column(col)
    for v in versions:
        if v.erased_at is not None:
            content = f"[erased {v.erased_at:%Y-%m-%d}] sha256 {v.content_hash[:12]}"
        elif v.withheld:
            content = f"[withheld: {v.sensitivity}]"
        else:
            content = (v.content or "")[:80]
        marker = "" if v.superseded_at else " (current)"
        table.add_row(
            f"{v.version}{marker}",
            f"{v.recorded_at:%Y-%m-%d %H:%M:%S}",
            v.provenance.principal,
            v.provenance.reason,
            v.sensitivity,
            content,
        )
    console.print(table)


def _validated(model: Any, **fields: Any) -> Any:
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid input: {problems}") from None


# ------------------------------------------------------------------ time series
# Observations live in Postgres only, so these commands open a pool and nothing else.

SeriesTenant = Annotated[
    str, typer.Option("--tenant", callback=tenant_id, help="The tenant whose series this is.")
]
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", help="A label k=v (repeat), e.g. sku=A-1.")
]


def _series_store(work: Callable[[SeriesStore], Awaitable[T]]) -> T:
    async def go() -> T:
        pool = await create_pool(settings().postgres_dsn, min_size=1, max_size=2)
        try:
            return await work(SeriesStore(pool))
        finally:
            await pool.close()

    return asyncio.run(go())


def _labels(pairs: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ConfigError(f"--label {pair!r} is not k=v (e.g. --label sku=A-1)")
        labels[name] = value
    return labels


def _span(text: str, option: str) -> timedelta:
    try:
        return parse_span(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


@app.command("observe")
@fails_cleanly
def observe(
    series: Annotated[str, typer.Argument(help="Series name, e.g. stock.mismatch.")],
    value: Annotated[float, typer.Argument(help="The observed value.")],
    tenant: SeriesTenant,
    label: LabelOpt = None,
    at: Annotated[
        str | None, typer.Option(help="When it was observed (ISO 8601, UTC if no zone); now.")
    ] = None,
    principal: Annotated[str, typer.Option("--as", help="Who observed it.")] = "service:stead-cli",
    reason: Annotated[str, typer.Option(help="Why it is recorded.")] = "",
    json_out: Json = False,
) -> None:
    """Append one point to a series (points are never changed; retention rolls them up)."""
    request = _validated(
        ObserveRequest,
        tenant=tenant,
        series=series,
        value=value,
        labels=_labels(label),
        observed_at=_instant(at),
        provenance=Provenance(principal=principal, agent="stead.cli", reason=reason),
    )
    result = _series_store(lambda s: s.observe(request))
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    console.print(
        f"{tenant} {result.series} {result.labels} {result.observed_at:%Y-%m-%d %H:%M:%S}"
        f" = {result.value:g}"
    )


@app.command("series")
@fails_cleanly
def series_window(
    series: Annotated[str, typer.Argument(help="Series name.")],
    tenant: SeriesTenant,
    label: LabelOpt = None,
    since: Annotated[str, typer.Option(help="How far back: 15m, 12h, 7d, 4w.")] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End of the window (ISO 8601, UTC if no zone); now.")
    ] = None,
    bucket: Annotated[str, typer.Option(help="Bucket width: 15m, 1h, 1d, 1w.")] = "1d",
    agg: Annotated[str, typer.Option("--agg", help="avg, min, max, sum, count or last.")] = "avg",
    by: Annotated[
        str | None, typer.Option(help="Group by this label, e.g. sku: a series per value.")
    ] = None,
    last: Annotated[
        int | None, typer.Option(help="Only the newest N points (of each group).")
    ] = None,
    json_out: Json = False,
) -> None:
    """One aggregate per bucket over a window of a series (empty buckets left out)."""
    end = _instant(until) or datetime.now(UTC)
    query = _validated(
        SeriesQuery,
        tenant=tenant,
        series=series,
        labels=_labels(label),
        since=end - _span(since, "--since"),
        until=end,
        bucket=_span(bucket, "--bucket"),
        aggregate=agg,
        by=by,
        last=last,
    )

    async def read(store: SeriesStore) -> SeriesResult:
        try:
            return await store.series(query)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    result = _series_store(read)
    if json_out:
        print_json(result.model_dump(mode="json"))
        return
    table = Table(title=f"{tenant} {series} ({agg} per {bucket})")
    for col in ((by,) if by else ()) + ("bucket", agg, "samples"):
        table.add_column(col)
    for p in result.points:
        group = (p.group or "-",) if by else ()
        table.add_row(*group, f"{p.bucket:%Y-%m-%d %H:%M}", f"{p.value:g}", str(p.samples))
    console.print(table)


@app.command("retention")
@fails_cleanly
def retention(
    tenant: SeriesTenant,
    raw_days: Annotated[int, typer.Option(help="Keep raw points this many days.")],
    series: Annotated[
        str, typer.Argument(help="Series name, or * for the tenant's default.")
    ] = "*",
    rollup: Annotated[str, typer.Option(help="Then one point per hour or day.")] = "hour",
    keep_days: Annotated[
        int | None, typer.Option(help="Drop everything older (default: keep rollups).")
    ] = None,
    principal: Annotated[str, typer.Option("--as", help="Who sets it.")] = "service:stead-cli",
    json_out: Json = False,
) -> None:
    """Set a series' (or the tenant's) retention and apply it now; the memory purge
    schedule applies it from then on."""
    setter = Provenance(principal=principal).principal  # a principal id, checked
    policy = _validated(
        Retention,
        tenant=tenant,
        series=series,
        raw_days=raw_days,
        rollup=rollup,
        keep_days=keep_days,
    )

    async def apply(store: SeriesStore) -> CompactResult:
        await store.set_retention(policy, principal=setter)
        return await store.compact(tenant)

    done = _series_store(apply)
    if json_out:
        print_json({"retention": policy.model_dump(mode="json"), **done.model_dump(mode="json")})
        return
    console.print(
        f"{tenant} {series}: raw {raw_days}d, then per {rollup}"
        f"{f', dropped after {keep_days}d' if keep_days else ''}; now rolled up "
        f"{done.rolled_up} points into {done.rollups}, dropped {done.dropped}"
    )
