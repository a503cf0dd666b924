-- The rollup fold of 0055/0093 aggregates a statement's rows once, at the finest grain.
--
-- Every write to signals.tp_capital_signals runs the fold in its trigger. 0055's fold cost about
-- 390 ms per 100k inserted rows, a third of a 100k-row first load (~1.13 s): a materialized CTE of
-- per-row values (158 ms, ~70 ms of it the two ::numeric casts) that three HashAggregates over all
-- 100k rows then read (day x channel x asset 77 ms, source x channel x asset 47 ms, source x channel
-- x day 51 ms). Now one aggregate over the rows, grouped by (sign, day, source, channel, asset, live)
-- (a handful of groups per statement), holds everything the three rollups need: counts, bounds and
-- the numeric sums of the two percentages; the three rollups' deltas are sums of its sums, mins of
-- its mins and maxes of its maxes. Grouping by the sign as well leaves no per-row `sign *` (a numeric
-- multiplication per row for the sums) and no sign-split FILTER. Each row's percentage is still cast
-- to numeric by itself before it is summed (a later DELETE subtracts the same per-row values, grouped
-- differently), so adding and subtracting never drifts. The day is grouped as date_bin's integer
-- arithmetic on ts and turned into a date per group, not per row (AT TIME ZONE converts a row twice);
-- counts are count(expr) rather than FILTERed sums. The bound-recompute and empty-group statements
-- of an UPDATE or DELETE read only keys and bounds, so their fine aggregate computes no sums.
-- The figures are 0055's, bit for bit (numeric sums are exact in any order): the rollups are kept,
-- only the functions change. The timings before and after are in the commit that added this file.

CREATE OR REPLACE FUNCTION reporting.signal_fold_statements(src text, removes boolean) RETURNS SETOF text
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    -- The statement's rows (`src` yields (sign, <signal row>)) per sign x day x source x channel x
    -- asset x liveness: %1$s the source, %2$s extra aggregates, %3$s extra FROM entries.
    fine text := $q$
        f AS (SELECT x.sign, (date_bin('1 day', x.ts, timestamptz '0001-01-01 00:00+00') AT TIME ZONE 'UTC')::date AS day,
                     x.source, x.channel, x.asset, x.deleted_at IS NULL AS live,
                     count(*) AS n, min(x.ts) AS lo, max(x.ts) AS hi%2$s
                FROM (%1$s) x%3$s
               GROUP BY x.sign, date_bin('1 day', x.ts, timestamptz '0001-01-01 00:00+00'), x.source, x.channel,
                        x.asset, x.deleted_at IS NULL)$q$;
    -- What the daily rollup adds up besides counts and bounds. count(expr) counts the non-NULL; a
    -- percentage exists where the row is priced (entry > 0) and has that level.
    figures text := $q$,
                     count(coalesce(x.buy_min, x.buy_max)) AS buy,
                     count(coalesce(x.target_1, x.target_2, x.target_final)) AS target,
                     count(x.stop) AS stop,
                     sum(CASE WHEN e.entry > 0 THEN ((x.target_1 - e.entry) / e.entry * 100)::numeric END) AS t1_sum,
                     count(CASE WHEN e.entry > 0 THEN x.target_1 END) AS t1_n,
                     sum(CASE WHEN e.entry > 0 THEN ((x.stop - e.entry) / e.entry * 100)::numeric END) AS stop_sum,
                     count(CASE WHEN e.entry > 0 THEN x.stop END) AS stop_n$q$;
    entry text := $q$
               CROSS JOIN LATERAL (SELECT coalesce((x.buy_min + x.buy_max) / 2, x.buy_min, x.buy_max) AS entry) e$q$;
    -- dd: per day x channel x asset (live rows); cd: per source x channel x day; ad: per source x
    -- channel x asset (live rows). new_/gone_ min and max: the bounds the statement's new (+1) and
    -- old (-1) live rows had. %1$s: the daily figures, or nothing.
    derived text := $q$,
        dd AS (SELECT day, channel, asset, sum(sign * n)::bigint AS signals,
                      min(lo) FILTER (WHERE sign > 0) AS new_min, max(hi) FILTER (WHERE sign > 0) AS new_max,
                      min(lo) FILTER (WHERE sign < 0) AS gone_min, max(hi) FILTER (WHERE sign < 0) AS gone_max%1$s
                 FROM f WHERE live GROUP BY day, channel, asset),
        cd AS (SELECT source, channel, day,
                      coalesce(sum(sign * n) FILTER (WHERE live), 0)::bigint AS signals,
                      coalesce(sum(sign * n) FILTER (WHERE NOT live), 0)::bigint AS deleted,
                      min(lo) FILTER (WHERE sign > 0 AND live) AS new_min,
                      max(hi) FILTER (WHERE sign > 0 AND live) AS new_max,
                      min(lo) FILTER (WHERE sign < 0 AND live) AS gone_min,
                      max(hi) FILTER (WHERE sign < 0 AND live) AS gone_max
                 FROM f GROUP BY source, channel, day),
        ad AS (SELECT source, channel, asset, sum(sign * n)::bigint AS signals
                 FROM f WHERE live GROUP BY source, channel, asset)$q$;
    daily_figures text := $q$,
                      sum(sign * buy)::bigint AS with_buy_range, sum(sign * target)::bigint AS with_target,
                      sum(sign * stop)::bigint AS with_stop,
                      coalesce(sum(sign * t1_sum), 0) AS t1_sum, sum(sign * t1_n)::bigint AS t1_n,
                      coalesce(sum(sign * stop_sum), 0) AS stop_sum, sum(sign * stop_n)::bigint AS stop_n$q$;
    -- The deltas with every figure (the additive statement), and with keys and bounds only (the
    -- bound-recompute and empty-group statements read nothing else).
    deltas text := format(fine, src, figures, entry) || format(derived, daily_figures);
    bounds text := format(fine, src, '', '') || format(derived, '');
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
        $q$, bounds, stale_min, stale_max, one_day, same_daily, same_chan);
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
        $q$, bounds, same_daily, same_chan, same_asset);
END $fn$;

-- The three trigger functions of 0093 written out again from the new statements (same guards;
-- the triggers keep pointing at them). A TimescaleDB hypertable has no rollup triggers: nothing to do.
-- enable_sort = off: PL/pgSQL plans each statement once per session, from whichever transition table
-- came first and without statistics (the planner takes a tenth of the rows as groups). Past 60k-70k
-- rows at the default work_mem it then sorts the whole statement (on disk, ~+100 ms per 100k rows)
-- to group it, where a hash table of the handful of real groups is right at any size (and spills to
-- disk like a sort would, should a statement really hold that many groups).
DO $$
DECLARE
    read_columns text := 'ts, channel, asset, source, deleted_at IS NULL, buy_min, buy_max, target_1, '
                         'target_2 IS NULL, target_final IS NULL, stop';
    op record;
    body text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgname = 'signal_rollups_ins' AND tgrelid = 'signals.tp_capital_signals'::regclass) THEN
        RETURN;
    END IF;
    FOR op IN SELECT * FROM (VALUES
            ('insert', 'SELECT 1 AS sign, * FROM new_rows', false, 'NOT EXISTS (SELECT FROM new_rows)'),
            ('update', 'SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1, * FROM old_rows', true,
             format('NOT EXISTS (SELECT %1$s FROM new_rows EXCEPT ALL SELECT %1$s FROM old_rows)', read_columns)),
            ('delete', 'SELECT -1 AS sign, * FROM old_rows', true, 'NOT EXISTS (SELECT FROM old_rows)')
        ) AS o(name, src, removes, nothing)
    LOOP
        SELECT format(E'DECLARE\n    folded bigint;\nBEGIN\n    IF %s THEN\n        RETURN NULL;\n    END IF;\n%s\n'
                      || E'    RETURN NULL;\nEND', op.nothing, string_agg(s || E'\n    INTO folded;', E'\n'))
          INTO body
          FROM reporting.signal_fold_statements(op.src, op.removes) AS s;
        EXECUTE format('CREATE OR REPLACE FUNCTION reporting.signal_rollups_%s() RETURNS trigger LANGUAGE plpgsql '
                       'SET enable_sort = off AS %L', op.name, body);
    END LOOP;
END $$;
