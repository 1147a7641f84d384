-- Audit appends made by an activity are written at most once per activity call.
--
-- Temporal retries an activity whose completion it never recorded: the worker died (or
-- the completion was lost) after the row committed. Without a key the retry appended a
-- second row (approval_accepted twice). The worker derives the key from the activity's
-- identity (workflow id, run id, activity id: the same on every retry of one scheduled
-- activity); an append that finds its key already in the tenant's chain returns that row.
--
-- The key is not covered by the chain's MAC (stead.audit.chain): rows written before
-- this migration have none, and it says nothing about what happened, only which call
-- wrote the row. NULLs are distinct, so appends without a key are never constrained.
ALTER TABLE audit_events ADD COLUMN idempotency_key text;
ALTER TABLE audit_events
    ADD CONSTRAINT audit_events_idempotency UNIQUE (tenant, idempotency_key);
