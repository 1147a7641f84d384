-- Time-series memory: observations over time (a stock level, a mismatch count per SKU).
--
-- One row per point: a tenant's series name, labels (jsonb, e.g. {"sku": "A-1"}), when
-- it was true (observed_at), its value, when Stead learned it (recorded_at) and who
-- wrote it from which run and step. The app role may insert and read, never change or
-- delete a point: a recorded observation is a fact.
--
-- Downsampling keeps aggregates exact: every row carries samples, sum, min, max and
-- last (a raw point: 1, v, v, v, v). observations_compact() replaces raw points older
-- than a series' raw_days by one row per label set and hour or day (resolution 'hour'
-- or 'day') whose columns combine theirs, and drops rows older than keep_days. Reading
-- then combines rows the same way whatever their resolution, so avg/min/max/sum/count
-- over a window are the same before and after compaction (last is the last bucket's).
--
-- Retention lives in observation_retention, per tenant and series ('*' is the tenant's
-- default; no row: keep everything raw). The compaction function is SECURITY DEFINER
-- (it deletes, which the app role cannot), and like every reader here it is bound by
-- forced row-level security to the tenant the caller's transaction set.

CREATE TABLE observations (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant      text NOT NULL CHECK (tenant <> ''),
    series      text NOT NULL CHECK (series ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    labels      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    observed_at timestamptz NOT NULL,
    value       double precision NOT NULL,
    resolution  text NOT NULL DEFAULT 'raw' CHECK (resolution IN ('raw', 'hour', 'day')),
    samples     bigint NOT NULL DEFAULT 1 CHECK (samples >= 1),
    sum_value   double precision NOT NULL,
    min_value   double precision NOT NULL,
    max_value   double precision NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    principal   text NOT NULL,
    workflow_id text,
    run_id      text,
    step_id     text,
    -- The writer's idempotency key (<workflow id>/<step id>): a retried observe finds
    -- its first point instead of adding another. Per tenant, like memory_versions.
    request_key text,
    UNIQUE (tenant, request_key)
);
CREATE INDEX observations_window ON observations (tenant, series, observed_at);

CREATE TABLE observation_retention (
    tenant     text NOT NULL CHECK (tenant <> ''),
    series     text NOT NULL CHECK (series = '*' OR series ~ '^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$'),
    raw_days   integer NOT NULL CHECK (raw_days >= 1),
    rollup     text NOT NULL CHECK (rollup IN ('hour', 'day')),
    keep_days  integer CHECK (keep_days IS NULL OR keep_days >= raw_days),
    updated_at timestamptz NOT NULL DEFAULT now(),
    updated_by text NOT NULL,
    PRIMARY KEY (tenant, series)
);

REVOKE UPDATE, DELETE, TRUNCATE ON observations FROM stead_app;
CREATE TRIGGER observations_no_truncate
    BEFORE TRUNCATE ON observations
    FOR EACH STATEMENT EXECUTE FUNCTION stead_append_only();
REVOKE DELETE, TRUNCATE ON observation_retention FROM stead_app;

ALTER TABLE observations ENABLE ROW LEVEL SECURITY;
ALTER TABLE observations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON observations
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

ALTER TABLE observation_retention ENABLE ROW LEVEL SECURITY;
ALTER TABLE observation_retention FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON observation_retention
    USING (tenant = current_setting('app.tenant_id', true))
    WITH CHECK (tenant = current_setting('app.tenant_id', true));

-- The app role reaches deletion only through this function and the tenant's own
-- retention rows (keep_days >= raw_days >= 1), as it reaches erasure of memories.
-- Apply the current tenant's retention at `now_at`: returns (rolled-up raw points,
-- rollup rows written, rows dropped past keep_days). Runs as the owner, which forced
-- RLS still confines to app.tenant_id; with no tenant set it sees nothing.
CREATE FUNCTION observations_compact(now_at timestamptz DEFAULT now())
RETURNS TABLE (rolled_up bigint, rollups bigint, dropped bigint)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public
AS $$
DECLARE
    me text := current_setting('app.tenant_id', true);
    r record;
    n_old bigint;
    n_new bigint;
    n_gone bigint;
BEGIN
    rolled_up := 0; rollups := 0; dropped := 0;
    IF me IS NULL OR me = '' THEN
        RETURN NEXT;
        RETURN;
    END IF;
    -- A caller may compact as of an earlier time (tests, a late pass), never a later
    -- one: that would drop points the retention still keeps.
    IF now_at > now() THEN
        RAISE EXCEPTION 'observations_compact: % is in the future', now_at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR r IN
        SELECT DISTINCT o.series,
               coalesce(s.raw_days, d.raw_days) AS raw_days,
               coalesce(s.rollup, d.rollup) AS rollup,
               CASE WHEN s.series IS NOT NULL THEN s.keep_days ELSE d.keep_days END AS keep_days
        FROM public.observations o
        LEFT JOIN public.observation_retention s ON s.tenant = me AND s.series = o.series
        LEFT JOIN public.observation_retention d ON d.tenant = me AND d.series = '*'
        WHERE o.tenant = me AND (s.series IS NOT NULL OR d.series IS NOT NULL)
    LOOP
        IF r.keep_days IS NOT NULL THEN
            DELETE FROM public.observations
            WHERE tenant = me AND series = r.series
              AND observed_at < now_at - make_interval(days => r.keep_days);
            GET DIAGNOSTICS n_gone = ROW_COUNT;
            dropped := dropped + n_gone;
        END IF;
        WITH old AS (
            DELETE FROM public.observations
            WHERE tenant = me AND series = r.series AND resolution = 'raw'
              AND observed_at < date_trunc(r.rollup, now_at - make_interval(days => r.raw_days))
            RETURNING *
        ), buckets AS (
            INSERT INTO public.observations (tenant, series, labels, observed_at, value,
                resolution, samples, sum_value, min_value, max_value, principal)
            SELECT me, r.series, labels, date_trunc(r.rollup, observed_at),
                   (array_agg(value ORDER BY observed_at DESC, id DESC))[1],
                   r.rollup, sum(samples), sum(sum_value), min(min_value), max(max_value),
                   'service:stead-memory'
            FROM old
            GROUP BY labels, date_trunc(r.rollup, observed_at)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM buckets) INTO n_old, n_new;
        rolled_up := rolled_up + n_old;
        rollups := rollups + n_new;
    END LOOP;
    RETURN NEXT;
END;
$$;
REVOKE ALL ON FUNCTION observations_compact(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION observations_compact(timestamptz) TO stead_app;
