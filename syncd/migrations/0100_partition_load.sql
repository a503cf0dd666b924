-- Months made as tables and attached: a new month's batch loaded before its indexes exist, and
-- partitions created without an ACCESS EXCLUSIVE lock on the parent.
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
--
-- signals.ensure_partitions now makes a missing month the same way (an empty table, attached):
-- CREATE TABLE … PARTITION OF takes ACCESS EXCLUSIVE on the parent, ATTACH only SHARE UPDATE
-- EXCLUSIVE. The batch's own statement already holds ACCESS SHARE on the parent (its key probe), so
-- two writers reaching a new month at once each waited for the other's ACCESS SHARE: a deadlock. Now
-- creators queue at SHARE UPDATE EXCLUSIVE (which readers and writers do not conflict with), the
-- first creates, the others find the month. ATTACH leaves the same catalog as PARTITION OF (columns
-- and constraints marked inherited, the parent's indexes, each with a child). The month's name and
-- bounds come from one place, signals.month_partition.

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

-- Creates the month `name` [lo, hi) of `tbl` as a table like it, not attached: defaults, CHECK
-- constraints, and a CHECK of the bound (key NOT NULL included) so that ATTACH need not scan it.
CREATE FUNCTION signals.create_month_table(tbl regclass, name text, lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    key name := (SELECT a.attname FROM pg_partitioned_table pt
                   JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
                  WHERE pt.partrelid = tbl);
BEGIN
    EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS, '
                   'CONSTRAINT syncd_partition_bound CHECK (%4$I IS NOT NULL AND %4$I >= %5$L::timestamptz '
                   'AND %4$I < %6$L::timestamptz))', signals.schema_of(tbl), name, tbl, key, lo, hi);
END $$;

-- Attaches the month table `name` [lo, hi) made by create_month_table: ATTACH adopts the indexes it
-- has, builds those it lacks and, the CHECK implying the bound, scans nothing; the CHECK then goes
-- (the partition's own constraint says the same).
CREATE FUNCTION signals.attach_month_table(tbl regclass, name text, lo timestamptz, hi timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%I.%I', signals.schema_of(tbl), name);
BEGIN
    EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', tbl, part, lo, hi);
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT syncd_partition_bound', part);
END $$;

-- Creates the monthly partitions of `tbl` covering [lo, hi]; idempotent; 0 for a table that is not
-- natively partitioned (0051: the sink calls it against a hypertable too). Missing months are made
-- under the parent's SHARE UPDATE EXCLUSIVE lock, which also makes the checks after it see months
-- other sessions committed meanwhile.
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
            PERFORM signals.create_month_table(tbl, p.name, p.lo, p.hi);
            PERFORM signals.attach_month_table(tbl, p.name, p.lo, p.hi);
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

-- For a load of rows whose partition key lies in [lo, hi]: when that is one month and
-- partition_loadable, creates the month as a table (create_month_table) and returns its name with
-- the reproducible INSERT trigger functions present (spelled as in `reproducible`), whose work the
-- loader must redo after finish_partition_load. Otherwise makes the partitions (ensure_partitions)
-- and returns no name. The decision and the creation happen under the parent's SHARE UPDATE
-- EXCLUSIVE lock, held to the end of the transaction (ATTACH takes it anyway; readers and writers of
-- other partitions go on): a second loader of the month waits, then finds it and goes the regular way.
CREATE FUNCTION signals.begin_partition_load(tbl regclass, lo timestamptz, hi timestamptz, reproducible text[],
                                             OUT partition text, OUT reproduce text[])
LANGUAGE plpgsql AS $$
DECLARE
    p record := signals.month_partition(tbl, lo);
BEGIN
    IF hi < p.hi AND signals.partition_loadable(tbl, p.name, reproducible) THEN
        EXECUTE format('LOCK TABLE %s IN SHARE UPDATE EXCLUSIVE MODE', tbl);
        IF signals.partition_loadable(tbl, p.name, reproducible) THEN
            PERFORM signals.create_month_table(tbl, p.name, p.lo, p.hi);
            partition := p.name;
            reproduce := ARRAY(SELECT r FROM unnest(reproducible) AS r
                                WHERE EXISTS (SELECT FROM pg_trigger t
                                               WHERE t.tgrelid = tbl AND t.tgtype & 4 <> 0
                                                 AND t.tgfoid = to_regproc(r)));
            RETURN;
        END IF;
    END IF;
    PERFORM signals.ensure_partitions(tbl, lo, hi);
END $$;

-- Attaches the month of `tbl` holding `at` that begin_partition_load made, loaded and indexed since.
CREATE FUNCTION signals.finish_partition_load(tbl regclass, at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p record := signals.month_partition(tbl, at);
BEGIN
    PERFORM signals.attach_month_table(tbl, p.name, p.lo, p.hi);
END $$;
