-- Plans too large to carry in Temporal history (stead/runs/plans.py).
--
-- A run whose plan has more steps than STEAD_PLAN_INLINE_MAX_STEPS keeps only a
-- window of it in workflow history; the whole plan lives here, keyed by the hash
-- of exactly what is stored, so the row a run reads is the plan policy decided.
-- `steps` holds {"step": ..., "execution": ...} objects ordered so that every
-- dependency comes before its dependant; `referenced` maps each step whose output
-- a later step refers to ($ref) to [its index, the index of the last such step],
-- so a window can tell which outputs the windows after it still need.

CREATE TABLE plans (
    tenant      text NOT NULL CHECK (tenant <> ''),
    plan_hash   text NOT NULL CHECK (plan_hash ~ '^[0-9a-f]{64}$'),
    steps       jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array'),
    step_count  integer NOT NULL CHECK (step_count >= 1),
    referenced  jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(referenced) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, plan_hash),
    CHECK (jsonb_array_length(steps) = step_count)
);

-- A stored plan is what policy decided and approvers signed off on (by its hash):
-- never rewritten. Old rows may be deleted once no run refers to them.
REVOKE UPDATE, TRUNCATE ON plans FROM stead_app;

ALTER TABLE plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE plans FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON plans
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
