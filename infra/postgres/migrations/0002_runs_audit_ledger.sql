-- The Postgres side of a governed run: run records, policy decisions, the
-- hash-chained audit log, the effect ledger, and a minimal group directory.
--
-- Every table is tenant-scoped by row-level security. FORCE makes the policy bind
-- the owner too, so only a superuser (or BYPASSRLS role) reads across tenants.
-- The policy reads the transaction-local setting made by
-- stead.db.pool.tenant_transaction; with no setting, current_setting(..., true)
-- is NULL or '' and no row matches: outside a tenant transaction the app sees
-- nothing and can write nothing.

CREATE TABLE runs (
    workflow_id   text PRIMARY KEY,
    tenant        text NOT NULL,
    principal     text NOT NULL,
    goal          text,
    playbook      text,
    status        text NOT NULL,
    plan_hash     text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    tokens        integer NOT NULL DEFAULT 0,
    cost_usd      numeric NOT NULL DEFAULT 0,
    minutes_saved numeric NOT NULL DEFAULT 0,
    labels        jsonb NOT NULL DEFAULT '{}',
    summary       jsonb NOT NULL DEFAULT '{}',
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_tenant_started ON runs (tenant, started_at DESC);
CREATE INDEX runs_tenant_status_started ON runs (tenant, status, started_at DESC);

CREATE TABLE decisions (
    decision_id     text PRIMARY KEY,
    tenant          text NOT NULL,
    workflow_id     text NOT NULL,
    step_id         text,
    kind            text NOT NULL CHECK (kind IN ('plan', 'step')),
    outcome         text NOT NULL CHECK (outcome IN ('allow', 'deny', 'approve')),
    reasons         jsonb NOT NULL DEFAULT '[]',
    approval        jsonb,
    policy_revision text NOT NULL DEFAULT 'unknown',
    input_hash      text NOT NULL,
    blocked         text,
    evaluated_at    timestamptz NOT NULL DEFAULT now(),
    eval_ms         double precision,
    -- A plan-level decision names no step; a step decision always does.
    CHECK ((kind = 'plan') = (step_id IS NULL))
);
CREATE INDEX decisions_tenant_workflow ON decisions (tenant, workflow_id, evaluated_at);

CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    tenant      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),
    workflow_id text,
    run_id      text,
    step_id     text,
    kind        text NOT NULL,
    actor       text NOT NULL,
    data        jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    prev_hash   text NOT NULL,
    hash        text NOT NULL,
    UNIQUE (tenant, seq)
);
CREATE INDEX audit_events_tenant_workflow ON audit_events (tenant, workflow_id, seq);

-- Append-only: the app role keeps INSERT and SELECT only (the default privileges
-- granted it UPDATE and DELETE too), and a trigger refuses rewrites even if a
-- later grant is mistaken. A superuser can still disable the trigger, which is
-- exactly what the hash chain exists to detect.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM stead_app;

CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_rewrite
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE effects (
    idempotency_key text PRIMARY KEY,
    tenant          text NOT NULL,
    workflow_id     text NOT NULL,
    step_id         text NOT NULL,
    operation       text NOT NULL,
    args_hash       text NOT NULL,
    decision_id     text,
    status          text NOT NULL CHECK (status IN ('in_flight', 'completed', 'failed')),
    result          jsonb,
    error           text,
    attempts        integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX effects_tenant_workflow ON effects (tenant, workflow_id);

-- Minimal directory so approval policies can expand group:<name> into principals.
-- group_name is stored without the "group:" prefix.
CREATE TABLE group_members (
    tenant     text NOT NULL,
    group_name text NOT NULL,
    principal  text NOT NULL,
    PRIMARY KEY (tenant, group_name, principal)
);

ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON runs
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE decisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE decisions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON decisions
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_events
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE effects ENABLE ROW LEVEL SECURITY;
ALTER TABLE effects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON effects
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE group_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE group_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON group_members
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
