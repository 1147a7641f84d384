"""What crosses the memory service's edges: its API, its activities and its workflows.

Every model is closed (`extra="forbid"`) and frozen. Fields that come from the
caller's authenticated context (tenant, principal, workflow and step ids) are
separate from fields a model may have written (content, reason), so a forged
provenance can only come from the trusted side.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, JsonValue, StringConstraints, model_validator

from stead.contracts.base import Closed
from stead.contracts.run import PrincipalId, TenantId

Sensitivity = Literal["public", "internal", "pii", "secret"]
# Ordered by how far a value may travel: a caller cleared for a level sees every lower one.
SENSITIVITY_ORDER: dict[str, int] = {"public": 0, "internal": 1, "pii": 2, "secret": 3}
PlannerClearance = Literal["public", "internal", "pii"]

Namespace = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
MemoryKey = Annotated[str, StringConstraints(min_length=1, max_length=256)]
MAX_CONTENT = 64_000

# Workflow names: stable strings, because a rename would break running schedules.
# (Activity names are literals at their @activity.defn, where the architecture test reads them.)
REINDEX_WORKFLOW = "stead.memory.reindex"
PURGE_WORKFLOW = "stead.memory.purge_expired"
INDEX_OP_WORKFLOW = "stead.memory.index_op"


class Provenance(Closed):
    """Who wrote a version, with what, from where, and why (invariant 6)."""

    principal: PrincipalId
    agent: str | None = None
    model: str | None = None
    model_version: str | None = None
    prompt_hash: str | None = None
    workflow_id: str | None = None
    run_id: str | None = None
    step_id: str | None = None
    reason: str = Field(default="", max_length=2_000)
    source_refs: tuple[str, ...] = ()


class RememberRequest(Closed):
    tenant: TenantId
    namespace: Namespace
    key: MemoryKey
    content: str = Field(min_length=1, max_length=MAX_CONTENT)
    sensitivity: Sensitivity = "internal"
    provenance: Provenance
    valid_from: AwareDatetime | None = None
    valid_to: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    request_key: str | None = Field(
        default=None,
        max_length=300,
        description="Idempotency key; a repeat returns the first write.",
    )
    request_fingerprint: str | None = Field(
        default=None,
        max_length=128,
        description="What makes a repeat 'the same request' (default: a hash of this request);"
        " a step passes its argument hash, since derived times differ between attempts.",
    )


class MemoryVersion(Closed):
    """One stored version; `content` is None once erased or when withheld from the reader."""

    id: str
    tenant: TenantId
    namespace: str
    key: str
    version: int
    content: str | None
    content_hash: str
    sensitivity: Sensitivity
    valid_from: datetime
    valid_to: datetime | None = None
    recorded_at: datetime
    superseded_at: datetime | None = None
    expires_at: datetime | None = None
    erased_at: datetime | None = None
    index_state: str
    provenance: Provenance
    withheld: bool = Field(default=False, description="Content hidden by the reader's clearance.")


class RememberResult(Closed):
    version: MemoryVersion
    created: bool = Field(description="False when the request key had already written it.")
    indexed: bool = Field(description="False: the index write failed; reindex repairs it.")


class RecallQuery(Closed):
    tenant: TenantId
    query: str = Field(min_length=1, max_length=8_000)
    principal: PrincipalId
    agent: str | None = None
    namespaces: tuple[Namespace, ...] | None = None
    k: int = Field(default=5, ge=1, le=100)
    max_age: timedelta | None = Field(
        default=None, description="No older than: event time (valid_from) within this of now."
    )
    as_of: AwareDatetime | None = Field(
        default=None,
        description="Recorded time: answer from the versions that were current then (what"
        " memory held at that instant); None: now.",
    )
    valid_at: AwareDatetime | None = Field(
        default=None,
        description="Valid time: only versions whose valid_from <= valid_at < valid_to.",
    )
    clearance: Sensitivity = "internal"


Consistency = Literal["fresh", "indexed"]


class RecallItem(Closed):
    namespace: str
    key: str
    version: int
    content: str
    sensitivity: Sensitivity
    score: float
    recorded_at: datetime
    valid_from: datetime
    valid_to: datetime | None = None
    expires_at: datetime | None = None
    provenance: Provenance


class RecallResult(Closed):
    items: tuple[RecallItem, ...]
    degraded: bool = Field(
        description="True: meaning was not ranked (the vector index or the embedding model was "
        "unavailable); exact terms answered (Postgres full text when the index was down)."
    )
    withheld: int = Field(
        default=0, description="Hits dropped because the reader may not see them."
    )
    stale: int = Field(
        default=0, description="Index hits dropped as superseded, expired or erased."
    )
    consistency: Consistency = Field(
        default="indexed",
        description="The namespaces' policy: 'fresh' also ranked writes the index has not"
        " caught up with by meaning; 'indexed' found those only through their terms.",
    )
    unindexed: int = Field(
        default=0, description="Live versions in scope not yet in the vector index."
    )
    as_of: datetime | None = Field(default=None, description="The recorded time answered for.")


class EraseResult(Closed):
    tenant: TenantId
    namespace: str
    key: str
    versions: tuple[int, ...]
    content_hashes: tuple[str, ...]
    vectors_removed: bool


class PurgeResult(Closed):
    tenants: int
    erased: int
    vectors_removed: bool
    # Time series retention, applied by the same pass (see SeriesStore.compact).
    observations_rolled_up: int = 0
    observations_dropped: int = 0


class ReindexResult(Closed):
    tenants: int
    indexed: int
    removed: int
    failed: int


class StateValue(Closed):
    tenant: TenantId
    namespace: str
    key: str
    value: JsonValue
    version: int
    updated_at: datetime
    updated_by: str


# ------------------------------------------------------------------ activities


class RecallInput(Closed):
    """What the run asks before planning. Clearance stops at pii: a planner never gets secrets."""

    tenant: TenantId
    principal: PrincipalId
    query: str = Field(min_length=1, max_length=8_000)
    workflow_id: str
    agent: str = "planner"
    namespaces: tuple[Namespace, ...] | None = None
    k: int = Field(default=5, ge=1, le=50)
    max_age_seconds: int | None = Field(default=None, ge=1)
    clearance: PlannerClearance = "pii"


class RunSummaryInput(Closed):
    """The end of a run, remembered in namespace `runs` under the workflow id."""

    tenant: TenantId
    principal: PrincipalId
    workflow_id: str
    run_id: str
    status: str
    goal: str | None = None
    playbook: str | None = None
    steps: tuple[tuple[str, str, str], ...] = Field(
        default=(), description="(id, operation, status)"
    )
    reasons: tuple[str, ...] = ()
    planner_model: str | None = None
    prompt_hash: str | None = None
    plan_hash: str | None = None


class IntegritySeal(Closed):
    """Proof that a holder of the workers' integrity secret made an input for one workflow.

    An HMAC-SHA256 (``stead/memory/sealing.py``) over the input without its seal, the
    workflow id it is meant for and the expiry; the activity checks it against the
    workflow id the server gives it, so an input lifted from history is no use to
    another workflow, and a changed input no use at all.
    """

    workflow_id: str = Field(min_length=1, max_length=1_000)
    expires_at: AwareDatetime
    mac: str = Field(pattern=r"^[0-9a-f]{64}$")


class MaintenanceInput(Closed):
    """Scope of a scheduled job: one tenant, or every tenant in the directory.

    Only the Schedules' shape (every tenant, incremental) runs without a seal: it acts
    for no tenant in particular and repeats what the schedule does anyway. A tenant or
    a full re-embed needs ``seal``.
    """

    tenant: TenantId | None = None
    full: bool = Field(default=False, description="Reindex: re-embed every current version.")
    seal: IntegritySeal | None = None


class IndexOp(Closed):
    """One vector-index call routed to the worker that holds the embedded shard.

    Carries vectors and content-free payloads only: memory content never enters
    Temporal history on this path (the CLI reads and writes Postgres itself).
    """

    op: Literal["ensure", "upsert", "query", "hybrid", "set_terms", "delete", "count"]
    embedder: str = Field(description="The caller's model name; the worker refuses a mismatch.")
    dim: int = Field(ge=1)
    tenant: TenantId | None = None
    points: tuple[dict[str, JsonValue], ...] = ()
    vector: tuple[float, ...] = ()
    # The question's term vector (hybrid) and point id -> term vector (upsert, set_terms),
    # as {"query": ..., "points": {...}}, encrypted by `stead.memory.sealing.seal_terms`:
    # hashed token ids are words to anyone with a dictionary, and this input is history.
    sealed_terms: str | None = None
    k: int = Field(default=10, ge=1, le=1_000)
    namespaces: tuple[str, ...] | None = None
    ids: tuple[str, ...] = ()
    seal: IntegritySeal | None = Field(
        default=None, description="Required: the worker refuses an unsealed index call."
    )


class IndexOpResult(Closed):
    hits: tuple[dict[str, JsonValue], ...] = ()
    lexical: tuple[dict[str, JsonValue], ...] = ()
    ids: tuple[str, ...] = ()
    count: int = 0


# ------------------------------------------------------------------ time series

SeriesName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(min_length=0, max_length=256)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=16)]
Aggregate = Literal["avg", "min", "max", "sum", "count", "last"]
Rollup = Literal["hour", "day"]


class ObserveRequest(Closed):
    """One point of a series. `request_key` (a step's idempotency key) makes a retry
    return the first point instead of adding another."""

    tenant: TenantId
    series: SeriesName
    value: float = Field(allow_inf_nan=False)
    labels: Labels = Field(default_factory=dict)
    observed_at: AwareDatetime | None = Field(default=None, description="None: now.")
    provenance: Provenance
    request_key: str | None = Field(default=None, max_length=512)


class ObserveResult(Closed):
    series: str
    labels: dict[str, str]
    observed_at: datetime
    value: float
    created: bool = Field(description="False when an earlier attempt wrote this point.")


class SeriesQuery(Closed):
    tenant: TenantId
    series: SeriesName
    labels: Labels = Field(default_factory=dict, description="Points whose labels include these.")
    since: AwareDatetime
    until: AwareDatetime | None = Field(default=None, description="None: now.")
    bucket: timedelta = Field(default=timedelta(days=1), gt=timedelta(0))
    aggregate: Aggregate = "avg"
    by: LabelName | None = Field(
        default=None, description="A label whose every value is its own series (e.g. sku)."
    )
    last: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Only the newest this many rows (of each group) in the window count.",
    )


class SeriesPoint(Closed):
    bucket: datetime = Field(
        description="Start of the bucket (buckets align to Monday 2000-01-03 UTC, so 1w "
        "buckets are ISO weeks)."
    )
    value: float
    samples: int = Field(description="Raw points the bucket combines.")
    group: str | None = Field(
        default=None, description="The `by` label's value; None without `by` (or unlabelled)."
    )


class SeriesResult(Closed):
    series: str
    aggregate: Aggregate
    bucket_seconds: float
    points: list[SeriesPoint] = Field(description="Oldest first; empty buckets are left out.")


class Retention(Closed):
    """Raw points older than `raw_days` become one point per label set and `rollup`;
    everything older than `keep_days` (None: forever) is dropped. Series '*' is the
    tenant's default."""

    tenant: TenantId
    series: SeriesName | Literal["*"]
    raw_days: int = Field(ge=1, le=36_500)
    rollup: Rollup = "hour"
    keep_days: int | None = Field(default=None, ge=1, le=36_500)

    @model_validator(mode="after")
    def _keeps_what_it_rolls_up(self) -> Retention:
        if self.keep_days is not None and self.keep_days < self.raw_days:
            raise ValueError(
                f"keep_days ({self.keep_days}) is shorter than raw_days ({self.raw_days}): "
                "points would be dropped before they are rolled up"
            )
        return self


class CompactResult(Closed):
    rolled_up: int = Field(description="Raw points replaced by rollups.")
    rollups: int = Field(description="Rollup points written.")
    dropped: int = Field(description="Points removed past keep_days.")
