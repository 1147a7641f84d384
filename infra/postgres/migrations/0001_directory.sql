-- The tenant directory. Later migrations add principals, groups and tenant-scoped
-- tables with row-level security; this one exists so every fresh database has a
-- table the app role can prove it reads and writes without owning it.
CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    display_name text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
