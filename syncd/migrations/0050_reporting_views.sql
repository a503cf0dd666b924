-- Reporting views over the mirrored data (read-only; dashboards, psql, the Node services).
-- `reporting.sync_health` (0006) is kept as is.
--
-- Indexes: none added. Every access path these views need already exists:
--   signals.tp_capital_signals  PK (ts, signal_key)  -> time-range scans (per partition, after pruning)
--                               (channel, ts DESC)  -> one channel over a time range
--                               (asset, ts DESC)    -> one asset over a time range
--   documentation_ideas (system_id), documentation_links (idea_id), documentation_files (idea_id)
--                               -> the per-system counts of documentation_systems_overview
-- documentation_links.system_id has no index: the Documentation file is a LowDB document (hundreds
-- of rows), so a scan is cheaper than an index; add one (and its @@index in schema.prisma) if it grows.
-- Views that aggregate a whole table scan it by design; time-bounded signal reports go through
-- reporting.signals_daily_between(from, to), which the planner inlines so `ts` bounds reach the index.

-- Signals per UTC day x channel x asset, soft-deleted rows (deleted_at set) excluded.
--
-- Targets hit are NOT computable from this table: a row holds only the levels the message
-- announced (buy range, targets, stop), never the prices the asset traded at afterwards. What is
-- exposed instead: how many signals carry each kind of level, and the average distance of the first
-- target and of the stop from the middle of the buy range, in percent (reward / risk as announced).
-- Entry = (buy_min + buy_max) / 2, or whichever of the two is present.
CREATE FUNCTION reporting.signals_daily_between(from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (
    day              date,
    channel          text,
    asset            text,
    signals          bigint,
    first_ts         timestamptz,
    last_ts          timestamptz,
    with_buy_range   bigint,
    with_target      bigint,
    with_stop        bigint,
    avg_target_1_pct double precision,
    avg_stop_pct     double precision
)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT (s.ts AT TIME ZONE 'UTC')::date,
           s.channel,
           s.asset,
           count(*),
           min(s.ts),
           max(s.ts),
           count(*) FILTER (WHERE s.buy_min IS NOT NULL OR s.buy_max IS NOT NULL),
           count(*) FILTER (WHERE coalesce(s.target_1, s.target_2, s.target_final) IS NOT NULL),
           count(*) FILTER (WHERE s.stop IS NOT NULL),
           avg((s.target_1 - e.entry) / e.entry * 100) FILTER (WHERE e.entry > 0),
           avg((s.stop - e.entry) / e.entry * 100) FILTER (WHERE e.entry > 0)
      FROM signals.tp_capital_signals s
      CROSS JOIN LATERAL (SELECT coalesce((s.buy_min + s.buy_max) / 2, s.buy_min, s.buy_max) AS entry) e
     WHERE s.ts >= from_ts AND s.ts < to_ts AND s.deleted_at IS NULL
     GROUP BY 1, 2, 3
$$;
COMMENT ON FUNCTION reporting.signals_daily_between(timestamptz, timestamptz) IS
    'reporting.signals_daily restricted to from_ts <= ts < to_ts (index-friendly; inlined by the planner).';

CREATE VIEW reporting.signals_daily AS
SELECT * FROM reporting.signals_daily_between('-infinity', 'infinity');

-- Signals per source x channel over all time (soft-deleted rows counted apart).
CREATE VIEW reporting.signals_by_channel AS
SELECT s.source,
       s.channel,
       count(*) FILTER (WHERE s.deleted_at IS NULL)                       AS signals,
       count(*) FILTER (WHERE s.deleted_at IS NOT NULL)                   AS deleted,
       count(DISTINCT s.asset) FILTER (WHERE s.deleted_at IS NULL)        AS assets,
       count(DISTINCT (s.ts AT TIME ZONE 'UTC')::date)
           FILTER (WHERE s.deleted_at IS NULL)                            AS active_days,
       min(s.ts) FILTER (WHERE s.deleted_at IS NULL)                      AS first_ts,
       max(s.ts) FILTER (WHERE s.deleted_at IS NULL)                      AS last_ts
  FROM signals.tp_capital_signals s
 GROUP BY s.source, s.channel;

-- Ideas by category x status x priority. `origin` says which file they come from: 'workspace'
-- (Idea Bank items) or 'documentation' (Documentation API ideas; that file's status/priority
-- vocabulary is wider, see 0004).
CREATE VIEW reporting.ideas_summary AS
SELECT 'workspace'::text                              AS origin,
       i.category,
       i.status,
       i.priority,
       count(*)                                       AS items,
       count(*) FILTER (WHERE cardinality(i.tags) > 0) AS tagged,
       min(i.created_at)                              AS oldest_created_at,
       max(i.created_at)                              AS newest_created_at,
       max(coalesce(i.updated_at, i.created_at))      AS last_changed_at
  FROM workspace.workspace_items i
 GROUP BY i.category, i.status, i.priority
UNION ALL
SELECT 'documentation'::text,
       d.category,
       d.status,
       d.priority,
       count(*),
       count(*) FILTER (WHERE cardinality(d.tags) > 0),
       min(d.created_at),
       max(d.created_at),
       max(coalesce(d.updated_at, d.created_at))
  FROM documentation.documentation_ideas d
 GROUP BY d.category, d.status, d.priority;

-- The same ideas counted along one dimension at a time: dimension in ('status', 'category',
-- 'priority'), value = that column's value. Totals per origin = sum of items of any one dimension.
CREATE VIEW reporting.ideas_totals AS
SELECT origin, dim.dimension, dim.value, sum(items)::bigint AS items
  FROM reporting.ideas_summary
 CROSS JOIN LATERAL (VALUES ('status', status), ('category', category), ('priority', priority))
       AS dim(dimension, value)
 GROUP BY origin, dim.dimension, dim.value;

-- Documentation systems with what references them. Links and files are counted once each:
--   ideas        documentation_ideas.system_id = system
--   open_ideas   those not in a final status (completed, rejected, done)
--   links        documentation_links attached to the system (system_id) or to one of its ideas
--   files        documentation_files attached to one of its ideas (files have no system_id column)
CREATE VIEW reporting.documentation_systems_overview AS
SELECT s.id,
       s.name,
       s.short_name,
       s.type,
       s.status,
       s.url,
       coalesce(i.ideas, 0)      AS ideas,
       coalesce(i.open_ideas, 0) AS open_ideas,
       (SELECT count(*) FROM documentation.documentation_links l
         WHERE l.system_id = s.id
            OR l.idea_id IN (SELECT d.id FROM documentation.documentation_ideas d WHERE d.system_id = s.id)
       )                         AS links,
       (SELECT count(*) FROM documentation.documentation_files f
         WHERE f.idea_id IN (SELECT d.id FROM documentation.documentation_ideas d WHERE d.system_id = s.id)
       )                         AS files,
       coalesce(s.updated_at, s.created_at) AS last_changed_at
  FROM documentation.documentation_systems s
  LEFT JOIN LATERAL (
        SELECT count(*) AS ideas,
               count(*) FILTER (WHERE d.status NOT IN ('completed', 'rejected', 'done')) AS open_ideas
          FROM documentation.documentation_ideas d
         WHERE d.system_id = s.id) i ON true;
