-- Term vectors: the lexical half of recall is now scored by the vector index (a sparse
-- BM25 vector beside each embedding, stead/vector/terms.py) instead of a full-text
-- statement that read every version sharing a word with the question.
--
-- A version indexed before this migration has a point with its embedding but no term
-- vector: index_state 'terms' says so. `stead memory reindex` (and the scheduled
-- reindex) gives those points their term vectors without embedding anything again,
-- then marks them 'indexed'. Until a tenant has none left (nor any 'pending' version),
-- recall ranks its exact terms in Postgres as before: slower, never less complete.
ALTER TABLE memory_versions DROP CONSTRAINT memory_versions_index_state_check;
ALTER TABLE memory_versions ADD CONSTRAINT memory_versions_index_state_check
    CHECK (index_state IN ('pending', 'terms', 'indexed', 'stale', 'absent'));

DROP INDEX memory_versions_index_work;
CREATE INDEX memory_versions_index_work ON memory_versions (tenant, index_state)
    WHERE index_state IN ('pending', 'terms', 'stale');

-- Every tenant's rows, so the owner steps out of forced row-level security for this
-- one statement (inside the migration's transaction; the guard trigger still runs).
ALTER TABLE memory_versions NO FORCE ROW LEVEL SECURITY;
UPDATE memory_versions SET index_state = 'terms' WHERE index_state = 'indexed';
ALTER TABLE memory_versions FORCE ROW LEVEL SECURITY;
