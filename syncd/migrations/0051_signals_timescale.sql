-- signals.tp_capital_signals storage: a TimescaleDB hypertable where the extension can be loaded,
-- else the native monthly range partitions 0005 already created (that path changes nothing).
--
-- TimescaleDB path (taken only when `timescaledb` is in pg_available_extensions AND in
-- shared_preload_libraries: CREATE EXTENSION fails without the preload, which would abort the
-- migration). This file runs in one transaction (syncd.migrate), so either every step below
-- happens or none does. CREATE EXTENSION is transactional and may run from a DO block (EXECUTE).
--   * create_hypertable cannot take a natively partitioned table, so the table is rebuilt: a plain
--     copy (same columns, defaults, primary key (ts, signal_key) and index names), converted,
--     filled from the partitioned table, then swapped in under the same name.
--   * chunk_time_interval 7 days: ~a week of signals per chunk, small enough that the nightly
--     reconcile (signals of the last `reconcile_days` = 7 days) touches 1-2 uncompressed chunks.
--   * compression after 30 days (segmentby channel, orderby ts DESC, signal_key: every primary-key
--     column, so uniqueness checks on compressed chunks stay cheap): well past the lag-window
--     rescan and reconcile horizon, so later upserts into compressed chunks stay rare.
--   * retention 5 years: chunks whose newest row is older are dropped. QuestDB keeps its own
--     copy. The nightly reconcile (`reconcile_days`, default 7) and `syncd verify` (last N days)
--     compare recent days only; keep both far below 5 years, or dropped days would be reported
--     missing (verify) or copied back (reconcile).
--   * signals.ensure_partitions returns 0 for a table that is not natively partitioned, so the
--     sink's per-batch call keeps working against the hypertable (chunks are created on insert).
--
-- Native path (this repository's test machines): 0005 already partitions by month and the sink
-- creates partitions ahead; the only action is to make sure the usual window of partitions exists.

-- Partitions only for natively partitioned tables; a hypertable (or plain table) needs none.
CREATE OR REPLACE FUNCTION signals.ensure_partitions(tbl regclass, lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    month   timestamptz := date_trunc('month', lo AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    created integer := 0;
    part    text;
    rel     text := (SELECT relname FROM pg_class WHERE oid = tbl);
    nsp     text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = tbl);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = tbl) THEN
        RETURN 0;
    END IF;
    WHILE month <= hi LOOP
        part := format('%s_p%s', rel, to_char(month AT TIME ZONE 'UTC', 'YYYYMM'));
        IF to_regclass(format('%I.%I', nsp, part)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           nsp, part, tbl, month, month + interval '1 month');
            created := created + 1;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END $$;

DO $$
DECLARE
    timescale boolean := EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
                         AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%';
    dep       record;
    views     text[] := '{}';
BEGIN
    IF NOT timescale THEN
        -- Native partitions: already in place since 0005; keep the usual window present.
        PERFORM signals.ensure_partitions('signals.tp_capital_signals', now() - interval '1 month',
                                          now() + interval '3 months');
        RAISE NOTICE 'timescaledb not available: signals.tp_capital_signals stays natively partitioned';
        RETURN;
    END IF;

    EXECUTE 'CREATE EXTENSION IF NOT EXISTS timescaledb';
    IF EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                WHERE hypertable_schema = 'signals' AND hypertable_name = 'tp_capital_signals') THEN
        RETURN;
    END IF;

    EXECUTE 'CREATE TABLE signals.tp_capital_signals_ht
                 (LIKE signals.tp_capital_signals INCLUDING DEFAULTS INCLUDING CONSTRAINTS)';
    EXECUTE 'ALTER TABLE signals.tp_capital_signals_ht ADD PRIMARY KEY (ts, signal_key)';
    EXECUTE $q$SELECT create_hypertable('signals.tp_capital_signals_ht', 'ts',
                                        chunk_time_interval => interval '7 days',
                                        create_default_indexes => false)$q$;  -- the PK leads with ts
    EXECUTE 'INSERT INTO signals.tp_capital_signals_ht SELECT * FROM signals.tp_capital_signals';
    -- Views on the table (reporting.signals_by_channel, ...) are re-pointed with CREATE OR REPLACE
    -- (same definition text, now resolving to the hypertable), keeping their grants and comments.
    FOR dep IN SELECT DISTINCT v.oid, format('%I.%I', n.nspname, v.relname) AS name,
                      pg_get_viewdef(v.oid) AS def
                 FROM pg_depend d
                 JOIN pg_rewrite r ON r.oid = d.objid
                 JOIN pg_class v ON v.oid = r.ev_class
                 JOIN pg_namespace n ON n.oid = v.relnamespace
                WHERE d.classid = 'pg_rewrite'::regclass
                  AND d.refobjid = 'signals.tp_capital_signals'::regclass
                  AND v.oid <> d.refobjid
                ORDER BY v.oid LOOP
        views := views || ARRAY[dep.name, dep.def];
    END LOOP;
    EXECUTE 'ALTER TABLE signals.tp_capital_signals RENAME TO tp_capital_signals_native';
    EXECUTE 'ALTER TABLE signals.tp_capital_signals_ht RENAME TO tp_capital_signals';
    FOR i IN 1 .. coalesce(array_length(views, 1), 0) / 2 LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', views[2 * i - 1], views[2 * i]);
    END LOOP;
    EXECUTE 'DROP TABLE signals.tp_capital_signals_native';  -- its partitions and index names go with it
    EXECUTE 'ALTER INDEX signals.tp_capital_signals_ht_pkey RENAME TO tp_capital_signals_pkey';
    EXECUTE 'CREATE INDEX tp_capital_signals_asset_ts_idx ON signals.tp_capital_signals (asset, ts DESC)';
    EXECUTE 'CREATE INDEX tp_capital_signals_channel_ts_idx ON signals.tp_capital_signals (channel, ts DESC)';
    EXECUTE 'CREATE INDEX tp_capital_signals_ingested_idx ON signals.tp_capital_signals (ingested_at)';

    EXECUTE $q$ALTER TABLE signals.tp_capital_signals SET (timescaledb.compress,
                   timescaledb.compress_segmentby = 'channel', timescaledb.compress_orderby = 'ts DESC, signal_key')$q$;
    EXECUTE $q$SELECT add_compression_policy('signals.tp_capital_signals', interval '30 days')$q$;
    EXECUTE $q$SELECT add_retention_policy('signals.tp_capital_signals', interval '5 years')$q$;
END $$;
