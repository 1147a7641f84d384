-- The database as a boundary: what the app role (stead_app) may do is exactly what
-- Stead's code needs, so someone holding its credentials cannot reach other tenants'
-- directory rows or rewrite the facts the trust chain builds on.
--
-- Tenant-bearing tables and their row-level security after this migration (all
-- ENABLE + FORCE, policy on app.tenant_id): runs, decisions, audit_events, effects,
-- group_members (0002); records, records_writes (0003); rate_buckets,
-- rate_reservations (0004); memories, memory_versions, memory_state (0004);
-- principals, capability_uses, capability_grants (0005); plans (0006); and now
-- tenants, whose tenant column is its id.
--
-- RLS binds the app role only through the tenant setting it makes itself, so it
-- contains mistakes (a query without a tenant filter, a row of tenant A asked for
-- in B's transaction). The grants and triggers below hold whatever the setting is.

-- tenants: forced row-level security like every other tenant table. The app role
-- sees and inserts its own tenant's row inside tenant_transaction and nothing else;
-- it may never UPDATE, DELETE or TRUNCATE a tenant (a DELETE cascaded into the
-- tenant's principals). Listing every tenant is a deliberate, narrow path:
-- stead_tenant_ids() below returns ids only.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = current_setting('app.tenant_id', true))
    WITH CHECK (id = current_setting('app.tenant_id', true));
-- Only the owner reads across tenants, and only for SELECT: this is what lets the
-- SECURITY DEFINER function below list ids. stead_app is not a member of stead_owner.
CREATE POLICY owner_lists ON tenants FOR SELECT TO stead_owner USING (true);
REVOKE UPDATE, DELETE, TRUNCATE ON tenants FROM stead_app;

-- Tenant ids for jobs that visit every tenant (memory maintenance, `stead tenant
-- list`): ids only, never a row's other columns, and it writes nothing.
CREATE FUNCTION stead_tenant_ids() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$ SELECT id FROM public.tenants ORDER BY id $$;
REVOKE ALL ON FUNCTION stead_tenant_ids() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stead_tenant_ids() TO stead_app;

-- One guard for every append-only table; the message names the table.
CREATE FUNCTION stead_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- decisions: the capability authority signs a token only for a recorded allow, so a
-- decision is a fact that never changes (a retried recording is ON CONFLICT DO
-- NOTHING). Without this the app role could turn a deny into an allow.
-- INSERT stays (policy activities record decisions), so a row alone proves nothing:
-- workers store an HMAC under audit.secret with each decision (stead.audit.chain.
-- decision_mac) and the authority refuses a row without a valid one. Rows from before
-- this migration have none and are refused: nothing is deployed that would need them.
ALTER TABLE decisions ADD COLUMN mac text;
REVOKE UPDATE, DELETE, TRUNCATE ON decisions FROM stead_app;
CREATE TRIGGER decisions_no_rewrite
    BEFORE UPDATE OR DELETE ON decisions
    FOR EACH ROW EXECUTE FUNCTION stead_append_only();
CREATE TRIGGER decisions_no_truncate
    BEFORE TRUNCATE ON decisions
    FOR EACH STATEMENT EXECUTE FUNCTION stead_append_only();

-- audit_events: already append-only (0002). Rows are now keyed: `hash` is an
-- HMAC-SHA256 with audit.secret, which never enters the database (stead/audit/).
-- Rows written before this migration keep chain_version 1 (unkeyed sha256) and are
-- accepted by `stead audit verify` only as a prefix of a chain; the NOT VALID check
-- leaves them alone but refuses any new unkeyed row, whoever inserts it.
ALTER TABLE audit_events ADD COLUMN chain_version smallint NOT NULL DEFAULT 1;
ALTER TABLE audit_events ALTER COLUMN chain_version DROP DEFAULT;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_keyed CHECK (chain_version = 2) NOT VALID;

-- plans: a stored plan is found by the hash policy decided and approvers signed, and
-- plan.window does not re-hash what it reads; a DELETE followed by an INSERT under
-- the same hash would swap the steps. No code deletes plans.
REVOKE DELETE ON plans FROM stead_app;

-- effects: the ledger inserts an in_flight intent, bumps attempts while in flight,
-- and finishes it once. What the key means never changes, and a finished effect is
-- frozen: turning `completed` back into `in_flight` would run the effect again.
REVOKE DELETE, TRUNCATE ON effects FROM stead_app;
CREATE FUNCTION effects_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'effects is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.idempotency_key, NEW.tenant, NEW.workflow_id, NEW.step_id, NEW.operation,
        NEW.args_hash, NEW.decision_id, NEW.created_at)
       IS DISTINCT FROM
       (OLD.idempotency_key, OLD.tenant, OLD.workflow_id, OLD.step_id, OLD.operation,
        OLD.args_hash, OLD.decision_id, OLD.created_at) THEN
        RAISE EXCEPTION 'an effect''s key, step, operation, arguments and decision never change'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.status <> 'in_flight' THEN
        RAISE EXCEPTION 'effect % is already %: a finished effect never changes',
            OLD.idempotency_key, OLD.status
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER effects_guard
    BEFORE UPDATE OR DELETE ON effects
    FOR EACH ROW EXECUTE FUNCTION effects_guard();
CREATE TRIGGER effects_no_truncate
    BEFORE TRUNCATE ON effects
    FOR EACH STATEMENT EXECUTE FUNCTION stead_append_only();

-- capability_uses / capability_grants: deleting a live use would let a token bind
-- again; only expired rows may go (stead.capability.ledger.prune_expired). A
-- restrictive policy is ANDed with tenant_isolation.
CREATE POLICY delete_only_expired ON capability_uses AS RESTRICTIVE FOR DELETE
    USING (expires_at < now());
CREATE POLICY delete_only_expired ON capability_grants AS RESTRICTIVE FOR DELETE
    USING (expires_at < now());

-- principals: disabling a principal is an UPDATE the directory makes; deleting one
-- (and adding it again) would clear tokens_not_before and revive revoked tokens, so
-- the app role loses DELETE, and revocation never moves back.
REVOKE DELETE, TRUNCATE ON principals FROM stead_app;
CREATE FUNCTION principals_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.tenant, NEW.id, NEW.kind, NEW.created_at)
       IS DISTINCT FROM (OLD.tenant, OLD.id, OLD.kind, OLD.created_at) THEN
        RAISE EXCEPTION 'a principal''s tenant, id and kind never change'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.tokens_not_before IS NOT NULL
       AND (NEW.tokens_not_before IS NULL OR NEW.tokens_not_before < OLD.tokens_not_before) THEN
        RAISE EXCEPTION 'principal %: token revocation (tokens_not_before) never moves back', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER principals_guard
    BEFORE UPDATE ON principals
    FOR EACH ROW EXECUTE FUNCTION principals_guard();

-- runs and records_writes: no code deletes them; records_writes' trigger (0003)
-- already refuses rewrites, so its grants now say the same.
REVOKE DELETE, TRUNCATE ON runs FROM stead_app;
REVOKE UPDATE, DELETE, TRUNCATE ON records_writes FROM stead_app;
