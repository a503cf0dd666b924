-- All-time signal reports from rollups kept current in the writing transaction.
--
-- reporting.signals_daily and reporting.signals_by_channel (0050) aggregated the whole signals table
-- on every query: 15-17 s at 10M signals. Three rollup tables now hold those aggregates, and
-- statement-level triggers with transition tables (one set-based pass per statement, so a 50k-row
-- COPY costs one aggregation of its 50k rows) fold every INSERT, UPDATE and DELETE into them inside
-- the same transaction: a report never sees a batch half applied, and a rolled back batch leaves the
-- rollups as they were.
--
--   signals_daily_rollup          (day, channel, asset)   -> reporting.signals_daily
--   signals_channel_day_rollup    (source, channel, day)  -> signals / deleted / active days / first, last ts
--   signals_channel_asset_rollup  (source, channel, asset) -> distinct assets of reporting.signals_by_channel
--
-- Counts and sums are additive: a statement adds what its new rows bring and subtracts what its old
-- rows took (an UPDATE does both; a soft delete moves a row from `signals` to `deleted`). Averages
-- are kept as numeric sum and count, so adding and subtracting the same values never drifts; the writer
-- stores their quotient. first_ts / last_ts only grow under inserts (least/greatest); when a statement removes the
-- row holding a group's minimum or maximum and brings no row at least as far out, that group's bound
-- is recomputed from the signals of its one day (a primary-key range scan). Groups left empty are
-- deleted, so the views return exactly the rows the full scans returned.
--
-- reporting.signals_daily_between (ranges, inlined, prunes partitions) still reads the signals.
-- Where 0051 made the table a TimescaleDB hypertable, which accepts no transition-table trigger,
-- nothing here is installed and the views keep scanning (continuous aggregates would be the way).

CREATE TABLE reporting.signals_daily_rollup (
    day              date   NOT NULL,
    channel          text,
    asset            text,
    signals          bigint NOT NULL,
    first_ts         timestamptz,
    last_ts          timestamptz,
    with_buy_range   bigint NOT NULL,
    with_target      bigint NOT NULL,
    with_stop        bigint NOT NULL,
    target_1_pct_sum numeric NOT NULL,
    target_1_pct_n   bigint NOT NULL,
    stop_pct_sum     numeric NOT NULL,
    stop_pct_n       bigint NOT NULL,
    -- sum / n, kept by the writer so that reading 300k groups divides nothing
    avg_target_1_pct double precision,
    avg_stop_pct     double precision
);
CREATE UNIQUE INDEX signals_daily_rollup_key ON reporting.signals_daily_rollup (day, channel, asset) NULLS NOT DISTINCT;

CREATE TABLE reporting.signals_channel_day_rollup (
    source   text,
    channel  text,
    day      date   NOT NULL,
    signals  bigint NOT NULL,
    deleted  bigint NOT NULL,
    first_ts timestamptz,
    last_ts  timestamptz
);
CREATE UNIQUE INDEX signals_channel_day_rollup_key
    ON reporting.signals_channel_day_rollup (source, channel, day) NULLS NOT DISTINCT;

CREATE TABLE reporting.signals_channel_asset_rollup (
    source  text,
    channel text,
    asset   text,
    signals bigint NOT NULL
);
CREATE UNIQUE INDEX signals_channel_asset_rollup_key
    ON reporting.signals_channel_asset_rollup (source, channel, asset) NULLS NOT DISTINCT;

-- The statements folding one statement's rows into the rollups, in order: one for an INSERT or
-- COPY, three when rows were removed too (bounds, then emptied groups, each seeing the one before).
-- `src` yields (sign, <signal row>): +1 for new rows, -1 for old rows. The trigger EXECUTEs them
-- itself: a transition table is visible only to the trigger function's own queries.
CREATE FUNCTION reporting.signal_fold_statements(src text, removes boolean) RETURNS SETOF text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    -- Per-row contributions: live rows (deleted_at IS NULL) count as signals, others as deleted.
    -- dd: per day x channel x asset (live rows); cd: per source x channel x day; ad: per source x
    -- channel x asset. new_/gone_ min and max: the bounds the statement's new and old live rows had.
    deltas text := format($q$
        c AS (SELECT x.sign, x.ts, x.channel, x.asset, x.source, (x.ts AT TIME ZONE 'UTC')::date AS day,
                     x.deleted_at IS NULL AS live,
                     x.buy_min IS NOT NULL OR x.buy_max IS NOT NULL AS has_buy,
                     coalesce(x.target_1, x.target_2, x.target_final) IS NOT NULL AS has_target,
                     x.stop IS NOT NULL AS has_stop,
                     CASE WHEN e.entry > 0 THEN ((x.target_1 - e.entry) / e.entry * 100)::numeric END AS t1_pct,
                     CASE WHEN e.entry > 0 THEN ((x.stop - e.entry) / e.entry * 100)::numeric END AS stop_pct,
                     e.entry > 0 AS priced
                FROM (%s) x
               CROSS JOIN LATERAL (SELECT coalesce((x.buy_min + x.buy_max) / 2, x.buy_min, x.buy_max) AS entry) e),
        dd AS (SELECT day, channel, asset,
                      sum(sign) AS signals,
                      min(ts) FILTER (WHERE sign > 0) AS new_min, max(ts) FILTER (WHERE sign > 0) AS new_max,
                      min(ts) FILTER (WHERE sign < 0) AS gone_min, max(ts) FILTER (WHERE sign < 0) AS gone_max,
                      coalesce(sum(sign) FILTER (WHERE has_buy), 0) AS with_buy_range,
                      coalesce(sum(sign) FILTER (WHERE has_target), 0) AS with_target,
                      coalesce(sum(sign) FILTER (WHERE has_stop), 0) AS with_stop,
                      coalesce(sum(sign * t1_pct) FILTER (WHERE priced AND t1_pct IS NOT NULL), 0) AS t1_sum,
                      coalesce(sum(sign) FILTER (WHERE priced AND t1_pct IS NOT NULL), 0) AS t1_n,
                      coalesce(sum(sign * stop_pct) FILTER (WHERE priced AND stop_pct IS NOT NULL), 0) AS stop_sum,
                      coalesce(sum(sign) FILTER (WHERE priced AND stop_pct IS NOT NULL), 0) AS stop_n
                 FROM c WHERE live GROUP BY day, channel, asset),
        cd AS (SELECT source, channel, day,
                      coalesce(sum(sign) FILTER (WHERE live), 0) AS signals,
                      coalesce(sum(sign) FILTER (WHERE NOT live), 0) AS deleted,
                      min(ts) FILTER (WHERE sign > 0 AND live) AS new_min,
                      max(ts) FILTER (WHERE sign > 0 AND live) AS new_max,
                      min(ts) FILTER (WHERE sign < 0 AND live) AS gone_min,
                      max(ts) FILTER (WHERE sign < 0 AND live) AS gone_max
                 FROM c GROUP BY source, channel, day),
        ad AS (SELECT source, channel, asset, sum(sign) AS signals FROM c WHERE live GROUP BY source, channel, asset)
        $q$, src);
    -- A bound is recomputed when a removed live row held it and no new live row reaches as far.
    stale_min text := 'd.gone_min <= r.first_ts AND (d.new_min IS NULL OR d.new_min > d.gone_min)';
    stale_max text := 'd.gone_max >= r.last_ts AND (d.new_max IS NULL OR d.new_max < d.gone_max)';
    -- The live signals of one rollup group's day (a primary-key range scan).
    one_day text := $q$
        FROM signals.tp_capital_signals t
        WHERE t.ts >= r.day::timestamp AT TIME ZONE 'UTC' AND t.ts < (r.day + 1)::timestamp AT TIME ZONE 'UTC'
          AND t.deleted_at IS NULL AND t.channel IS NOT DISTINCT FROM r.channel
        $q$;
    same_daily text := 'r.day = d.day AND r.channel IS NOT DISTINCT FROM d.channel AND r.asset IS NOT DISTINCT FROM d.asset';
    same_chan text := 'r.day = d.day AND r.channel IS NOT DISTINCT FROM d.channel AND r.source IS NOT DISTINCT FROM d.source';
    same_asset text := 'r.source IS NOT DISTINCT FROM d.source AND r.channel IS NOT DISTINCT FROM d.channel '
                       'AND r.asset IS NOT DISTINCT FROM d.asset';
BEGIN
    RETURN NEXT format($q$
        WITH %s,
        daily AS (
            INSERT INTO reporting.signals_daily_rollup AS r
            SELECT day, channel, asset, signals, new_min, new_max, with_buy_range, with_target, with_stop,
                   t1_sum, t1_n, stop_sum, stop_n, t1_sum / nullif(t1_n, 0), stop_sum / nullif(stop_n, 0)
              FROM dd
            ON CONFLICT (day, channel, asset) DO UPDATE
               SET signals = r.signals + excluded.signals,
                   first_ts = least(r.first_ts, excluded.first_ts),
                   last_ts = greatest(r.last_ts, excluded.last_ts),
                   with_buy_range = r.with_buy_range + excluded.with_buy_range,
                   with_target = r.with_target + excluded.with_target,
                   with_stop = r.with_stop + excluded.with_stop,
                   target_1_pct_sum = r.target_1_pct_sum + excluded.target_1_pct_sum,
                   target_1_pct_n = r.target_1_pct_n + excluded.target_1_pct_n,
                   stop_pct_sum = r.stop_pct_sum + excluded.stop_pct_sum,
                   stop_pct_n = r.stop_pct_n + excluded.stop_pct_n,
                   avg_target_1_pct = (r.target_1_pct_sum + excluded.target_1_pct_sum)
                                      / nullif(r.target_1_pct_n + excluded.target_1_pct_n, 0),
                   avg_stop_pct = (r.stop_pct_sum + excluded.stop_pct_sum) / nullif(r.stop_pct_n + excluded.stop_pct_n, 0)
            RETURNING 1),
        assets AS (
            INSERT INTO reporting.signals_channel_asset_rollup AS r SELECT * FROM ad
            ON CONFLICT (source, channel, asset) DO UPDATE SET signals = r.signals + excluded.signals
            RETURNING 1),
        channels AS (
            INSERT INTO reporting.signals_channel_day_rollup AS r
            SELECT source, channel, day, signals, deleted, new_min, new_max FROM cd
            ON CONFLICT (source, channel, day) DO UPDATE
               SET signals = r.signals + excluded.signals,
                   deleted = r.deleted + excluded.deleted,
                   first_ts = least(r.first_ts, excluded.first_ts),
                   last_ts = greatest(r.last_ts, excluded.last_ts)
            RETURNING 1)
        SELECT (SELECT count(*) FROM daily) + (SELECT count(*) FROM assets) + (SELECT count(*) FROM channels)
        $q$, deltas);
    IF NOT removes THEN
        RETURN;
    END IF;
    RETURN NEXT format($q$
        WITH %1$s,
        daily AS (
            UPDATE reporting.signals_daily_rollup r
               SET first_ts = CASE WHEN %2$s THEN (SELECT min(t.ts) %4$s AND t.asset IS NOT DISTINCT FROM r.asset)
                                   ELSE r.first_ts END,
                   last_ts = CASE WHEN %3$s THEN (SELECT max(t.ts) %4$s AND t.asset IS NOT DISTINCT FROM r.asset)
                                  ELSE r.last_ts END
              FROM dd d
             WHERE %5$s AND r.signals > 0 AND (%2$s OR %3$s)
            RETURNING 1),
        channels AS (
            UPDATE reporting.signals_channel_day_rollup r
               SET first_ts = CASE WHEN %2$s THEN (SELECT min(t.ts) %4$s AND t.source IS NOT DISTINCT FROM r.source)
                                   ELSE r.first_ts END,
                   last_ts = CASE WHEN %3$s THEN (SELECT max(t.ts) %4$s AND t.source IS NOT DISTINCT FROM r.source)
                                  ELSE r.last_ts END
              FROM cd d
             WHERE %6$s AND r.signals > 0 AND (%2$s OR %3$s)
            RETURNING 1)
        SELECT (SELECT count(*) FROM daily) + (SELECT count(*) FROM channels)
        $q$, deltas, stale_min, stale_max, one_day, same_daily, same_chan);
    -- Groups this statement emptied go (a channel's day keeps its deleted count, without bounds).
    RETURN NEXT format($q$
        WITH %1$s,
        daily AS (DELETE FROM reporting.signals_daily_rollup r USING dd d WHERE %2$s AND r.signals = 0 RETURNING 1),
        assets AS (DELETE FROM reporting.signals_channel_asset_rollup r USING ad d
                    WHERE %4$s AND r.signals = 0 RETURNING 1),
        gone AS (DELETE FROM reporting.signals_channel_day_rollup r USING cd d
                  WHERE %3$s AND r.signals = 0 AND r.deleted = 0 RETURNING 1),
        unbounded AS (UPDATE reporting.signals_channel_day_rollup r SET first_ts = NULL, last_ts = NULL FROM cd d
                       WHERE %3$s AND r.signals = 0 AND r.deleted > 0 AND r.first_ts IS NOT NULL RETURNING 1)
        SELECT (SELECT count(*) FROM daily) + (SELECT count(*) FROM assets) + (SELECT count(*) FROM gone)
             + (SELECT count(*) FROM unbounded)
        $q$, deltas, same_daily, same_chan, same_asset);
END $fn$;

CREATE FUNCTION reporting.signal_rollups_trigger() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    src text := CASE TG_OP WHEN 'INSERT' THEN 'SELECT 1 AS sign, * FROM new_rows'
                           WHEN 'UPDATE' THEN 'SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1, * FROM old_rows'
                           ELSE 'SELECT -1 AS sign, * FROM old_rows' END;
    statement text;
BEGIN
    FOR statement IN SELECT reporting.signal_fold_statements(src, TG_OP <> 'INSERT') LOOP
        EXECUTE statement;
    END LOOP;
    RETURN NULL;
END $fn$;

DO $$
DECLARE
    statement text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'signals.tp_capital_signals'::regclass)
       AND EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'signals.tp_capital_signals is a hypertable: no rollups, the all-time views keep scanning';
        RETURN;
    END IF;
    CREATE TRIGGER signal_rollups_ins AFTER INSERT ON signals.tp_capital_signals
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION reporting.signal_rollups_trigger();
    CREATE TRIGGER signal_rollups_upd AFTER UPDATE ON signals.tp_capital_signals
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION reporting.signal_rollups_trigger();
    CREATE TRIGGER signal_rollups_del AFTER DELETE ON signals.tp_capital_signals
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION reporting.signal_rollups_trigger();

    -- Whatever the table already holds (an existing installation), folded in once.
    FOR statement IN SELECT reporting.signal_fold_statements('SELECT 1 AS sign, * FROM signals.tp_capital_signals',
                                                             false) LOOP
        EXECUTE statement;
    END LOOP;

    CREATE OR REPLACE VIEW reporting.signals_daily AS
    SELECT r.day, r.channel, r.asset, r.signals, r.first_ts, r.last_ts,
           r.with_buy_range, r.with_target, r.with_stop, r.avg_target_1_pct, r.avg_stop_pct
      FROM reporting.signals_daily_rollup r;

    CREATE OR REPLACE VIEW reporting.signals_by_channel AS
    SELECT d.source,
           d.channel,
           sum(d.signals)::bigint                    AS signals,
           sum(d.deleted)::bigint                    AS deleted,
           coalesce(max(a.assets), 0)                AS assets,
           count(*) FILTER (WHERE d.signals > 0)     AS active_days,
           min(d.first_ts)                           AS first_ts,
           max(d.last_ts)                            AS last_ts
      FROM reporting.signals_channel_day_rollup d
      LEFT JOIN (SELECT source, channel, count(asset) AS assets  -- count(DISTINCT asset) skips NULL too
                   FROM reporting.signals_channel_asset_rollup GROUP BY source, channel) a
             ON a.source IS NOT DISTINCT FROM d.source AND a.channel IS NOT DISTINCT FROM d.channel
     GROUP BY d.source, d.channel;
END $$;
