-- Which run chain first used each workflow id (stead.identity.admission).
--
-- A start token is narrowed to one workflow id and one request, and it sits in that
-- run's history, where any reader can lift it. Temporal lets a closed workflow id be
-- started again, so the lifted token would start the same request again. runs.open
-- claims the workflow id here for the run chain (the first run id of the chain, set
-- by the Temporal server) before anything else; a start whose chain finds the id
-- claimed by another chain is refused and writes nothing to the first run's record.
-- The app role may insert and read, never change or delete a claim. A row is also the
-- run's authenticated record: which tenant and principal the chain was admitted for
-- (admitted), and whether a start token proved it (authenticated, token_id).

CREATE TABLE run_starts (
    workflow_id   text PRIMARY KEY,
    tenant        text NOT NULL CHECK (tenant <> ''),
    chain_id      text NOT NULL CHECK (chain_id <> ''),
    principal     text NOT NULL,
    admitted      boolean NOT NULL,
    authenticated boolean NOT NULL DEFAULT false,
    token_id      text,
    claimed_at    timestamptz NOT NULL DEFAULT now()
);

REVOKE UPDATE, DELETE, TRUNCATE ON run_starts FROM stead_app;

ALTER TABLE run_starts ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_starts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON run_starts
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));
