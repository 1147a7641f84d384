"""The SQL of memory: every function runs on a connection inside `tenant_transaction`.

Each statement also names the tenant in its WHERE clause. Row-level security would
hide other tenants' rows anyway; the explicit filter lets the planner use the
tenant-leading indexes, and makes a caller bug visible as "nothing found" twice over.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from stead.memory.contracts import MemoryVersion, Provenance, RememberRequest

VERSION_COLUMNS = """
    v.id::text AS id, v.tenant, m.namespace, m.key, v.version, v.content, v.content_hash,
    v.sensitivity, v.valid_from, v.valid_to, v.recorded_at, v.superseded_at, v.expires_at,
    v.erased_at, v.index_state, v.principal, v.agent, v.model, v.model_version, v.prompt_hash,
    v.workflow_id, v.run_id, v.step_id, v.reason, v.source_refs::text AS source_refs,
    v.request_hash, v.memory_id::text AS memory_id
"""
_FROM = "FROM memory_versions v JOIN memories m ON m.id = v.memory_id AND m.tenant = v.tenant"
# A version recall may return: current, not erased, not expired.
LIVE = (
    "v.superseded_at IS NULL AND v.erased_at IS NULL"
    " AND (v.expires_at IS NULL OR v.expires_at > now())"
)

_CLAIM_MEMORY = """
INSERT INTO memories AS m (tenant, namespace, key) VALUES ($1, $2, $3)
ON CONFLICT (tenant, namespace, key) DO UPDATE SET updated_at = now()
RETURNING id, current_version
"""
# Superseded points must leave the index; 'stale' asks the index writer (or reindex) to
# delete them. Marking 'stale' even from 'absent' is harmless: deletes are idempotent.
_SUPERSEDE = """
UPDATE memory_versions SET superseded_at = now(), index_state = 'stale'
WHERE tenant = $1 AND memory_id = $2 AND superseded_at IS NULL
RETURNING id::text
"""
_INSERT_VERSION = """
INSERT INTO memory_versions (tenant, memory_id, version, content, content_hash, sensitivity,
    valid_from, valid_to, expires_at, principal, agent, model, model_version, prompt_hash,
    workflow_id, run_id, step_id, reason, source_refs, request_key, request_hash)
VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now()), $8, $9, $10, $11, $12, $13, $14,
    $15, $16, $17, $18, $19::text::jsonb, $20, $21)
RETURNING id
"""


def version_from_row(row: asyncpg.Record, *, withheld: bool = False) -> MemoryVersion:
    return MemoryVersion(
        id=row["id"],
        tenant=row["tenant"],
        namespace=row["namespace"],
        key=row["key"],
        version=row["version"],
        content=None if withheld else row["content"],
        content_hash=row["content_hash"],
        sensitivity=row["sensitivity"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        recorded_at=row["recorded_at"],
        superseded_at=row["superseded_at"],
        expires_at=row["expires_at"],
        erased_at=row["erased_at"],
        index_state=row["index_state"],
        provenance=Provenance(
            principal=row["principal"],
            agent=row["agent"],
            model=row["model"],
            model_version=row["model_version"],
            prompt_hash=row["prompt_hash"],
            workflow_id=row["workflow_id"],
            run_id=row["run_id"],
            step_id=row["step_id"],
            reason=row["reason"],
            source_refs=tuple(json.loads(row["source_refs"])),
        ),
        withheld=withheld and row["content"] is not None,
    )


async def ensure_tenant(conn: asyncpg.Connection, tenant: str) -> None:
    """List the tenant in the directory, so scheduled jobs know whom to visit without
    reading across tenants (RLS forbids that, by design)."""
    await conn.execute("INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", tenant)


async def find_by_request_key(
    conn: asyncpg.Connection, tenant: str, request_key: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {VERSION_COLUMNS} {_FROM} WHERE v.tenant = $1 AND v.request_key = $2",
        tenant,
        request_key,
    )
    return row


async def append_version(
    conn: asyncpg.Connection, req: RememberRequest, content_hash: str, request_hash: str
) -> tuple[asyncpg.Record, list[str]]:
    """Append a version and supersede the current one; returns it and the superseded ids.

    The upsert of the memory row takes its row lock, so concurrent writers of one key
    queue here and version numbers stay gapless."""
    claimed = await conn.fetchrow(_CLAIM_MEMORY, req.tenant, req.namespace, req.key)
    memory_id, current = claimed["id"], int(claimed["current_version"])
    superseded = [r["id"] for r in await conn.fetch(_SUPERSEDE, req.tenant, memory_id)]
    p = req.provenance
    version_id = await conn.fetchval(
        _INSERT_VERSION,
        req.tenant,
        memory_id,
        current + 1,
        req.content,
        content_hash,
        req.sensitivity,
        req.valid_from,
        req.valid_to,
        req.expires_at,
        p.principal,
        p.agent,
        p.model,
        p.model_version,
        p.prompt_hash,
        p.workflow_id,
        p.run_id,
        p.step_id,
        p.reason,
        json.dumps(list(p.source_refs)),
        req.request_key,
        request_hash,
    )
    await conn.execute(
        "UPDATE memories SET current_version = $3, updated_at = now()"
        " WHERE tenant = $1 AND id = $2",
        req.tenant,
        memory_id,
        current + 1,
    )
    row = await conn.fetchrow(
        f"SELECT {VERSION_COLUMNS} {_FROM} WHERE v.tenant = $1 AND v.id = $2",
        req.tenant,
        version_id,
    )
    return row, superseded


async def history(
    conn: asyncpg.Connection, tenant: str, namespace: str, key: str
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {VERSION_COLUMNS} {_FROM} WHERE v.tenant = $1 AND m.namespace = $2 AND m.key = $3"
        " ORDER BY v.version",
        tenant,
        namespace,
        key,
    )
    return rows


async def versions_by_id(
    conn: asyncpg.Connection, tenant: str, ids: Sequence[str], as_of: datetime | None = None
) -> list[asyncpg.Record]:
    """The rows behind index hits, with whether each may be recalled (`live`: current
    now, or current at `as_of`)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {VERSION_COLUMNS}, ({LIVE if as_of is None else _current_at('$3')}) AS live"
        f" {_FROM} WHERE v.tenant = $1 AND v.id = ANY($2::uuid[])"
        + (" AND $3::timestamptz IS NULL" if as_of is None else ""),
        tenant,
        list(ids),
        as_of,
    )
    return rows


# A version as memory held it at recorded time $N (`as_of`): written by then, not yet
# superseded then, not erased (erasure is forever: forgotten content never comes back
# through a read of the past), not expired then.
def _current_at(param: str) -> str:
    return (
        f"v.erased_at IS NULL AND v.recorded_at <= {param}"
        f" AND (v.superseded_at IS NULL OR v.superseded_at > {param})"
        f" AND (v.expires_at IS NULL OR v.expires_at > {param})"
    )


# Okapi BM25 over the generated tsvector, per tenant, in one statement. Postgres's own
# ts_rank has no inverse document frequency, so a common word counts as much as a rare
# name; here each query lexeme is weighted by how rare it is among the tenant's live
# versions that match the query at all (the candidates: every live version sharing a
# lexeme with the question), and term frequency saturates (k1) and is normalised by
# length (b), against the candidates' mean length.
#
# Cost: one pass over the candidates' rows, unnesting only their query lexemes (the
# tsquery is written inline so a selective question can use the search index); the
# namespace join only when namespaces are asked for; the document count N from the
# current-versions index alone (`docs`), which counts erased and expired versions too:
# a slightly high N shifts every idf alike and leaves the order nearly as it was.
_OR_QUERY = "nullif(replace(plainto_tsquery('english', $2)::text, ' & ', ' | '), '')::tsquery"


def _lexical_sql(live: str, docs: str) -> str:
    return f"""
WITH hits AS MATERIALIZED (
    SELECT v.id, length(v.search) AS len, u.lexeme,
           coalesce(array_length(u.positions, 1), 1) AS tf
    FROM memory_versions v, unnest(v.search) u
    WHERE v.tenant = $1 AND {live} AND v.search @@ {_OR_QUERY}
      AND u.lexeme = ANY(tsvector_to_array(to_tsvector('english', $2)))
      AND ($3::text[] IS NULL OR EXISTS (
          SELECT 1 FROM memories m
          WHERE m.id = v.memory_id AND m.tenant = v.tenant AND m.namespace = ANY($3::text[])))
      AND ($4::timestamptz IS NULL OR v.valid_from >= $4)
      AND v.sensitivity = ANY($5::text[])
      AND ($7::timestamptz IS NULL
           OR (v.valid_from <= $7 AND (v.valid_to IS NULL OR v.valid_to > $7)))
), df AS (
    SELECT lexeme, count(*)::float8 AS df FROM hits GROUP BY lexeme
), stats AS (
    SELECT ({docs})::float8 AS n,
           (SELECT greatest(avg(len), 1) FROM (SELECT DISTINCT id, len FROM hits) d)::float8
               AS mean
)
SELECT h.id::text AS id,
       sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
           * h.tf * 2.2 / (h.tf + 1.2 * (0.25 + 0.75 * h.len / stats.mean))) AS score
FROM hits h JOIN df USING (lexeme), stats
GROUP BY h.id ORDER BY score DESC, h.id LIMIT $6
"""


# Now: the partial GIN index (live versions only) can serve the match, the partial
# current-versions index the count. As of a past time: the same ranking over the
# versions current then (a scan of the tenant's rows).
_LEXICAL_NOW = _lexical_sql(
    LIVE + " AND $8::timestamptz IS NULL",
    "SELECT count(*) FROM memory_versions c WHERE c.tenant = $1 AND c.superseded_at IS NULL",
)
_LEXICAL_AS_OF = _lexical_sql(
    _current_at("$8::timestamptz"),
    "SELECT count(*) FROM memory_versions v WHERE v.tenant = $1 AND "
    + _current_at("$8::timestamptz"),
)


async def lexical(
    conn: asyncpg.Connection,
    tenant: str,
    query: str,
    *,
    namespaces: Sequence[str] | None,
    since: datetime | None,
    sensitivities: Sequence[str],
    limit: int,
    valid_at: datetime | None = None,
    as_of: datetime | None = None,
) -> list[tuple[str, float]]:
    """The lexical half of hybrid recall: (version id, BM25 score), best first, of the
    versions current now (or `as_of`), with event time from `since` and valid at
    `valid_at`. Same tenant filter, row-level security and liveness test as every read."""
    rows = await conn.fetch(
        _LEXICAL_NOW if as_of is None else _LEXICAL_AS_OF,
        tenant,
        query,
        None if namespaces is None else list(namespaces),
        since,
        list(sensitivities),
        limit,
        valid_at,
        as_of,
    )
    return [(r["id"], float(r["score"])) for r in rows]


async def version_at(
    conn: asyncpg.Connection,
    tenant: str,
    namespace: str,
    key: str,
    *,
    as_of: datetime | None,
    valid_at: datetime | None,
) -> asyncpg.Record | None:
    """Without `valid_at`: the version current at recorded time `as_of` (None: now).
    With it: the latest version recorded by then whose valid interval holds `valid_at`,
    i.e. what memory (now, or as of then) says was true at that time. Erased versions
    come back without content."""
    if valid_at is None:
        when = (
            "v.superseded_at IS NULL AND $5::timestamptz IS NULL"
            if as_of is None
            else (
                "v.recorded_at <= $4 AND (v.superseded_at IS NULL OR v.superseded_at > $4)"
                " AND $5::timestamptz IS NULL"
            )
        )
    else:
        when = (
            "v.recorded_at <= coalesce($4::timestamptz, now())"
            " AND v.valid_from <= $5 AND (v.valid_to IS NULL OR v.valid_to > $5)"
        )
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {VERSION_COLUMNS} {_FROM} WHERE v.tenant = $1 AND m.namespace = $2"
        f" AND m.key = $3 AND ($4::timestamptz IS NULL OR true) AND {when}"
        " ORDER BY v.version DESC LIMIT 1",
        tenant,
        namespace,
        key,
        as_of,
        valid_at,
    )
    return row


async def erase_versions(
    conn: asyncpg.Connection,
    tenant: str,
    *,
    by: str,
    reason: str,
    namespace: str | None = None,
    key: str | None = None,
    version: int | None = None,
    expired_only: bool = False,
) -> list[asyncpg.Record]:
    """Drop the content of matching versions; hash and provenance stay.

    Either one key (optionally one version of it) or, with `expired_only`, every
    version whose TTL has passed."""
    if not expired_only and (namespace is None or key is None):
        raise ValueError("erase needs a namespace and key, or expired_only=True")
    rows: list[asyncpg.Record] = await conn.fetch(
        "WITH erased AS (UPDATE memory_versions v SET content = NULL, erased_at = now(),"
        " erased_by = $2, erase_reason = $3, index_state = 'stale'"
        " FROM memories m WHERE m.id = v.memory_id AND m.tenant = v.tenant"
        " AND v.tenant = $1 AND v.erased_at IS NULL"
        " AND ($4::text IS NULL OR m.namespace = $4) AND ($5::text IS NULL OR m.key = $5)"
        " AND ($6::int IS NULL OR v.version = $6)"
        " AND (NOT $7::bool OR (v.expires_at IS NOT NULL AND v.expires_at <= now()))"
        " RETURNING v.id::text AS id, m.namespace, m.key, v.version, v.content_hash)"
        " SELECT * FROM erased ORDER BY namespace, key, version",
        tenant,
        by,
        reason,
        namespace,
        key,
        version,
        expired_only,
    )
    return rows


async def memory_exists(conn: asyncpg.Connection, tenant: str, namespace: str, key: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM memories WHERE tenant = $1 AND namespace = $2 AND key = $3",
        tenant,
        namespace,
        key,
    )
    return found is not None


# ------------------------------------------------------------- index bookkeeping


async def mark_indexed(
    conn: asyncpg.Connection, tenant: str, ids: Sequence[str], model: str
) -> None:
    """Record points just written. A row that changed meanwhile (superseded, erased) no
    longer wants its point: it becomes 'stale', so the next pass deletes the point."""
    await conn.execute(
        "UPDATE memory_versions SET indexed_model = $3,"
        " index_state = CASE WHEN index_state IN ('pending', 'terms') AND erased_at IS NULL"
        " AND superseded_at IS NULL THEN 'indexed' ELSE 'stale' END"
        " WHERE tenant = $1 AND id = ANY($2::uuid[])",
        tenant,
        list(ids),
        model,
    )


async def mark_absent(conn: asyncpg.Connection, tenant: str, ids: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE memory_versions SET index_state = 'absent'"
        " WHERE tenant = $1 AND id = ANY($2::uuid[]) AND index_state = 'stale'",
        tenant,
        list(ids),
    )


async def index_work(
    conn: asyncpg.Connection, tenant: str, limit: int
) -> tuple[list[asyncpg.Record], list[asyncpg.Record], list[str]]:
    """Live versions waiting for a point, live versions whose point lacks its term
    vector (indexed before term vectors existed), and ids whose point must go."""
    await conn.execute(
        "UPDATE memory_versions v SET index_state = 'stale'"
        f" WHERE v.tenant = $1 AND v.index_state IN ('pending', 'terms') AND NOT ({LIVE})",
        tenant,
    )
    waiting = [
        await conn.fetch(
            f"SELECT {VERSION_COLUMNS} {_FROM} WHERE v.tenant = $1 AND v.index_state = $3"
            " ORDER BY v.recorded_at LIMIT $2",
            tenant,
            limit,
            state,
        )
        for state in ("pending", "terms")
    ]
    stale = await conn.fetch(
        "SELECT id::text AS id FROM memory_versions WHERE tenant = $1 AND index_state = 'stale'"
        " LIMIT $2",
        tenant,
        limit,
    )
    return waiting[0], waiting[1], [r["id"] for r in stale]


async def backlog(
    conn: asyncpg.Connection, tenant: str, namespaces: Sequence[str] | None, limit: int
) -> tuple[list[asyncpg.Record], bool]:
    """What the index has not caught up with, in one statement (one round trip per
    recall): the newest live versions written but not yet indexed (what a 'fresh' recall
    ranks by meaning itself, so the reader sees its own writes), and whether some live
    version of `tenant` cannot be found by its terms in the index (not indexed yet, or
    indexed before term vectors): then recall ranks exact terms in Postgres instead, so
    a lagging index never hides a match."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT lag.lagging, p.* FROM (SELECT EXISTS (SELECT 1 FROM memory_versions v"
        f" WHERE v.tenant = $1 AND v.index_state IN ('pending', 'terms') AND {LIVE})"
        " AS lagging) lag"
        f" LEFT JOIN LATERAL (SELECT {VERSION_COLUMNS}, true AS live {_FROM}"
        f" WHERE v.tenant = $1 AND v.index_state = 'pending' AND {LIVE}"
        " AND ($2::text[] IS NULL OR m.namespace = ANY($2::text[]))"
        " ORDER BY v.recorded_at DESC LIMIT $3) p ON true",
        tenant,
        None if namespaces is None else list(namespaces),
        limit,
    )
    return [r for r in rows if r["id"] is not None], bool(rows[0]["lagging"])


async def mark_all_pending(conn: asyncpg.Connection, tenant: str) -> int:
    """For a full rebuild (new model, lost shard): every live version wants a point again."""
    status: str = await conn.execute(
        f"UPDATE memory_versions v SET index_state = 'pending' WHERE v.tenant = $1 AND {LIVE}",
        tenant,
    )
    return int(status.split()[-1])


async def directory_tenants(conn: asyncpg.Connection) -> list[str]:
    """Ids only, through the owner's function: ``tenants`` is row-level secured (0007)."""
    return [r[0] for r in await conn.fetch("SELECT stead_tenant_ids()")]


def payload_fields(row: Any) -> dict[str, Any]:
    """What the vector index may know about a version: never its content."""
    return {
        "tenant": row["tenant"],
        "namespace": row["namespace"],
        "memory_id": row["memory_id"],
        "version": row["version"],
        "sensitivity": row["sensitivity"],
        "expires_at": row["expires_at"],
    }
