-- Which run was admitted for which tenant (stead/runs/scope.py).
--
-- Activities trust the tenant in their input only if the run that calls them was
-- admitted for it. `runs.open` stamps the record with the Temporal run id of the
-- execution it admitted (the first run of the chain; continue-as-new keeps its
-- first_run_id) and clears the stamp when a reused workflow id is refused. Every
-- tenant-taking activity looks its server-set workflow id up here under the input's
-- tenant: row-level security hides another tenant's record, so "no row" and "another
-- tenant's run" read the same, refused. NULL means recorded but not admitted (a
-- refused run still records and audits its refusal). Binding the stamp to the run id
-- means a new execution that reuses an admitted run's workflow id inherits nothing.
--
-- `admission_mac` is an HMAC-SHA256 of (workflow id, tenant, run id) with the workers'
-- integrity secret: the app role can write this table, but a stamp it forges without
-- the secret admits nothing on a worker that holds it.

ALTER TABLE runs ADD COLUMN admitted_run_id text;
ALTER TABLE runs ADD COLUMN admission_mac text;
