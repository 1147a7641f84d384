-- Per-tenant rate limits for adapter operations, shared by every worker.
--
-- rate_buckets is a token bucket per (tenant, operation): ``tokens`` as of
-- ``refilled_at``, refilled continuously at the operation's rate. Workers lock the
-- row (SELECT ... FOR UPDATE) and use the database clock, so any number of workers
-- on any machines draw from one bucket and agree on the time.
--
-- When the bucket is empty, the step reserves the next token (``tokens`` goes
-- negative, a debt) and records a row in rate_reservations with the moment it is
-- ready. The activity fails with a retry delay of exactly that long; the retry
-- finds its reservation and proceeds without drawing again. A throttled step
-- therefore costs one extra attempt, never a crowd of retries fighting for tokens.

CREATE TABLE rate_buckets (
    tenant      text NOT NULL CHECK (tenant <> ''),
    operation   text NOT NULL,
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, operation)
);

CREATE TABLE rate_reservations (
    tenant          text NOT NULL CHECK (tenant <> ''),
    idempotency_key text NOT NULL,
    operation       text NOT NULL,
    ready_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);
CREATE INDEX rate_reservations_tenant_ready ON rate_reservations (tenant, ready_at);

ALTER TABLE rate_buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_buckets FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rate_buckets
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE rate_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_reservations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rate_reservations
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
