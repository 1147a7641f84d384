-- Runs once, when the postgres container starts on an empty data volume
-- (docker-entrypoint-initdb.d), as the superuser, through psql.
--
-- stead: Stead's own database; migrations run as the owner (STEAD_POSTGRES_ADMIN_DSN)
-- and the worker connects as stead_app, which owns nothing.
-- temporal, temporal_visibility: Temporal's stores; auto-setup creates their schemas.

CREATE DATABASE stead;
CREATE DATABASE temporal;
CREATE DATABASE temporal_visibility;

-- The app role's password comes from the container environment (psql 15+ \getenv),
-- so no secret is written in this file. An unset variable fails the init loudly.
\getenv stead_app_password STEAD_APP_PASSWORD
SELECT format('CREATE ROLE stead_app LOGIN PASSWORD %L', :'stead_app_password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'stead_app')
\gexec

REVOKE ALL ON DATABASE stead FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE stead TO stead_app;
