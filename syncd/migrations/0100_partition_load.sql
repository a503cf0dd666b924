-- Loading a month that has no partition yet: as a standalone table, indexed, then attached.
--
-- COPY into a live partition maintains its four btree indexes row by row and fires the parent's
-- statement-level rollup trigger. A batch of new rows that fills a month with no partition can
-- instead go into a plain table (no index), have its indexes built in one sorted pass each and be
-- attached: ATTACH PARTITION adopts indexes matching the parent's and skips its validation scan when a
-- CHECK constraint already implies the bound. The sink (syncd/sink/postgres.py) drives it:
--   signals.begin_partition_load   decides, under the lock ATTACH takes, and creates the table;
--   the sink COPYs the rows and builds the parent's indexes on it (primary key first);
--   signals.finish_partition_load  attaches it and drops the CHECK;
--   the sink then does what the parent's INSERT triggers would have done (ATTACH fires none).
-- The month's name and bounds come from one place, signals.month_partition, which ensure_partitions
-- now uses too.

-- The monthly partition of `tbl` holding `at`: its name (in tbl's schema) and bounds, UTC months.
-- The month is computed as a UTC timestamp, so its end is a month later in UTC whatever the
-- session's TimeZone (timestamptz + '1 month' counts in the session's zone, which shifts the bound
-- by the DST difference elsewhere).
CREATE FUNCTION signals.month_partition(tbl regclass, at timestamptz, OUT name text, OUT lo timestamptz,
                                        OUT hi timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT format('%s_p%s', c.relname, to_char(m, 'YYYYMM')), m AT TIME ZONE 'UTC',
           (m + interval '1 month') AT TIME ZONE 'UTC'
      FROM pg_class c, date_trunc('month', at AT TIME ZONE 'UTC') AS m
     WHERE c.oid = tbl
$$;

-- The schema of `tbl` (its partitions live there).
CREATE FUNCTION signals.schema_of(tbl regclass) RETURNS name
LANGUAGE sql STABLE AS $$
    SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl
$$;

-- Creates the monthly partitions of `tbl` covering [lo, hi]; idempotent; 0 for a table that is not
-- natively partitioned (0051: the sink calls it against a hypertable too). A missing month is created
-- under the parent's SHARE UPDATE EXCLUSIVE lock (the one ATTACH takes, which also makes the checks
-- after it see partitions other sessions committed meanwhile), so two writers, or a writer and a
-- partition load, reaching a new month at once queue instead of failing on the name.
CREATE OR REPLACE FUNCTION signals.ensure_partitions(tbl regclass, lo timestamptz, hi timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    nsp     name := signals.schema_of(tbl);
    p       record;
    created integer := 0;
    locked  boolean := false;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = tbl) THEN
        RETURN 0;  -- a hypertable or plain table needs none (0051)
    END IF;
    p := signals.month_partition(tbl, lo);
    WHILE p.lo <= hi LOOP
        IF to_regclass(format('%I.%I', nsp, p.name)) IS NULL AND NOT locked THEN
            EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', tbl);
            locked := true;
        END IF;
        IF to_regclass(format('%I.%I', nsp, p.name)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           nsp, p.name, tbl, p.lo, p.hi);
            created := created + 1;
        END IF;
        p := signals.month_partition(tbl, p.hi);
    END LOOP;
    RETURN created;
END $$;

-- Whether the month partition `part` of `tbl` can be loaded standalone: it does not exist, no
-- default partition could already hold its rows, and every trigger that fires on an INSERT into
-- `tbl` is an enabled AFTER INSERT statement trigger whose function is one of `reproducible` (the
-- loader reproduces those; any other, a capture trigger say, keeps the regular path).
CREATE FUNCTION signals.partition_loadable(tbl regclass, part text, reproducible text[]) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT to_regclass(format('%I.%I', signals.schema_of(tbl), part)) IS NULL
       AND NOT EXISTS (SELECT FROM pg_partitioned_table WHERE partrelid = tbl AND partdefid <> 0)
       AND NOT EXISTS (
           SELECT FROM pg_trigger t
            WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgtype & 4 <> 0  -- fires on INSERT
              AND NOT (t.tgtype = 4 AND t.tgenabled IN ('O', 'A')                -- AFTER, per statement
                       AND t.tgfoid IN (SELECT to_regproc(r) FROM unnest(reproducible) AS r)))
$$;

-- The partition constraint of `tbl`'s range [lo, hi) as a CHECK expression (key NOT NULL included).
CREATE FUNCTION signals.partition_bound(tbl regclass, lo timestamptz, hi timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('%1$I IS NOT NULL AND %1$I >= %2$L::timestamptz AND %1$I < %3$L::timestamptz', a.attname, lo, hi)
      FROM pg_partitioned_table pt JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
     WHERE pt.partrelid = tbl
$$;

-- For a load of rows whose partition key lies in [lo, hi]: when that is one month and
-- partition_loadable, creates the month as a standalone table like `tbl` (defaults and CHECK
-- constraints, and a CHECK of the bound so that ATTACH need not scan it) and returns its name with
-- the reproducible trigger functions present (as given in `reproducible`), which the loader must
-- reproduce after finish_partition_load. Otherwise makes the partitions (ensure_partitions) and
-- returns no name. The decision and the creation happen under the parent's SHARE UPDATE EXCLUSIVE
-- lock, held to the end of the transaction (ATTACH takes it anyway; readers and writers of other
-- partitions go on): a second loader of the month waits, then finds the partition and goes the
-- regular way.
CREATE FUNCTION signals.begin_partition_load(tbl regclass, lo timestamptz, hi timestamptz, reproducible text[],
                                             OUT partition text, OUT reproduce text[])
LANGUAGE plpgsql AS $$
DECLARE
    p record := signals.month_partition(tbl, lo);
BEGIN
    IF hi < p.hi AND signals.partition_loadable(tbl, p.name, reproducible) THEN
        EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', tbl);
        IF signals.partition_loadable(tbl, p.name, reproducible) THEN
            EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS, '
                           'CONSTRAINT syncd_partition_bound CHECK (%s))',
                           signals.schema_of(tbl), p.name, tbl, signals.partition_bound(tbl, p.lo, p.hi));
            partition := p.name;
            reproduce := ARRAY(SELECT r FROM unnest(reproducible) AS r
                                WHERE EXISTS (SELECT FROM pg_trigger t
                                               WHERE t.tgrelid = tbl AND t.tgfoid = to_regproc(r)));
            RETURN;
        END IF;
    END IF;
    PERFORM signals.ensure_partitions(tbl, lo, hi);
END $$;

-- Attaches the month partition of `tbl` holding `at`, made by begin_partition_load and loaded and
-- indexed since: ATTACH adopts its indexes and, its CHECK implying the bound, scans nothing; the CHECK
-- then goes (the partition's own constraint says the same).
CREATE FUNCTION signals.finish_partition_load(tbl regclass, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p    record := signals.month_partition(tbl, at);
    part text := format('%I.%I', signals.schema_of(tbl), p.name);
BEGIN
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', tbl, part, p.lo, p.hi);
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT syncd_partition_bound', part);
END $$;
