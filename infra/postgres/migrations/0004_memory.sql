-- Memory: Postgres is the truth, the vector index only ranks candidates.
--
-- memories names a fact (tenant, namespace, key); memory_versions holds every value it
-- ever had. A write appends a version and marks the previous one superseded; nothing
-- is overwritten, so `stead memory history` shows who wrote what, from which run and
-- step, when and why. Two clocks per version: valid_from/valid_to say when the value
-- was true in the world, recorded_at/superseded_at when Stead knew it.
--
-- Erasure (a request to forget, or expiry) is the one change to a version's content:
-- content becomes NULL, and with it the generated full-text column; the hash and the
-- provenance stay, so the record of what was known survives without the content.
--
-- index_state tracks the vector index, which is written after the commit: pending
-- (needs a point), indexed, stale (its point must go), absent. `stead memory reindex`
-- and a Temporal Schedule repair pending and stale rows, so a failed index write
-- never loses a memory and never leaves an erased one findable.
--
-- memory_state is the structured store for critical facts: one row per key, a version
-- column, and compare-and-set writes.
--
-- Every table is tenant-scoped by forced row-level security, like 0002.

CREATE TABLE memories (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant          text NOT NULL CHECK (tenant <> ''),
    namespace       text NOT NULL CHECK (namespace ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 256),
    current_version integer NOT NULL DEFAULT 0 CHECK (current_version >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, namespace, key),
    UNIQUE (tenant, id)
);

CREATE TABLE memory_versions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),  -- also the vector point id
    tenant        text NOT NULL,
    memory_id     uuid NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    content       text,
    content_hash  text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    sensitivity   text NOT NULL CHECK (sensitivity IN ('public', 'internal', 'pii', 'secret')),
    valid_from    timestamptz NOT NULL DEFAULT now(),
    valid_to      timestamptz CHECK (valid_to IS NULL OR valid_to > valid_from),
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz,
    expires_at    timestamptz,
    principal     text NOT NULL,
    agent         text,
    model         text,
    model_version text,
    prompt_hash   text,
    workflow_id   text,
    run_id        text,
    step_id       text,
    reason        text NOT NULL DEFAULT '',
    source_refs   jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(source_refs) = 'array'),
    -- The writer's idempotency key (<workflow id>/<step id>): a retried write finds
    -- its first version instead of appending another. Unique per tenant, not
    -- globally, so a collision cannot tell one tenant another's keys.
    request_key   text,
    request_hash  text,
    index_state   text NOT NULL DEFAULT 'pending'
                  CHECK (index_state IN ('pending', 'indexed', 'stale', 'absent')),
    indexed_model text,
    erased_at     timestamptz,
    erased_by     text,
    erase_reason  text,
    search        tsvector GENERATED ALWAYS AS (to_tsvector('english', coalesce(content, ''))) STORED,
    UNIQUE (memory_id, version),
    UNIQUE (tenant, request_key),
    FOREIGN KEY (tenant, memory_id) REFERENCES memories (tenant, id),
    CHECK ((erased_at IS NULL) = (content IS NOT NULL))
);
CREATE INDEX memory_versions_current ON memory_versions (tenant, memory_id)
    WHERE superseded_at IS NULL;
CREATE INDEX memory_versions_search ON memory_versions USING gin (search)
    WHERE superseded_at IS NULL AND erased_at IS NULL;
CREATE INDEX memory_versions_index_work ON memory_versions (tenant, index_state)
    WHERE index_state IN ('pending', 'stale');
CREATE INDEX memory_versions_expiry ON memory_versions (tenant, expires_at)
    WHERE erased_at IS NULL AND expires_at IS NOT NULL;

-- Versions are never deleted and their facts never rewritten. The app role loses
-- DELETE and TRUNCATE, and a trigger allows only the transitions the service makes:
-- superseding, erasing, and bookkeeping of the vector index.
REVOKE DELETE, TRUNCATE ON memories, memory_versions FROM stead_app;

CREATE FUNCTION memory_versions_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'memory_versions is append-only: % refused; erase a version instead', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.id, NEW.tenant, NEW.memory_id, NEW.version, NEW.content_hash, NEW.sensitivity,
        NEW.valid_from, NEW.valid_to, NEW.recorded_at, NEW.expires_at, NEW.principal, NEW.agent,
        NEW.model, NEW.model_version, NEW.prompt_hash, NEW.workflow_id, NEW.run_id, NEW.step_id,
        NEW.reason, NEW.source_refs, NEW.request_key, NEW.request_hash)
       IS DISTINCT FROM
       (OLD.id, OLD.tenant, OLD.memory_id, OLD.version, OLD.content_hash, OLD.sensitivity,
        OLD.valid_from, OLD.valid_to, OLD.recorded_at, OLD.expires_at, OLD.principal, OLD.agent,
        OLD.model, OLD.model_version, OLD.prompt_hash, OLD.workflow_id, OLD.run_id, OLD.step_id,
        OLD.reason, OLD.source_refs, OLD.request_key, OLD.request_hash) THEN
        RAISE EXCEPTION 'a memory version''s facts and provenance never change; write a new version'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.superseded_at IS NOT NULL AND NEW.superseded_at IS DISTINCT FROM OLD.superseded_at THEN
        RAISE EXCEPTION 'a superseded memory version stays superseded'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.erased_at IS NOT NULL AND NEW.erased_at IS DISTINCT FROM OLD.erased_at THEN
        RAISE EXCEPTION 'an erased memory version stays erased'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.content IS DISTINCT FROM OLD.content AND NEW.content IS NOT NULL THEN
        RAISE EXCEPTION 'memory content changes only by erasure; write a new version'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER memory_versions_guard
    BEFORE UPDATE OR DELETE ON memory_versions
    FOR EACH ROW EXECUTE FUNCTION memory_versions_guard();
CREATE TRIGGER memory_versions_no_truncate
    BEFORE TRUNCATE ON memory_versions
    FOR EACH STATEMENT EXECUTE FUNCTION memory_versions_guard();

CREATE TABLE memory_state (
    tenant      text NOT NULL CHECK (tenant <> ''),
    namespace   text NOT NULL CHECK (namespace ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    key         text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 256),
    value       jsonb NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    workflow_id text,
    step_id     text,
    reason      text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, namespace, key)
);

ALTER TABLE memories ENABLE ROW LEVEL SECURITY;
ALTER TABLE memories FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memories
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE memory_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE memory_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memory_versions
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE memory_state ENABLE ROW LEVEL SECURITY;
ALTER TABLE memory_state FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memory_state
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
