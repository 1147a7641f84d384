-- Principal tokens that were exposed in workflow history and are burned for good.
--
-- A token reaches history unnarrowed only through the `approve_signal` signal
-- (signals are always written; the `approve` update's validator refuses such a
-- token before it is written). Anyone who can read that history could lift the
-- token and narrow it for another approval, so the `identity.verify_approval`
-- activity records its biscuit revocation ids here, and every later approval whose
-- token carries one of them is refused (stead/identity/burned.py). A revocation id
-- is the signature of one block: burning the authority block's id burns the bare
-- token and every token narrowed from it.
--
-- Rows are facts: the app role may add and read them, never change or remove them.
-- The tenant is the token's own (proven by its signature), so the burn follows the
-- token wherever it is presented.

CREATE TABLE burned_tokens (
    tenant        text NOT NULL CHECK (tenant <> ''),
    revocation_id text NOT NULL CHECK (revocation_id ~ '^[0-9a-f]+$' AND length(revocation_id) BETWEEN 16 AND 256),
    token_id      text,
    workflow_id   text NOT NULL,
    reason        text NOT NULL,
    burned_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, revocation_id)
);

REVOKE UPDATE, DELETE, TRUNCATE ON burned_tokens FROM stead_app;

ALTER TABLE burned_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE burned_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON burned_tokens
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
