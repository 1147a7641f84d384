-- The target system of the records.* adapter: a tenant-scoped key/value store that
-- the governed run writes through, and an append-only log of every real write.
--
-- records holds the current value of each key. records_writes gets one row per
-- write that actually happened, keyed by the step's idempotency key: records.put
-- claims the key there in the same transaction as the upsert, so a retried or
-- reconciled step finds its earlier effect instead of writing again, and tests
-- (and operators) count effects exactly.
--
-- Idempotency keys are unique per tenant, not globally: a global constraint would
-- let one tenant learn, through a unique violation, which keys another has used.

CREATE TABLE records (
    tenant          text NOT NULL CHECK (tenant <> ''),
    key             text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 200),
    value           jsonb NOT NULL CHECK (jsonb_typeof(value) = 'object'),
    version         integer NOT NULL CHECK (version >= 1),
    idempotency_key text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key),
    UNIQUE (tenant, idempotency_key)
);

CREATE TABLE records_writes (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL CHECK (tenant <> ''),
    key             text NOT NULL,
    idempotency_key text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    request_hash    text NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX records_writes_tenant_key ON records_writes (tenant, key, version);

-- Append-only: a rewrite of the log would make a duplicate effect invisible.
CREATE FUNCTION records_writes_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'records_writes is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER records_writes_no_rewrite
    BEFORE UPDATE OR DELETE ON records_writes
    FOR EACH ROW EXECUTE FUNCTION records_writes_append_only();
CREATE TRIGGER records_writes_no_truncate
    BEFORE TRUNCATE ON records_writes
    FOR EACH STATEMENT EXECUTE FUNCTION records_writes_append_only();

ALTER TABLE records ENABLE ROW LEVEL SECURITY;
ALTER TABLE records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON records
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE records_writes ENABLE ROW LEVEL SECURITY;
ALTER TABLE records_writes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON records_writes
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
