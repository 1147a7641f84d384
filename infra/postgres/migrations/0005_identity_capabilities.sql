-- The identity directory (principals of a tenant, group membership) and the
-- single-use ledger of capability tokens.
--
-- A tenant with a row in `tenants` is *managed*: its runs may only be started by
-- an enabled principal listed here, and its approvers are authenticated against
-- these rows (stead/identity). `tenants` itself stays without row-level security:
-- it is the list of tenants an operator administers, read before any tenant is chosen.

CREATE TABLE principals (
    tenant            text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                text NOT NULL CHECK (id ~ '^(user|agent|service):[A-Za-z0-9._@+-]{1,128}$'),
    kind              text NOT NULL CHECK (kind IN ('user', 'agent', 'service')),
    display_name      text NOT NULL DEFAULT '',
    disabled          boolean NOT NULL DEFAULT false,
    -- Principal tokens issued before this instant are refused (set when the
    -- principal is disabled, so enabling it again does not revive old tokens).
    tokens_not_before timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    CHECK (starts_with(id, kind || ':'))
);

-- group_members (0002) stays the membership table: approval policies expand
-- group:<name> from it. It keeps no foreign key to principals because tenants
-- without a directory may still name group members; for managed tenants the
-- approval check requires the member to be an enabled principal as well.
ALTER TABLE group_members ADD COLUMN added_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX group_members_tenant_principal ON group_members (tenant, principal);

-- One row per capability token spent at the execution boundary. The first row of
-- a (tenant, idempotency_key) binds the key to one step, operation and argument
-- hash: a token minted for anything else under that key is refused. A token may be
-- presented again only by a retry of its own step (its claims are signed, so the
-- binding cannot change); the effect ledger then returns the stored result or
-- reconciles, so a token never causes a second effect.
CREATE TABLE capability_uses (
    token_id        text PRIMARY KEY,
    tenant          text NOT NULL CHECK (tenant <> ''),
    idempotency_key text NOT NULL,
    workflow_id     text NOT NULL,
    run_id          text NOT NULL,
    step_id         text NOT NULL,
    operation       text NOT NULL,
    args_hash       text NOT NULL,
    decision_id     text NOT NULL,
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX capability_uses_tenant_key ON capability_uses (tenant, idempotency_key, used_at);

-- Tokens minted ahead for a step that runs on an edge worker (which holds only the
-- public key). The workflow carries the token_id alone, so the token itself never
-- enters workflow history; the edge reads it here and verifies its signature, so a
-- row written by anyone but the authority is refused.
CREATE TABLE capability_grants (
    token_id        text PRIMARY KEY,
    tenant          text NOT NULL CHECK (tenant <> ''),
    idempotency_key text NOT NULL,
    token           text NOT NULL,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A use is a fact: never rewritten. Expired rows may be deleted to bound the tables
-- (an expired token is refused by its own check before the ledger is asked).
REVOKE UPDATE, TRUNCATE ON capability_uses FROM stead_app;
REVOKE UPDATE, TRUNCATE ON capability_grants FROM stead_app;

ALTER TABLE principals ENABLE ROW LEVEL SECURITY;
ALTER TABLE principals FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON principals
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE capability_uses ENABLE ROW LEVEL SECURITY;
ALTER TABLE capability_uses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON capability_uses
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE capability_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE capability_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON capability_grants
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
